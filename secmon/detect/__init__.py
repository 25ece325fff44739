"""Detection: events in, findings out. No I/O here; `secmon.service` runs the queries."""
