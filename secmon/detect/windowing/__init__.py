"""Matching hits -> findings: bursts and Sigma correlation windows, the same for the cluster and in-process."""
