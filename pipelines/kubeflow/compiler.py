"""Compile the DAG to a Kubeflow Pipelines v2 pipeline (IR YAML).

:func:`compile_pipeline` translates :func:`pipelines.dag.build_dag`'s DAG step by step; it
never re-decides which steps exist or how they connect. Each step becomes one KFP task
running the project image (``kubeflow.image``) that calls the step's component function
through the in-pod launcher (:mod:`pipelines.kubeflow.launch`):

- a fan-out step becomes ``dsl.ParallelFor(items, parallelism=...)`` and a step that reads
  its output gets ``dsl.Collected(...)``, the list from every branch;
- an input from outside the pipeline (a :class:`pipelines.dag.Uri`, the user's CSV) becomes
  a pipeline parameter, ``data_uri`` (``<step>_<input>_uri`` when there are several), so a
  run can point at other data without recompiling;
- the run id placeholder in params becomes KFP's run id: the params carry
  :data:`pipelines.kubeflow.launch.RUN_ID_TOKEN` (Argo, which runs KFP pipelines, would
  try to resolve ``{{kfbatch.run_id}}`` itself) and the task gets a ``run_id`` parameter
  set to ``dsl.PIPELINE_JOB_ID_PLACEHOLDER``. On a cluster this puts the run id in such a
  task's cache key: a new run scores again, a retried run (same id) reuses finished
  branches;
- the run date placeholder becomes the pipeline parameter ``run_date`` (``YYYY-MM-DD``;
  default ``config.run_date``, or empty for the day the task runs, UTC), so a backfill is a
  run with another ``run_date``;
- per task, from config: CPU and memory requests and limits (equal), accelerator type and
  count, node selector, tolerations, PVC mounts (``kubeflow.volumes`` on every task, the
  checkpoint PVC on training), secrets as environment variables (by reference: only the
  secret's name and key are in the YAML), retries with exponential backoff (from
  ``runtime.retries`` and ``runtime.retry_backoff_s``), caching (``kubeflow.caching`` and
  the step's ``cache``; never for a task reading an outside URI, since KFP caches by
  parameters and the data behind a URI changes), a timeout (``runtime.step_timeout_s``, as the pod's
  ``activeDeadlineSeconds``) and the step name as display name;
- with ``trainer.nodes > 1`` the (final) training task gets ``KFBATCH_DISTRIBUTED``: the in-pod
  launcher then creates and watches a Kubeflow Trainer ``TrainJob`` (or ``PyTorchJob``)
  instead of training in the task's pod (:mod:`pipelines.kubeflow.trainjob`);
- the DAG's final outputs (those no step reads) become the pipeline's outputs.

Component style: **lightweight Python components with the project image as base image and
``install_kfp_package=False``**: one typed declaration per component kind
(:mod:`pipelines.kubeflow.tasks`), made a component at compile time with the configured
image and named after its DAG step. Why not container components:

- ``kfp.local.SubprocessRunner`` runs lightweight Python components only (it refuses
  container and containerized Python components), and the compiled YAML is checked by
  running it under ``kfp.local`` (``tests/pipelines/kubeflow/test_conformance.py``): only this style
  lets the very YAML we ship be executed without a cluster or Docker;
- kfp's executor does the artifact plumbing: input and output paths, artifact metadata and
  the executor output file that carries metrics to the UI. A container component would
  re-implement that protocol;
- no pip step runs in the pod (the image already has kfp and kfbatch), so a task starts as
  fast as ``python -m kfp.dsl.executor_main`` (PERF-NOTES: 0.07 s vs 0.55 s per task with
  the pip step).

The price: kfp ships each declaration's source in the YAML (a few hundred bytes per task;
the declarations only import the launcher), and the image must contain ``sh`` and
``python3`` (any Python base image does).

Output is deterministic: the same config gives the same bytes (kfp writes sorted YAML;
nothing here adds timestamps or depends on dict or set iteration order).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import re
import tempfile
import typing
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes
from kfp.dsl.types import type_annotations

from components.names import CHECKPOINT_DIR_ENV, DISTRIBUTED_ENV, STEP_ENV
from pipelines import k8s
from pipelines.builder import build_dag
from pipelines.config.compose import ComposedConfig
from pipelines.config.schema import Config
from pipelines.config.secrets import refuse_inline
from pipelines.dag import RUN_DATE, RUN_ID, Dag, Ref, Step, Uri
from pipelines.errors import KfbatchError
from pipelines.kubeflow.launch import RUN_DATE_TOKEN, RUN_ID_TOKEN
from pipelines.kubeflow.tasks import CHECKPOINTING, DECLARATIONS, GATES
from pipelines.kubeflow.trainjob.stage import distributed_settings

__all__ = ["compile_pipeline", "write_pipeline"]

log = logging.getLogger(__name__)

#: The pipeline parameter holding the run date (see :data:`pipelines.dag.RUN_DATE`).
RUN_DATE_PARAMETER = "run_date"


def compile_pipeline(
    composed: ComposedConfig,
    *,
    kubernetes_manifest: compiler.KubernetesManifestOptions | None = None,
) -> str:
    """Compile the config's pipeline to KFP v2 IR YAML text (same config, same bytes).

    The text holds two YAML documents: the pipeline spec and, when any step has node
    selectors, tolerations, PVCs, secrets or a timeout, the Kubernetes platform spec.
    With ``kubernetes_manifest`` it holds instead kfp's Kubernetes-native form: a
    ``Pipeline`` (when the options ask for it) and a ``PipelineVersion`` resource
    (``pipelines.kubeflow.org/v2beta1``) carrying both specs.

    Raises:
        ConfigError: a credential is inline in the config (see
            :func:`pipelines.config.secrets.refuse_inline`), or a ``kubeflow`` setting cannot
            be expressed (e.g. a malformed secret).
        KfbatchError: a DAG step has no matching KFP declaration.
    """
    refuse_inline(composed.container, "a compiled pipeline")
    pipeline = _build_pipeline(composed.config)
    _warn_of_pod_local_publishing(composed.config)
    with tempfile.TemporaryDirectory(prefix="kfbatch-compile-") as tmp:
        path = os.path.join(tmp, "pipeline.yaml")
        compiler.Compiler().compile(
            pipeline,
            path,
            kubernetes_manifest_options=kubernetes_manifest,
            kubernetes_manifest_format=kubernetes_manifest is not None,
        )
        with open(path, encoding="utf-8") as f:
            return f.read()


def _warn_of_pod_local_publishing(config: Config) -> None:
    """Warn when publish would write inside the pod, where its files die with it.

    The verified predictions themselves are the publish task's output artifact (kept in the
    pipeline root); the versioned copy and the lookup store need a mounted volume or a
    database server.
    """
    if "infer" not in config.stages:
        return
    publish = config.publish
    local = {
        "publish.destination": publish.destination
        if publish.destination and not publish.destination.startswith("/")
        else None,
        "publish.store_url": publish.store_url
        if publish.store_url and re.match(r"^sqlite:///(?!/)", publish.store_url)
        else None,
    }
    for key, value in local.items():
        if value is not None:
            log.warning(
                "%s=%s is a path inside the pod on Kubeflow and is lost with it: set it to a "
                "path on a volume from kubeflow.volumes (or a database URL), or to null",
                key,
                value,
            )


def write_pipeline(composed: ComposedConfig, path: str | os.PathLike[str]) -> Path:
    """Compile (see :func:`compile_pipeline`) and write the YAML to ``path`` atomically."""
    text = compile_pipeline(composed)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _build_pipeline(config: Config) -> Any:
    """The KFP pipeline (a ``GraphComponent``) of ``config``'s DAG, ready to compile."""
    plan = _TranslationPlan.of(config)
    dag, final_outputs = plan.dag, plan.final_outputs
    outputs_type = (
        typing.NamedTuple(  # type: ignore[misc]
            "Outputs",
            [(name, plan.artifact_class(step, output)) for name, (step, output) in final_outputs],
        )
        if final_outputs
        else inspect.Signature.empty
    )

    gated = _gated_steps(dag)

    def pipeline(*arguments: str) -> Any:
        values = dict(zip(plan.parameter_names, arguments, strict=True))
        tasks: dict[str, Any] = {}
        for step in dag.steps:
            if step.name not in gated:
                tasks[step.name] = _add_task(plan, step, tasks, values)
        if gated:
            # One condition around everything downstream of the gate (kfp refuses data
            # passed between tasks of different condition groups).
            gate = next(s for s in dag.steps if s.component in GATES)
            with dsl.If(tasks[gate.name].outputs["Output"] == True, name="gate passed"):  # noqa: E712
                for step in dag.steps:
                    if step.name in gated:
                        tasks[step.name] = _add_task(plan, step, tasks, values)
        if not final_outputs:
            return None
        return outputs_type(
            **{
                name: tasks[step].outputs[_output_name(dag.step(step), output)]
                for name, (step, output) in final_outputs
            }
        )

    # kfp reads a pipeline's parameters from its signature: one string per outside input.
    pipeline.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=str
            )
            for name, default in plan.parameters
        ],
        return_annotation=outputs_type,
    )
    steps = ", ".join(
        f"{s.name} x{len(s.fan_out.items)}" if s.fan_out else s.name for s in dag.steps
    )
    return dsl.pipeline(
        pipeline,
        name=dag.name,
        description=f"kfbatch pipeline {dag.name}: {steps} (DAG {dag.digest()[:12]})",
        pipeline_root=config.kubeflow.pipeline_root or None,
    )


