"""The data capability: reading sources, row transforms, the feature spec, quality checks
and labels, used by the etl, datagen and batch_map steps."""
