"""Checkpoints, resume after SIGKILL, and DDP on CPU with data streamed from Parquet shards."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from components import train
from components.model_artifact import load_model
from components.training.checkpoint import CheckpointStore
from tests.support.params import override, train_params

from .helpers import Pipeline


@pytest.fixture(scope="module")
def sharded(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline's dataset with its train split rewritten as 4 parts of 256-row groups."""
    root = tmp_path_factory.mktemp("sharded") / "dataset"
    shutil.copytree(pipeline.dataset, root)
    table = pq.read_table(root / "train")
    for part in (root / "train").glob("part-*.parquet"):
        part.unlink()
    quarter = (table.num_rows + 3) // 4
    for i in range(4):
        piece = table.slice(i * quarter, quarter)
        pq.write_table(piece, root / "train" / f"part-{i:05d}.parquet", row_group_size=256)
    return root


def _inputs(pipeline: Pipeline, dataset: Path | None = None) -> dict[str, str]:
    return {"dataset": str(dataset or pipeline.dataset), "feature_spec": str(pipeline.feature_spec)}


def test_store_skips_a_corrupt_newest_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(str(tmp_path), keep=3)
    for step in (1, 2, 3, 4):
        store.save(step, {"step": step, "w": torch.full((3,), float(step))})
    assert store.steps() == [4, 3, 2]  # keep=3 pruned step 1
    newest = tmp_path / "step-0000000004.pt"
    newest.write_bytes(newest.read_bytes()[:50])  # truncated by a crash mid-copy
    with caplog.at_level(logging.WARNING):
        state = store.load_latest()
    assert state["step"] == 3 and torch.equal(state["w"], torch.full((3,), 3.0))
    assert "skipping checkpoint" in caplog.text and "truncated or corrupt" in caplog.text
    (tmp_path / "step-0000000003.json").unlink()  # a rename that never happened
    assert store.load_latest()["step"] == 2


def _fault_params(checkpoint_dir: Path) -> dict:
    return train_params(
        override("trainer.checkpoint.dir", str(checkpoint_dir)),
        "trainer.checkpoint.every_n_steps=20",
        "trainer.checkpoint.keep=3",
        epochs=6,
        batch_size=16,
        shuffle_buffer_rows=700,
    )


@pytest.mark.fault
@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_gives_bitwise_identical_weights(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    inputs = _inputs(pipeline)
    reference = train.run(
        inputs, _fault_params(tmp_path / "ck-ref"), {"model": str(tmp_path / "ref")}
    )
    assert not list((tmp_path / "ck-ref").rglob("step-*"))  # cleared once the model exists

    params = _fault_params(tmp_path / "ck")
    command = [
        sys.executable,
        "-m",
        "components.train",
        "--inputs",
        json.dumps(inputs),
        "--params",
        json.dumps(params),
        "--outputs",
        json.dumps({"model": str(tmp_path / "killed")}),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "ck").rglob("step-*.json"))) < 3:  # an epoch and more
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert not (tmp_path / "killed" / "model.json").exists()
    checkpoints = sorted((tmp_path / "ck").rglob("step-*.pt"))
    assert checkpoints
    newest = checkpoints[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # corrupt the newest

    resumed = train.run(inputs, params, {"model": str(tmp_path / "resumed")})
    assert (tmp_path / "resumed" / "model.pt").read_bytes() == (
        tmp_path / "ref" / "model.pt"
    ).read_bytes()
    assert resumed["val_loss"] == reference["val_loss"]
    ref_meta = json.loads((tmp_path / "ref" / "model.json").read_text())
    meta = json.loads((tmp_path / "resumed" / "model.json").read_text())
    assert meta["version"] == ref_meta["version"] and meta["history"] == ref_meta["history"]


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
def test_two_ranks_match_one_rank_with_the_same_global_batch(
    pipeline: Pipeline, sharded: Path, tmp_path: Path, accumulate: int
) -> None:
    assert len(list((sharded / "train").glob("part-*.parquet"))) == 4
    trainer = {
        "epochs": 1,
        "batch_size": 64,
        "shuffle_buffer_rows": 600,
        "accumulate": accumulate,
        "grad_clip": 1.0,
    }
    no_dropout = "model.dropout=0.0"  # dropout draws differ per rank by design
    inputs = _inputs(pipeline, sharded)
    one = train.run(inputs, train_params(no_dropout, **trainer), {"model": str(tmp_path / "one")})
    two = train.run(
        inputs,
        train_params(no_dropout, **trainer, procs_per_node=2),
        {"model": str(tmp_path / "two")},
    )
    assert one["world_size"] == 1 and two["world_size"] == 2
    model_one, _, _ = load_model(str(tmp_path / "one"))
    model_two, _, _ = load_model(str(tmp_path / "two"))
    for (name, a), (_, b) in zip(
        model_one.state_dict().items(), model_two.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)


def test_rank_errors_surface_with_their_class(pipeline: Pipeline, tmp_path: Path) -> None:
    params = train_params(procs_per_node=2)
    params["model"] = {"_target_": "components.models.MLP", "hiden": [4]}
    with pytest.raises(train.ParamError, match=r"unknown argument 'hiden'"):
        train.run(_inputs(pipeline), params, {"model": str(tmp_path / "m")})


@pytest.mark.slow
def test_fsdp_two_ranks_match_one_rank(pipeline: Pipeline, sharded: Path, tmp_path: Path) -> None:
    trainer = {"epochs": 1, "batch_size": 64, "grad_clip": 1.0}
    inputs = _inputs(pipeline, sharded)
    one = train.run(
        inputs, train_params("model.dropout=0.0", **trainer), {"model": str(tmp_path / "one")}
    )
    sharded_params = train_params(
        "model.dropout=0.0",
        override("trainer.checkpoint.dir", str(tmp_path / "ck")),
        "trainer.checkpoint.every_n_steps=5",
        **trainer,
        procs_per_node=2,
        strategy="fsdp",
    )
    two = train.run(inputs, sharded_params, {"model": str(tmp_path / "two")})
    assert two["world_size"] == 2 and two["checkpoint_seconds"] > 0
    model_one, _, _ = load_model(str(tmp_path / "one"))
    model_two, _, _ = load_model(str(tmp_path / "two"))
    for (name, a), (_, b) in zip(
        model_one.state_dict().items(), model_two.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.fault
@pytest.mark.slow
def test_sigkill_of_the_step_kills_its_ranks(pipeline: Pipeline, tmp_path: Path) -> None:
    params = train_params(
        override("trainer.checkpoint.dir", str(tmp_path / "ck")),
        "trainer.checkpoint.every_n_steps=5",
        epochs=200,
        batch_size=16,
        procs_per_node=2,
    )
    command = [
        sys.executable,
        "-m",
        "components.train",
        "--inputs",
        json.dumps(_inputs(pipeline)),
        "--params",
        json.dumps(params),
        "--outputs",
        json.dumps({"model": str(tmp_path / "m")}),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    ranks: list[int] = []
    while len(ranks) < 2:  # spawn also starts a resource tracker; ranks run _spawned_rank
        assert time.monotonic() < deadline and process.poll() is None
        ranks = [
            c
            for c in _children(process.pid)
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()
        ]
        time.sleep(0.1)
    while not list((tmp_path / "ck").rglob("step-*.json")):  # the ranks are training now
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)  # the step only, not its process group
    process.wait()
    deadline = time.monotonic() + 15
    while any(_alive(r) for r in ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [r for r in ranks if _alive(r)]
