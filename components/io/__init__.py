"""Shared I/O of every step: atomic files and manifests, Parquet sinks and readers, digests,
and moving numbers between Arrow and NumPy without pandas."""