@dataclass(frozen=True)
class _TranslationPlan:
    """What translating the DAG to a KFP pipeline needs, decided before any kfp object is built."""

    config: Config
    dag: Dag
    declarations: Mapping[str, Callable[..., None]]
    #: (step, input) -> (pipeline parameter, default URI) for inputs from outside.
    uri_parameters: Mapping[tuple[str, str], tuple[str, str]]
    #: (pipeline output, (step, output)) for the DAG's final outputs.
    final_outputs: tuple[tuple[str, tuple[str, str]], ...]

    @classmethod
    def of(cls, config: Config) -> _TranslationPlan:
        dag = build_dag(config)
        _secrets(config.kubeflow.secrets)  # fail on a malformed reference before building
        return cls(
            config,
            dag,
            {step.name: _declaration(step, dag) for step in dag.steps},
            _uri_parameters(dag),
            _final_outputs(dag),
        )

    @property
    def parameters(self) -> list[tuple[str, str]]:
        """The pipeline's parameters and their defaults: outside URIs, then the run date."""
        found = list(dict.fromkeys(self.uri_parameters.values()))
        if any(RUN_DATE in json.dumps(step.params) for step in self.dag.steps):
            found.append((RUN_DATE_PARAMETER, self.dag.run_date or ""))
        return found

    @property
    def parameter_names(self) -> list[str]:
        return [name for name, _ in self.parameters]

    def artifact_class(self, step: str, output: str) -> type:
        """The artifact type of a DAG output, as its declaration gives it."""
        parameters = inspect.signature(self.declarations[step]).parameters
        annotation = parameters[_output_name(self.dag.step(step), output)].annotation
        return type_annotations.get_io_artifact_class(annotation)


