"""The CLI surface: help, version, lazy imports, config printing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main

HEAVY = ("torch", "pyarrow", "pandas", "hydra", "omegaconf", "kfp", "sklearn", "rich")


def test_help_and_version_import_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "from pipelines.cli import main\n"
        "for argv in (['--help'], ['run', '--help'], ['--version']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert "usage: kfbatch" in result.stdout
    assert "kfbatch 0.1.0" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["run", "config", "dag"])
def test_every_command_documents_overrides_and_config_dir(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "OVERRIDE" in text
    assert "--config-dir" in text
    assert "--debug" in text


def test_no_command_prints_help_and_exits_2(kfbatch) -> None:
    result = kfbatch()
    assert result.code == 2
    assert "commands:" in result.out


def test_config_prints_composed_yaml(kfbatch) -> None:
    plain = kfbatch("config", "trainer.epochs=3")
    assert plain.code == 0
    assert "epochs: 3" in plain.out
    assert "cache_dir: ${runtime.runs_dir}/.cache" in plain.out
    resolved = kfbatch("config", "--resolve", "runtime.runs_dir=/r")
    assert "cache_dir: /r/.cache" in resolved.out


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "kfbatch"
    result = subprocess.run(
        [str(script), "dag", "stages=[etl]"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("churn-demo  (2 steps, 2 nodes")


def test_json_logs_carry_run_step_and_attempt(kfbatch, tmp_path: Path) -> None:
    result = kfbatch(
        "run",
        "--log-format",
        "json",
        "stages=[etl]",
        "data=breast_cancer",
        f"runtime.runs_dir={tmp_path}",
        "--run-id",
        "j1",
    )
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in result.err.splitlines()]
    started = [x for x in lines if x["message"] == "step etl: running attempt 1"]
    assert started and started[0]["run_id"] == "j1" and started[0]["attempt"] == 1
    step_log = (tmp_path / "j1" / "steps" / "etl" / "attempt-1.log").read_text().splitlines()
    records = [json.loads(line) for line in step_log]
    assert {(r["run_id"], r["step"], r["attempt"]) for r in records} == {("j1", "etl", 1)}
    assert any(r["logger"] == "components.etl" for r in records)


def test_output_cut_short_by_a_pipe_is_not_an_error() -> None:
    """``kfbatch dag | head -1``: the reader closes the pipe before kfbatch writes."""
    script = Path(sys.executable).parent / "kfbatch"
    process = subprocess.Popen(
        [str(script), "dag"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 0
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
