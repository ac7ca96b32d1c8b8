"""Train a model on the etl train split: distributed, checkpointed, resumable, deterministic.

The step's world size is ``trainer.nodes x trainer.procs_per_node``. Started by the local
runner (or a KFP pod) with no rendezvous in the environment, :func:`run` starts the ranks on
this machine itself (``torch.multiprocessing`` spawn, a free port, gloo on CPU, nccl on GPU);
started by ``torchrun`` (or a Kubeflow TrainJob) it *is* one rank and reads ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` from the environment::

    torchrun --nnodes=2 --nproc-per-node=4 -m components.train \\
        --inputs '{"dataset": "/data/dataset", "feature_spec": "/data/spec"}' \\
        --params "$(cat train-params.json)" --outputs '{"model": "/out/model"}'

This module is the step's glue; the capability lives in :mod:`components.training`: the
loop (:mod:`~components.training.trainer`), ranks and collectives
(:mod:`~components.training.distributed`), optimizer, schedule and loss
(:mod:`~components.training.optim`), the rows and folds (:mod:`~components.training.data`),
the Parquet stream and the checkpoints. A re-run of the same step (same params and data)
finds its checkpoints under a key derived from both and resumes, ending with bitwise the
same weights as a run that was never interrupted (on CPU).

A ``variant`` param turns the step into one branch of a fan-out: ``fold`` trains on the
other folds of the train split and validates on this one (cross-validation); ``overrides``
set dotted ``model.*`` / ``trainer.*`` keys (a tuning trial).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import sys
import time
from typing import Any

from components.data.features import FeatureSpec, load_feature_spec
from components.data.labels import fit_target
from components.errors import DataError, KfbatchError, ParamError
from components.io.files import read_json, read_manifest, split_parts, write_json
from components.names import BEST_FILE, CHECKPOINT_DIR_ENV, SPLIT_TRAIN
from components.params import TrainerParams, TrainParams
from components.training.checkpoint import CheckpointStore
from components.training.data import training_data
from components.training.distributed import World, barrier, spawn
from components.training.optim import deterministic
from components.training.trainer import Trainer

__all__ = ["apply_overrides", "run"]

log = logging.getLogger("components.train")  # also when run as __main__


# ---------------------------------------------------------------------- the step


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Train on ``dataset`` with the etl ``feature_spec``; write the model artifact.

    Args:
        inputs: ``dataset`` and ``feature_spec`` directories from etl; optionally ``best``,
            a tuning select output whose chosen overrides are applied first.
        params: ``model`` (a ``_target_`` config), ``trainer`` (see :class:`TrainerParams`),
            ``target``, ``task`` (binary, multiclass or regression), optionally ``variant``
            (``fold`` and/or ``trial`` + ``overrides``) and ``cv`` (fold settings).
        outputs: ``model``: directory to create.

    Returns:
        The final validation metrics, ``epochs``, ``samples_per_s``, ``seconds`` and
        ``checkpoint_seconds`` (rank 0's; other ranks under torchrun return ``{}``).
    """
    params, tuned = _resolve(inputs, params)
    world_size = TrainParams.parse(params).trainer.world_size
    if "WORLD_SIZE" in os.environ:  # started by torchrun / a TrainJob: this process is a rank
        return _rank(World.from_env(), inputs, params, outputs, tuned, result_path=None)
    if world_size == 1:
        return _rank(World(), inputs, params, outputs, tuned, result_path=None)
    return spawn(_rank, (inputs, params, outputs, tuned), world_size)


def _resolve(
    inputs: dict[str, Any], params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Params with the variant's (and a tuning select's) overrides applied, and the tuning
    select's pick (None without one)."""
    params, tuned = copy.deepcopy(params), None
    if inputs.get("best"):
        best = read_json(os.path.join(str(inputs["best"]), BEST_FILE), what="tune_select")
        params = apply_overrides(params, best["overrides"])
        tuned = {"trial": best["trial"], "overrides": best["overrides"]}
    variant = TrainParams.parse(params).variant or {}
    if variant.get("overrides"):
        params = apply_overrides(params, variant["overrides"])
    return params, tuned


