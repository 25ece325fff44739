"""secmon: security monitoring log analyser.

Data flows one way: collect -> normalize -> store -> detect -> incidents -> alert;
the CLI and the scheduler sit at the edge and only call `secmon.service`.
"""

__version__ = "0.1.0"
