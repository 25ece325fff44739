"""The compiled queries run in-process, as Elasticsearch would: matcher, prefilter, router, examples."""
