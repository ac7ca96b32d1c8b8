"""Benchmarks: scripts that measure kfbatch against named baselines (not tests).

Run them from the repository root as modules, e.g. ``python -m benchmarks.runner_overhead``.
"""
