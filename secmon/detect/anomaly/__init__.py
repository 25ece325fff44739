"""Anomaly detectors: entity behaviour over time windows, scored by IsolationForest models, explained."""
