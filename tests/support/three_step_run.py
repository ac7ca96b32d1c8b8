"""``python -m tests.support.three_step_run RUNS_DIR RUN_ID SLEEP``: a run to kill and resume.

Steps a -> b -> c, where b sleeps SLEEP seconds; prints the run's final status.
"""

from __future__ import annotations

import sys

from pipelines.config.schema import RuntimeConfig
from pipelines.dag import Dag, Ref, Resources, Step
from pipelines.local.runner import run_dag


def main(runs_dir: str, run_id: str, sleep_s: float) -> str:
    """Run the three steps and return the run's status."""
    res = Resources(cpu=0.5, memory="256Mi")
    steps = "tests.support.steps"
    dag = Dag(
        "killed",
        (
            Step("a", f"{steps}:write", {"text": "A"}, {}, ("out",), res),
            Step(
                "b", f"{steps}:sleep", {"seconds": sleep_s}, {"x": Ref("a", "out")}, ("out",), res
            ),
            Step("c", f"{steps}:write", {"text": "C"}, {"x": Ref("b", "out")}, ("out",), res),
        ),
    )
    runtime = RuntimeConfig(runs_dir=runs_dir, cache_dir=f"{runs_dir}/.cache")
    return run_dag(dag, runtime, run_id=run_id).status


if __name__ == "__main__":
    sys.stdout.write(main(sys.argv[1], sys.argv[2], float(sys.argv[3])) + "\n")
