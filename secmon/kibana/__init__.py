"""Kibana for auditors: saved objects built from a readable source, roles per agency, and the import API."""