# --------------------------------------------------------------------------- tasks


def _add_task(
    plan: _TranslationPlan, step: Step, tasks: Mapping[str, Any], values: Mapping[str, str]
) -> Any:
    """Add ``step``'s task (inside a ``ParallelFor`` for a fan-out) to the pipeline."""
    component = dsl.component(
        plan.declarations[step.name],
        base_image=plan.config.kubeflow.image,
        install_kfp_package=False,
    )
    # Tasks are named after the DAG step (kfp names them after the component).
    component.component_spec.name = component.name = step.name
    params = json.dumps(step.params, sort_keys=True, separators=(",", ":"))
    arguments: dict[str, Any] = {
        "component": step.component,
        "params": params.replace(RUN_ID, RUN_ID_TOKEN).replace(RUN_DATE, RUN_DATE_TOKEN),
    }
    if RUN_ID in params:
        arguments["run_id"] = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    if RUN_DATE in params:
        arguments["run_date"] = values[RUN_DATE_PARAMETER]
    for name, source in step.inputs.items():
        if isinstance(source, Uri):
            arguments[f"{name}_uri"] = values[plan.uri_parameters[(step.name, name)][0]]
            continue
        producer = plan.dag.step(source.step)
        output = tasks[source.step].outputs[_output_name(producer, source.output)]
        arguments[name] = dsl.Collected(output) if producer.fan_out else output
    if step.fan_out is None:
        task = component(**arguments)
        _configure(task, step, plan.config)
        return task
    fan_out = step.fan_out
    with dsl.ParallelFor(
        items=list(fan_out.items),
        name=f"{step.name} x{len(fan_out.items)}",
        parallelism=fan_out.parallelism,
    ) as item:
        task = component(**arguments, **{fan_out.param: item})
        _configure(task, step, plan.config)
    return task


