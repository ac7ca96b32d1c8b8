"""The wheel is self-contained: installed elsewhere, it composes the packaged config tree."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_ships_the_config_tree(tmp_path: Path) -> None:
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
            str(REPO),
        ],
        check=True,
    )
    wheel = next(wheels.glob("kfbatch-*.whl"))
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    in_repo = {
        "pipelines/conf/" + str(p.relative_to(REPO / "configs"))
        for p in (REPO / "configs").rglob("*.yaml")
    }
    assert shipped == in_repo
    code = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    code_in_repo = {
        str(p.relative_to(REPO))
        for package in ("components", "pipelines")
        for p in (REPO / package).rglob("*.py")
    }
    assert code_in_repo <= code

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # Dependencies come from this test's environment (already installed); kfbatch itself only
    # from the wheel: a .pth adds the dependency directory, whose own .pth files (including an
    # editable kfbatch) Python does not process.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "--quiet",
            str(wheel),
        ],
        check=True,
    )

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    kfbatch = str(venv / "bin" / "kfbatch")
    dag = subprocess.run(
        [kfbatch, "dag", "experiment=breast_cancer"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert dag.stdout.startswith("breast-cancer  (6 steps")
    assert "infer x2  [components.infer:run]" in dag.stdout
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import pipelines.conf as c, components as p; print(c.__file__, p.__file__)",
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(REPO) not in where.stdout
    assert str(site) in where.stdout
