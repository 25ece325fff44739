"""The monthly report: a month's numbers (facts) -> charts and an HTML document in vi or en -> PDF. Pure.

The service (`secmon/service/report.py`) reads the indices with the queries of
`queries.py`; everything here turns what it read into a document.
"""