def _configure(task: Any, step: Step, config: Config) -> None:
    """Apply what config says about this step's pods to ``task``."""
    resources, kf, runtime = step.resources, config.kubeflow, config.runtime
    task.set_display_name(step.name)
    # KFP caches by parameters, not by content: a task reading an outside URI (the same
    # path every night, new data behind it) would be reused, so it always runs.
    reads_outside = any(isinstance(source, Uri) for source in step.inputs.values())
    task.set_caching_options(enable_caching=bool(kf.caching and step.cache and not reads_outside))
    task.set_env_variable(STEP_ENV, step.name)
    cpu, memory = k8s.cpu_quantity(resources.cpu), k8s.integer_memory(resources.memory)
    task.set_cpu_request(cpu).set_cpu_limit(cpu)
    task.set_memory_request(memory).set_memory_limit(memory)
    if resources.gpu:
        task.set_accelerator_type(k8s.gpu_resource(resources))
        task.set_accelerator_limit(resources.gpu)
    if step.retries:
        task.set_retry(
            num_retries=step.retries,
            backoff_duration=f"{runtime.retry_backoff_s:g}s",
            backoff_factor=2.0,
        )
    checkpoints = step.component in CHECKPOINTING and kf.checkpoint_pvc
    if checkpoints:
        task.set_env_variable(CHECKPOINT_DIR_ENV, kf.checkpoint_mount)
    # Only a single training task launches a multi-node job: CV folds and tuning trials are
    # fan-out branches of one run, whose jobs (named per run and step) would collide.
    if step.component in CHECKPOINTING and step.fan_out is None and config.trainer.nodes > 1:
        task.set_env_variable(DISTRIBUTED_ENV, distributed_settings(config, step))
    for key, value in resources.node_selector:
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in k8s.tolerations(resources):
        kubernetes.add_toleration(task, **toleration)  # type: ignore[arg-type]
    if checkpoints:
        kubernetes.mount_pvc(task, pvc_name=kf.checkpoint_pvc, mount_path=kf.checkpoint_mount)
    for volume in kf.volumes:
        kubernetes.mount_pvc(task, pvc_name=volume.claim, mount_path=volume.mount_path)
    for secret, keys in _secrets(kf.secrets).items():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=keys)
    if step.timeout_s:
        kubernetes.set_timeout(task, seconds=math.ceil(step.timeout_s))


# --------------------------------------------------------------------------- declarations


def _declaration(step: Step, dag: Dag) -> Callable[..., None]:
    """The first declaration of ``step.component`` whose interface matches the step."""
    candidates = DECLARATIONS.get(step.component)
    if not candidates:
        raise KfbatchError(
            f"step {step.name!r} runs {step.component!r}, which has no KFP declaration; "
            f"add one to pipelines/kubeflow/tasks.py (declared: {sorted(DECLARATIONS)})"
        )
    wanted = _interface(step, dag)
    for candidate in candidates:
        if _declared_interface(candidate) == wanted:
            return candidate
    raise KfbatchError(
        f"no KFP declaration of {step.component!r} matches step {step.name!r}, which needs "
        f"{_describe(wanted)}; declared: "
        + "; ".join(f"{c.__name__}: {_describe(_declared_interface(c))}" for c in candidates)
    )


