"""A security scan of every built overlay with checkov, a well-kept Kubernetes scanner.

checkov pins dozens of its own dependencies, so it lives in its own virtual environment,
``.venv-checkov`` (``make checkov`` creates it the same way), installed from the package
index on first use; ``KFBATCH_CHECKOV`` may name a checkov executable instead. What is
skipped, and why, is in ``tests/pipelines/manifests/checkov.yaml``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.config.compose import compose_config
from pipelines.manifests import render_tree

REPO = Path(__file__).resolve().parents[3]
CONFIG = Path(__file__).with_name("checkov.yaml")
VENV = REPO / ".venv-checkov"
KUBECTL = shutil.which("kubectl")


def _checkov() -> str:
    """The checkov executable, installing it into ``.venv-checkov`` when missing."""
    if given := os.environ.get("KFBATCH_CHECKOV"):
        return given
    executable = VENV / "bin" / "checkov"
    if not executable.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        install = subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "--quiet", "checkov>=3.2,<4"],
            capture_output=True,
            text=True,
            check=False,
        )
        if install.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            pytest.skip(f"checkov could not be installed: {install.stderr.strip()[-300:]}")
    return str(executable)


@pytest.mark.slow
@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_checkov_passes_on_every_overlay(tmp_path: Path) -> None:
    tree = render_tree(compose_config([]))
    for rel, text in tree.items():
        (tmp_path / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / rel).write_text(text)
    built = tmp_path / "built"
    built.mkdir()
    for overlay in sorted((tmp_path / "tree" / "overlays").iterdir()):
        out = subprocess.run(
            [KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, check=True
        )
        (built / f"{overlay.name}.yaml").write_text(out.stdout)
    scan = subprocess.run(
        [_checkov(), "--config-file", str(CONFIG), "-d", str(built), "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert scan.stdout.strip(), scan.stderr[-2000:]
    report = json.loads(scan.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']}"
        for r in reports
        for c in r["results"]["failed_checks"]
    ]
    passed = sum(len(r["results"]["passed_checks"]) for r in reports)
    skipped = {c["check_id"] for r in reports for c in r["results"]["skipped_checks"]}
    assert failed == []
    assert scan.returncode == 0
    assert passed > 200  # it did scan: every pod of the three overlays
    # Nothing is skipped per resource (a `checkov.io/skip` annotation); for every resource
    # only what checkov.yaml lists, with its reason written next to it.
    assert skipped == set()
    assert yaml.safe_load(CONFIG.read_text())["skip-check"] == ["CKV_K8S_43"]
