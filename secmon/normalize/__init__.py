"""Turn raw records into ECS documents by the declarative pipelines in `pipelines/`."""
