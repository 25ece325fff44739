"""The `secmon` command: the one place that prints, reads flags and turns errors into exit codes."""
