"""Sources of raw records: files (and, later, syslog, EVTX, stdin)."""
