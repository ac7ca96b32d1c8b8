"""The report's pictures, drawn with matplotlib (Agg) and returned as ``data:`` PNG URIs.

matplotlib is imported here only, and only when a report is written, so that the CLI's
``--help`` and every other command stay light.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from pipelines.report.collect import RunFacts

__all__ = [
    "STATUS_COLOURS",
    "dag_picture",
    "roc_picture",
    "throughput_picture",
    "timeline_picture",
    "training_picture",
]

#: One colour per status, shared by the pictures and the page's badges.
STATUS_COLOURS = {
    "succeeded": "#2f9e5b",
    "cached": "#5b8def",
    "failed": "#d64545",
    "interrupted": "#e8973d",
    "running": "#e8c93d",
    "not_run": "#b3b3b3",
    "pending": "#d9d9d9",
}
_DPI = 110


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> str:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _colour(status: str) -> str:
    return STATUS_COLOURS.get(status, STATUS_COLOURS["pending"])


def dag_picture(facts: RunFacts) -> str | None:
    """Steps left to right by dependency depth, coloured by status, fan-outs as one box."""
    if not facts.steps:
        return None
    from matplotlib.patches import FancyBboxPatch

    plt = _pyplot()
    layers: dict[int, list[str]] = {}
    for step in facts.steps:
        layers.setdefault(step.depth, []).append(step.name)
    tallest = max(len(names) for names in layers.values())
    position = {
        name: (depth * 2.2, (len(names) - 1) / 2 - row)
        for depth, names in layers.items()
        for row, name in enumerate(names)
    }
    figure, axes = plt.subplots(figsize=(1.9 * len(layers) + 0.4, 1.05 * tallest + 0.5))
    width, height = 1.5, 0.6
    for step in facts.steps:
        x, y = position[step.name]
        for source in step.upstream:
            if source in position:
                sx, sy = position[source]
                axes.annotate(
                    "",
                    xy=(x - width / 2, y),
                    xytext=(sx + width / 2, sy),
                    arrowprops={"arrowstyle": "-|>", "color": "#555555", "lw": 1.2},
                )
        axes.add_patch(
            FancyBboxPatch(
                (x - width / 2, y - height / 2),
                width,
                height,
                boxstyle="round,pad=0.02,rounding_size=0.08",
                facecolor=_colour(step.status),
                edgecolor="#333333",
                linewidth=1.0,
            )
        )
        axes.text(x, y + 0.08, step.label, ha="center", va="center", fontsize=10, weight="bold")
        axes.text(x, y - 0.16, step.status.replace("_", " "), ha="center", va="center", fontsize=8)
    xs = [p[0] for p in position.values()]
    ys = [p[1] for p in position.values()]
    axes.set_xlim(min(xs) - width / 2 - 0.1, max(xs) + width / 2 + 0.1)
    axes.set_ylim(min(ys) - height / 2 - 0.1, max(ys) + height / 2 + 0.1)
    axes.set_aspect("equal")
    axes.axis("off")
    return _png(figure)


def timeline_picture(facts: RunFacts) -> str | None:
    """A Gantt chart: one row per node, one bar per attempt; fan-out branches overlap in time."""
    rows = [n for n in facts.nodes if n.attempts or n.started is not None]
    if not rows:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 0.32 * len(rows) + 0.9))
    end = facts.seconds or max((n.ended or n.started or 0.0) for n in rows) or 1.0
    for y, node in enumerate(rows):
        if not node.attempts:  # cached: reused in an instant
            axes.plot([node.started or 0.0], [y], marker="D", color=_colour(node.status), ms=7)
            continue
        for attempt in node.attempts:
            start = attempt["start"] or 0.0
            stop = attempt["end"] if attempt["end"] is not None else end
            axes.barh(
                y,
                max(stop - start, end * 0.003),
                left=start,
                height=0.6,
                color=_colour(attempt["status"]),
                edgecolor="#333333",
                linewidth=0.5,
            )
            if len(node.attempts) > 1:
                axes.text(start, y, f" #{attempt['attempt']}", va="center", fontsize=7)
    axes.set_yticks(range(len(rows)), [n.node for n in rows], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, end * 1.02)
    axes.set_xlabel("seconds since the run started")
    axes.grid(axis="x", alpha=0.3)
    for used in sorted({n.status for n in rows} | {a["status"] for n in rows for a in n.attempts}):
        axes.barh(0, 0, color=_colour(used), label=used.replace("_", " "))
    axes.legend(loc="lower right", fontsize=7, frameon=False, ncols=4)
    return _png(figure)


def training_picture(training: dict[str, Any]) -> str | None:
    """Train and validation loss, and the task's main validation score, per epoch."""
    history = training.get("history") or []
    if not history:
        return None
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    score = next(
        (k for k in ("val_roc_auc", "val_accuracy", "val_rmse") if any(k in h for h in history)),
        "val_loss",
    )
    figure, (loss, auc) = plt.subplots(1, 2, figsize=(9, 3))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        if any(key in h for h in history):
            loss.plot(epochs, [h.get(key) for h in history], marker="o", label=label)
    loss.set_title("loss", fontsize=10)
    loss.set_xlabel("epoch")
    loss.legend(fontsize=8, frameon=False)
    auc.plot(epochs, [h.get(score) for h in history], marker="o", color="#2f9e5b")
    auc.set_title(score.replace("val_", "validation ").replace("_", " "), fontsize=10)
    auc.set_xlabel("epoch")
    for axes in (loss, auc):
        axes.grid(alpha=0.3)
        axes.set_xticks(epochs)
    figure.tight_layout()
    return _png(figure)


def roc_picture(evaluation: dict[str, Any]) -> str | None:
    """The ROC curve of the evaluation split, with the chance diagonal."""
    roc = evaluation.get("roc") or {}
    if not roc.get("fpr"):
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4, 4))
    auc = evaluation.get("scalars", {}).get("roc_auc")
    label = f"AUC {auc:.3f}" if isinstance(auc, (int, float)) else "model"
    axes.plot(roc["fpr"], roc["tpr"], color="#5b8def", lw=2, label=label)
    axes.plot([0, 1], [0, 1], linestyle="--", color="#999999", lw=1, label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(figure)


def throughput_picture(inference: dict[str, Any]) -> str | None:
    """Rows per second of each inference shard."""
    shards = [s for s in inference.get("shards", []) if s.get("rows_per_s") is not None]
    if not shards:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(max(3.5, 0.8 * len(shards) + 1.5), 2.6))
    axes.bar(
        [s["node"] for s in shards],
        [s["rows_per_s"] for s in shards],
        color=[_colour(s["status"]) for s in shards],
        edgecolor="#333333",
        linewidth=0.5,
    )
    axes.set_ylabel("rows / s")
    axes.grid(axis="y", alpha=0.3)
    axes.tick_params(axis="x", labelsize=8)
    return _png(figure)
