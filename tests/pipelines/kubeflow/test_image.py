"""The image's view of a compiled pipeline: tasks run from the installed wheel, not the repo.

No container runtime is available in CI, so this installs the built wheel into a fresh
virtual environment outside the repository (dependencies come from this environment through
a ``.pth`` file, as in ``tests/test_packaging.py``: the image installs the same wheel with
its dependencies) and runs every task's command line from the compiled YAML with that
environment's Python (see ``image_driver.py``). The commands are the lightweight-component
form the image executes: ``sh -ec`` writes the declaration's source to a file and runs
``python3 -m kfp.dsl.executor_main``, which imports ``pipelines.kubeflow.launch`` and the
component from the installed kfbatch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pyarrow.dataset as ds
import pytest

REPO = Path(__file__).resolve().parents[3]
DRIVER = Path(__file__).with_name("image_driver.py")

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _build_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the sources, so concurrent builds never share build/."""
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
    )
    return next(wheels.glob("kfbatch-*.whl"))


def _venv_with(wheel: Path, venv: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Only this environment's own site dir processes .pth files, so an editable kfbatch in
    # the dependency directory stays invisible: kfbatch comes from the wheel alone.
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--quiet",
            str(wheel),
        ],
        check=True,
    )
    return python


def test_compiled_tasks_run_from_the_installed_wheel(tmp_path: Path) -> None:
    python = _venv_with(_build_wheel(tmp_path), tmp_path / "venv")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    run = subprocess.run(
        [str(python), str(DRIVER), "experiment=breast_cancer", "trainer.epochs=2"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    site = str(tmp_path / "venv")
    assert result["launcher"].startswith(site), result["launcher"]
    assert str(REPO) not in result["launcher"]
    # Every task ran: the last one published one prediction per row of the dataset.
    predictions = ds.dataset(result["outputs"]["publish_predictions"], format="parquet")
    assert predictions.count_rows() == 569
    metrics = Path(result["outputs"]["evaluate_metrics"]) / "metrics.json"
    assert json.loads(metrics.read_text())["rows"] > 0
