"""Small PNG plots that components write next to their results (matplotlib, no display)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

__all__ = ["bar_chart"]


def bar_chart(
    path: str,
    groups: Mapping[str, Sequence[float]],
    *,
    labels: Sequence[str],
    title: str,
    highlight: int | None = None,
) -> None:
    """One panel per entry of ``groups``: a bar per label, with the mean as a dashed line.

    ``highlight`` colours one bar (e.g. the best trial). Written atomically to ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        1, len(groups), figsize=(3.2 * len(groups) + 0.5, 2.8), squeeze=False
    )
    for axis, (name, values) in zip(axes[0], groups.items(), strict=True):
        colours = ["#4c72b0"] * len(values)
        if highlight is not None:
            colours[highlight] = "#dd8452"
        axis.bar(range(len(values)), values, color=colours)
        axis.axhline(sum(values) / len(values), color="#333333", linestyle="--", linewidth=1)
        axis.set_xticks(range(len(values)), labels, fontsize=7)
        axis.set_title(name, fontsize=9)
    figure.suptitle(title, fontsize=10)
    tmp = f"{path}.tmp.png"
    figure.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(figure)
    os.replace(tmp, path)
