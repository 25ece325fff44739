"""Elasticsearch: client, index layout and templates, bulk writer, windowed search."""