def _interface(step: Step, dag: Dag) -> dict[str, str]:
    """What a declaration of ``step`` must take and give: name -> kind."""
    wanted = {"component": "param", "params": "param", "metrics": "output"}
    for name, source in step.inputs.items():
        if isinstance(source, Uri):
            wanted[f"{name}_uri"] = "param"
        elif dag.step(source.step).fan_out is not None:
            wanted[name] = "input-list"
        else:
            wanted[name] = "input"
    for output in step.outputs:
        wanted[_output_name(step, output)] = "output"
    if step.fan_out is not None:
        wanted[step.fan_out.param] = "param"
    if RUN_ID in json.dumps(step.params):
        wanted["run_id"] = "param"
    if RUN_DATE in json.dumps(step.params):
        wanted["run_date"] = "param"
    return wanted


def _declared_interface(declaration: Callable[..., None]) -> dict[str, str]:
    """The inputs and outputs a declaration takes, except UI-only outputs."""
    interface: dict[str, str] = {}
    for name, parameter in inspect.signature(declaration).parameters.items():
        annotation = parameter.annotation
        if type_annotations.is_artifact_wrapped_in_Output(annotation):
            cls = type_annotations.get_io_artifact_class(annotation)
            if cls not in (dsl.ClassificationMetrics, dsl.Markdown, dsl.HTML):
                interface[name] = "output"
        elif type_annotations.is_artifact_wrapped_in_Input(annotation):
            inner = type_annotations.strip_Input_or_Output_marker(annotation)
            is_list = type_annotations.is_list_of_artifacts(inner)
            interface[name] = "input-list" if is_list else "input"
        else:
            interface[name] = "param"
    return interface


def _describe(interface: Mapping[str, str]) -> str:
    return ", ".join(f"{name} ({kind})" for name, kind in interface.items())


def _output_name(step: Step, output: str) -> str:
    """The KFP output name of a DAG output: its own, unless an input has that name."""
    return f"{output}_out" if output in step.inputs else output


# --------------------------------------------------------------------------- config values


def _uri_parameters(dag: Dag) -> dict[tuple[str, str], tuple[str, str]]:
    """(step, input) -> (pipeline parameter name, default URI) for inputs from outside.

    Inputs that read the same URI share one parameter (scoring-only: infer and publish read
    the same data, and a run that changes it must change it for both), named after the first
    step and input that read it, or ``data_uri`` when the only outside input is data.
    """
    found = [
        (step.name, name, source.uri)
        for step in dag.steps
        for name, source in step.inputs.items()
        if isinstance(source, Uri)
    ]
    first: dict[str, str] = {}
    for step_name, name, uri in found:
        first.setdefault(uri, f"{step_name}_{name}_uri".replace("-", "_"))
    if len(first) == 1 and all(name != "model" for _, name, _ in found):
        first = dict.fromkeys(first, "data_uri")
    return {(s, n): (first[uri], uri) for s, n, uri in found}


def _gated_steps(dag: Dag) -> set[str]:
    """Steps downstream of a gate step: they run only when the gate passes."""
    gated: set[str] = set()
    gates = {step.name for step in dag.steps if step.component in GATES}
    for step in dag.steps:
        if any(up in gates or up in gated for up in dag.upstream(step)):
            gated.add(step.name)
    return gated


def _final_outputs(dag: Dag) -> tuple[tuple[str, tuple[str, str]], ...]:
    """Pipeline output name -> (step, output) for outputs no step reads (fan-outs and
    steps under a gate's condition excluded: kfp returns only unconditional outputs)."""
    gated = _gated_steps(dag)
    read = {
        (ref.step, ref.output)
        for step in dag.steps
        for ref in step.inputs.values()
        if isinstance(ref, Ref)
    }
    return tuple(
        (f"{step.name}_{output}".replace("-", "_"), (step.name, output))
        for step in dag.steps
        if step.fan_out is None and step.name not in gated
        for output in step.outputs
        if (step.name, output) not in read
    )


def _secrets(secrets: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``{ENV: "secret/key"}`` (validated at composition) -> ``{secret: {key: ENV}}``."""
    grouped: dict[str, dict[str, str]] = defaultdict(dict)
    for env in sorted(secrets):
        secret, _, key = str(secrets[env]).partition("/")
        grouped[secret][key] = env
    return {secret: dict(sorted(keys.items())) for secret, keys in sorted(grouped.items())}
