"""Plots of a run's logged metrics.

Figures are drawn on :class:`matplotlib.figure.Figure` directly, not through
pyplot, so importing or calling this module never changes the user's backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib import ticker
from matplotlib.figure import Figure

from jaxlab.train.files import atomic_path

MAX_PANELS = 6
_NOT_CURVES = frozenset({"step", "steps_per_sec", "compile_seconds", "examples_per_sec", "tokens_per_sec", "tflops_per_sec", "mfu", "peak_memory_gib"})


def default_names(records: list[dict[str, Any]]) -> tuple[str, ...]:
    """``loss``, ``grad_norm``, the evaluation figures (``eval_*``), then the other logged metrics (not copies of the loss)."""
    seen: dict[str, None] = {}
    for record in records:
        for name, value in record.items():
            if name not in _NOT_CURVES and isinstance(value, (int, float)) and not isinstance(value, bool):
                seen.setdefault(name)
    order: list[str] = [n for n in ("loss", "grad_norm") if n in seen]
    order += [n for n in seen if n.startswith("eval_")]
    order += [n for n in seen if n not in order and not _same_as_loss(records, n)]
    return tuple(order[:MAX_PANELS])


def _same_as_loss(records: list[dict[str, Any]], name: str) -> bool:
    """A method metric that repeats the loss (``mse`` of a plain regression loss) gets no panel of its own."""
    return all(r.get(name) == r.get("loss") for r in records if name in r)


def _plain_numbers(ax: Any, values: tuple[float, ...]) -> None:
    """Log scale when the curve spans a decade or more, linear otherwise; tick labels as plain numbers (no 1.9×10⁰)."""
    low, high = min(values), max(values)
    if low > 0 and high / low >= 10:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        ax.yaxis.set_major_formatter(ticker.ScalarFormatter(useOffset=False))


def plot_metrics(records: list[dict[str, Any]], path: str | Path, *, names: tuple[str, ...] | None = None) -> None:
    """One panel per metric against step from ``metrics.jsonl`` records.

    Args:
      records: the logged lines (``{"step": s, "loss": ..., ...}``).
      path: the PNG to write.
      names: the metrics to draw; by default :func:`default_names` (loss,
        gradient norm, evaluation figures, then the method's own metrics; at
        most six panels).
    """
    names = default_names(records) if names is None else names
    if not records or not names:
        return
    columns = min(len(names), 3)
    rows = -(-len(names) // columns)
    fig = Figure(figsize=(4.5 * columns, 3.2 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        points = [(r["step"], r[name]) for r in records if isinstance(r.get(name), (int, float)) and "step" in r]
        if not points:
            continue
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if len(points) < 20 else None, markersize=3)
        _plain_numbers(ax, values)
        ax.set_xlabel("step")
        ax.set_title(name.removeprefix("eval_") + (" (evaluation)" if name.startswith("eval_") else ""), fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
