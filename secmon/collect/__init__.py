"""Sources of raw records: files (whole, or followed by glob through rotation), stdin, EVTX files,
the syslog listener; checkpoints (registry.py) and multi-line joining. No Elasticsearch here."""
