"""The run report: one self-contained HTML page per local run, read from its run folder.

It depends on nothing but the run folder's files (manifest, config, DAG, step outputs), so it
can be written after a run ends, or again later for an old run.
"""

from pipelines.report.writer import write_report

__all__ = ["write_report"]
