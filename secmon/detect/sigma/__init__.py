"""Sigma rules to Query DSL: load with pySigma, map logsources and fields, compile (regexps, CIDRs)."""
