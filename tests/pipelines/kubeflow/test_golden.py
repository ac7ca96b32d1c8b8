"""Golden compile tests: each example config compiles to the YAML in ``tests/golden/``.

A change in the compiled pipeline (new params in the DAG, a changed declaration, a kfp
upgrade) shows up here as a diff. When the change is intended, regenerate the files and
review them in the commit::

    KFBATCH_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/pipelines/kubeflow/test_golden.py
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest

from pipelines.config.compose import compose_config
from pipelines.kubeflow.compiler import write_pipeline

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
UPDATE = os.environ.get("KFBATCH_UPDATE_GOLDEN") == "1"

#: golden file name -> overrides
EXAMPLES = {
    "demo": [],
    "breast_cancer": ["experiment=breast_cancer"],
    "gpu": ["resources=gpu"],
}

#: Fields that legitimately vary between environments. The pinned kfp writes its version;
#: masking it keeps a patch upgrade from failing every golden file (a kfp upgrade that
#: changes the IR still shows up as a diff).
MASKS = [(re.compile(r"^sdkVersion: kfp-.*$", re.MULTILINE), "sdkVersion: kfp-<masked>")]


def _masked(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_compiled_example_matches_golden(name: str, tmp_path: Path) -> None:
    compiled = write_pipeline(compose_config(EXAMPLES[name]), tmp_path / f"{name}.yaml")
    golden = GOLDEN / f"{name}.yaml"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(compiled.read_text())
    assert golden.is_file(), f"{golden} is missing: run with KFBATCH_UPDATE_GOLDEN=1 to create it"
    expected, actual = _masked(golden.read_text()), _masked(compiled.read_text())
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                str(golden),
                "compiled",
                n=2,
            )
        )
        pytest.fail(
            f"compiled {name} differs from {golden} (if intended, regenerate with "
            f"KFBATCH_UPDATE_GOLDEN=1 and review the diff):\n{diff[:6000]}"
        )
