"""People-facing views of the DAG: resource budget and Graphviz dot."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pipelines.builder import build_dag
from pipelines.config.compose import compose_config
from pipelines.dag import memory_bytes
from pipelines.views import dag_dot, resource_budget


def test_memory_quantities() -> None:
    assert memory_bytes("512Mi") == 512 * 2**20
    assert memory_bytes("4Gi") == 4 * 2**30
    assert memory_bytes("2G") == 2e9
    assert memory_bytes("1.5Gi") == 1.5 * 2**30


def test_budget_counts_every_branch() -> None:
    dag = build_dag(compose_config(["resources=gpu", "inference.shards=6"]).config)
    budget = resource_budget(dag)
    assert "infer     6         2        2    4Gi     0" in budget
    # 1+1+8+1+6*2+1 CPUs; 2+2+32+2+6*4+2 GiB; one GPU (train)
    assert "summed over all 11 nodes: cpu=24 memory=64Gi gpu=1" in budget
    assert "largest step at once: train with cpu=8; widest fan-out: infer x6" in budget


def test_dot_names_fan_outs_and_edges() -> None:
    dot = dag_dot(build_dag(compose_config().config))
    assert dot.startswith('digraph "churn-demo" {')
    assert '"infer" [label="infer x4 (2 at a time)' in dot
    assert '"infer" -> "publish" [label="predictions"];' in dot
    assert '"etl" -> "infer" [label="scoring"];' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_dot_is_valid_graphviz() -> None:
    dot = dag_dot(build_dag(compose_config().config))
    rendered = subprocess.run(
        ["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True
    )
    assert "<svg" in rendered.stdout


def test_dag_command_prints_budget_and_dot(kfbatch) -> None:
    tree = kfbatch("dag")
    assert "summed over all 9 nodes" in tree.out
    dot = kfbatch("dag", "--format", "dot")
    assert dot.out.startswith("digraph")
