"""The same trivial, heavy-import and sleep steps as kfp lightweight components.

``install_kfp_package=False``: no pip step, kfp.local's lightest setting. Lightweight
components must be self-contained, so every import sits inside the function. No
``from __future__ import annotations`` here: kfp reads the annotations as types.
"""

from collections.abc import Callable
from typing import Any

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

#: Only a label under kfp.local's SubprocessRunner (set to silence kfp's FutureWarning).
BASE_IMAGE = "python:3.11"


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def first(text: str, out: Output[Artifact]):
    with open(out.path, "w") as handle:
        handle.write(text)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def follow(text: str, prev: Input[Artifact], out: Output[Artifact]):
    with open(prev.path) as handle:
        previous = handle.read()
    with open(out.path, "w") as handle:
        handle.write(previous + text)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def heavy_first(text: str, out: Output[Artifact]):
    import pyarrow as pa
    import torch

    float(torch.arange(4, dtype=torch.float32).sum())
    pa.table({"x": [1, 2, 3]})
    with open(out.path, "w") as handle:
        handle.write(text)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def heavy_follow(text: str, prev: Input[Artifact], out: Output[Artifact]):
    import pyarrow as pa
    import torch

    float(torch.arange(4, dtype=torch.float32).sum())
    pa.table({"x": [1, 2, 3]})
    with open(prev.path) as handle:
        previous = handle.read()
    with open(out.path, "w") as handle:
        handle.write(previous + text)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def sleep(seconds: float, item: int, out: Output[Artifact]):
    import time

    time.sleep(seconds)
    with open(out.path, "w") as handle:
        handle.write(str(item))


def pipelines(texts: list[str], fan_out: int, sleep_s: float) -> dict[str, Callable[[], Any]]:
    """The benchmark pipelines: ``trivial`` and ``heavy`` chains over ``texts``, ``fanout``."""

    def chain(name: str, head: Any, follow: Any) -> Callable[[], Any]:
        @dsl.pipeline(name=name)
        def pipeline() -> Artifact:
            task = head(text=texts[0])
            for text in texts[1:]:
                task = follow(text=text, prev=task.outputs["out"])
            return task.outputs["out"]

        return pipeline

    @dsl.pipeline(name="bench-fanout")
    def fanout():
        with dsl.ParallelFor(items=list(range(fan_out)), parallelism=fan_out) as item:
            sleep(seconds=sleep_s, item=item)

    return {
        "trivial": chain("bench-trivial", first, follow),
        "heavy": chain("bench-heavy", heavy_first, heavy_follow),
        "fanout": fanout,
    }
