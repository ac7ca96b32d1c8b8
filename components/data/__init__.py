"""The data capability, used by the etl, datagen, batch_map, train, evaluate and infer steps.

What lives where, in the order rows flow:

- ``sources``: the ``source`` options (:class:`~components.data.sources.SourceOptions`),
  filesystems and URIs, and the files a path, directory or glob names.
- ``readers``: CSV, JSON Lines and Parquet files streamed as typed record batches.
- ``casting``: text cast to the declared or inferred column types, row by row on failure.
- ``rejects``: rows that could not be read (or hold a required null), counted and
  quarantined as Parquet.
- ``prepare``: the declared row-level transforms (renames, derived columns, fills, clips,
  user transforms).
- ``quality``: data-quality checks and column profiles, and their report.
- ``sketches``: mergeable summaries with stated error (moments, KLL quantiles and
  histograms, heavy hitters) behind the profiles.
- ``split``: keyed row hashes: each row's split and scoring shard, stratification by
  target class, repeated ids.
- ``writers``: the etl outputs' split and shard Parquet writers, and their digests.
- ``features``: the feature spec (column roles, fitting it batch by batch, its JSON form);
  ``encode``: the transform from rows to the float32 feature matrix.
- ``labels``: the training target's task and classes.
"""