def apply_overrides(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted ``model.*`` / ``trainer.*`` keys (from a tuning space) in step params.

    Raises:
        ParamError: a key outside ``model.`` and ``trainer.``.
    """
    params = copy.deepcopy(params)
    for key, value in overrides.items():
        group, _, rest = key.partition(".")
        if group not in ("model", "trainer") or not rest:
            raise ParamError(
                f"tuning key {key!r} cannot be applied; tune model.* or trainer.* keys"
            )
        node = params.setdefault(group, {})
        *parents, leaf = rest.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return params


def _rank(
    world: World,
    inputs: dict[str, Any],
    params: dict[str, Any],
    outputs: dict[str, str],
    tuned: dict[str, Any] | None,
    *,
    result_path: str | None,
) -> dict[str, Any]:
    """Everything one rank does: check the inputs, read its rows, train, write (rank 0)."""
    start = time.perf_counter()
    typed = TrainParams.parse(params)
    config = typed.trainer
    dataset_dir = str(inputs["dataset"])
    spec, manifest = _checked_inputs(dataset_dir, str(inputs["feature_spec"]), typed.target)
    target = fit_target(
        typed.task, typed.target, split_parts(dataset_dir, SPLIT_TRAIN), typed.classes
    )
    threads = max(config.threads // world.size, 1) if config.threads else 0
    with deterministic(threads):
        stream, validation = training_data(dataset_dir, spec, target, typed, world)
        key = _run_key(params, manifest, spec)
        store = _checkpoint_store(config, key)
        trainer = Trainer(
            model_cfg=dict(typed.model),
            config=config,
            spec=spec,
            target=target,
            world=world,
            checkpoints=store,
        )
        try:
            trainer.setup(stream, validation)
            if world.main:
                log.info(
                    "training %s on %d rows x %d features (%d rank%s), validating on %d rows",
                    target.task,
                    stream.rows,
                    len(spec.feature_names),
                    world.size,
                    "s" if world.size > 1 else "",
                    len(validation[1]),
                )
            trainer.load_checkpoint()
            metrics = trainer.train()
            extra = {
                "config_hash": key,
                "variant": typed.variant,
                "tuned": tuned,
                "trainer": params["trainer"],
            }
            trainer.save_model(outputs["model"], extra=extra)
            barrier(world)
            if store is not None and world.main:
                store.clear()  # the artifact exists: a re-run trains afresh (same result)
        finally:
            trainer.cleanup()
    result = metrics | {
        "samples_per_s": round(trainer.samples / max(trainer.train_seconds, 1e-9), 1),
        "seconds": round(time.perf_counter() - start, 3),
        "train_seconds": round(trainer.train_seconds, 4),
        "checkpoint_seconds": round(trainer.checkpoint_seconds, 4),
        "world_size": world.size,
    }
    if result_path is not None and world.main:
        write_json(result_path, result)
    return result if world.main else {}


def _checked_inputs(
    dataset_dir: str, spec_dir: str, target: str
) -> tuple[FeatureSpec, dict[str, Any]]:
    """The feature spec and dataset manifest, refused unless from one etl run and target.

    Raises:
        DataError: the dataset and spec come from different etl runs, or ``target`` is not
            the one the spec was fitted for.
    """
    spec = load_feature_spec(spec_dir)
    manifest = read_manifest(dataset_dir)
    if manifest["feature_spec_version"] != spec.version:
        raise DataError(
            f"dataset {dataset_dir} was built with feature spec "
            f"{manifest['feature_spec_version'][:12]} but {spec_dir} holds {spec.version[:12]}; "
            "pass the dataset and feature_spec outputs of the same etl run"
        )
    if target != spec.target:
        raise DataError(
            f"target {target!r} differs from the feature spec's target {spec.target!r}; "
            "re-run etl with this target or train on the etl target"
        )
    return spec, manifest


def _run_key(params: dict[str, Any], manifest: dict[str, Any], spec: FeatureSpec) -> str:
    """What identifies this training run across re-runs: params (but where checkpoints go),
    the dataset manifest and the feature spec. A re-run with the same key resumes."""
    keyed = copy.deepcopy(params)
    keyed["trainer"].pop("checkpoint", None)
    keyed.pop("run_id", None)
    canonical = json.dumps(
        {"params": keyed, "dataset": manifest, "spec": spec.version},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _checkpoint_store(config: TrainerParams, key: str) -> CheckpointStore | None:
    root = os.environ.get(CHECKPOINT_DIR_ENV) or config.checkpoint.dir
    if not root:
        return None
    return CheckpointStore(os.path.join(os.path.abspath(root), key), keep=config.checkpoint.keep)


#: The component this module's command line runs.
COMPONENT = "components.train:run"


def main(argv: list[str] | None = None) -> None:
    """``python -m components.train --inputs JSON --params JSON --outputs JSON`` (or torchrun).

    Every rank runs it; rank 0 writes the outputs, prints what :func:`run` returns as JSON
    and, with ``--metrics PATH``, also writes it there (how a TrainJob hands its metrics
    back to the KFP task that launched it).
    """
    parser = argparse.ArgumentParser(prog="python -m components.train", description=main.__doc__)
    for name in ("inputs", "params", "outputs"):
        parser.add_argument(f"--{name}", required=True, help=f"the step's {name} as JSON")
    parser.add_argument("--metrics", help="file for rank 0 to write the returned metrics to")
    parser.add_argument(
        "--component", default=COMPONENT, choices=(COMPONENT,), help="the component to run"
    )
    args = parser.parse_args(argv)
    main_rank = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if main_rank else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = run(json.loads(args.inputs), json.loads(args.params), json.loads(args.outputs))
    except KfbatchError as error:
        logging.getLogger(__name__).error("%s", error)
        sys.exit(2)
    if main_rank and args.metrics:
        write_json(args.metrics, result or {})
    if result:
        sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
