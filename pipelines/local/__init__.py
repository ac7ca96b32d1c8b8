"""The embedded local runner: warm worker pool, step cache, scheduling, progress."""
