"""Findings become incidents: deduplicated by deterministic id, persisted in Elasticsearch."""
