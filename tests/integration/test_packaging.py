"""The wheel is self-contained: installed elsewhere, it composes the packaged config tree."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support.deps import declared_distributions, undeclared_imports

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


def test_every_imported_package_is_declared() -> None:
    declared = declared_distributions(REPO / "pyproject.toml")
    assert undeclared_imports([REPO / "components", REPO / "pipelines"], declared) == {}


def test_the_dependency_check_names_an_undeclared_import(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("import os\nimport numpy as np\nfrom pkg import b\n")
    (package / "b.py").write_text("import yaml\nfrom nosuchdist.sub import thing\n")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "pkg"\ndependencies = ["numpy>=1"]\n'
        '[project.optional-dependencies]\ntest = ["PyYAML"]\n'
    )
    declared = declared_distributions(pyproject)
    assert declared == {"numpy"}  # test-only requirements do not count
    assert undeclared_imports([package], declared) == {
        "yaml": [str(package / "b.py")],
        "nosuchdist": [str(package / "b.py")],
    }
