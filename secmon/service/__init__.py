"""One module per flow, wiring the stages: collect, follow, scan, deliver, offline; common holds what they share.

The CLI and the scheduler call these; nothing here prints or exits.
"""
