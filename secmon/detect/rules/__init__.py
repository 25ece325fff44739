"""Sigma rules: load with pySigma, compile to Elasticsearch Query DSL, correlate."""
