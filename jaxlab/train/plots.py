"""Plots of a run's logged metrics (matplotlib, non-interactive backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_metrics(records: list[dict[str, Any]], path: str | Path, *, names: tuple[str, ...] = ("loss",)) -> None:
    """Line plot of ``names`` against step from ``metrics.jsonl`` records (log scale if positive)."""
    if not records:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        points = [(r["step"], r[name]) for r in records if isinstance(r.get(name), (int, float))]
        if not points:
            continue
        steps, values = zip(*points)
        ax.plot(steps, values)
        if min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
