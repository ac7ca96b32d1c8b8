"""Training on a CUDA GPU: bf16/fp16 mixed precision, resume, and nccl ranks (skipped on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components import train
from components.model_artifact import load_model
from components.training.checkpoint import CheckpointStore
from tests.support.params import train_params

from .helpers import Pipeline

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _inputs(pipeline: Pipeline) -> dict[str, str]:
    return {"dataset": str(pipeline.dataset), "feature_spec": str(pipeline.feature_spec)}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_learns_on_gpu(pipeline: Pipeline, tmp_path: Path, precision: str) -> None:
    params = train_params(epochs=3, device="cuda", precision=precision)
    metrics = train.run(_inputs(pipeline), params, {"model": str(tmp_path / "m")})
    assert metrics["val_roc_auc"] > 0.7
    model, _, meta = load_model(str(tmp_path / "m"))  # weights come back as fp32 on CPU
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert meta["trainer"]["precision"] == precision


def test_gpu_checkpoint_holds_cuda_rng_and_scaler_and_resumes(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CheckpointStore, "clear", lambda self: None)  # keep them to inspect
    params = train_params(epochs=2, device="cuda", precision="fp16")
    params["trainer"]["checkpoint"] = {"dir": str(tmp_path / "ck"), "every_n_steps": 5}
    first = train.run(_inputs(pipeline), params, {"model": str(tmp_path / "a")})
    (run_dir,) = (tmp_path / "ck").iterdir()
    state = CheckpointStore(str(run_dir)).load_latest()
    assert state["rng"][0]["cuda"].dtype == torch.uint8
    assert state["scaler"]["scale"] > 0
    assert state["resume"]["epoch"] == 2
    again = train.run(
        _inputs(pipeline), params, {"model": str(tmp_path / "b")}
    )  # resumes at the end
    assert (tmp_path / "b" / "model.pt").read_bytes() == (tmp_path / "a" / "model.pt").read_bytes()
    assert again["val_loss"] == first["val_loss"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl ranks need 2 GPUs")
def test_two_nccl_ranks_match_one(pipeline: Pipeline, tmp_path: Path) -> None:
    params = train_params(epochs=1, device="cuda")
    params["model"]["dropout"] = 0.0
    one = train.run(_inputs(pipeline), params, {"model": str(tmp_path / "one")})
    two_params = train_params(epochs=1, device="cuda", procs_per_node=2)
    two_params["model"] = params["model"]
    two = train.run(_inputs(pipeline), two_params, {"model": str(tmp_path / "two")})
    assert two["world_size"] == 2
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-3)
