"""Plots people would rather look at than read: per-layer widths before/after, score histograms, trajectories.

Matplotlib with the non-interactive Agg backend; every function writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, fig, ax, path: str | Path) -> Path:
    """Legend, tight layout, write ``path`` (parents created) at 120 dpi, close the figure."""
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_widths(before: Mapping[str, int], after: Mapping[str, int], path: str | Path, *,
                title: str = "channels per layer") -> Path:
    """Grouped bar chart: channels of every group before (grey) and after (blue), in graph order."""
    plt = _plt()
    names = list(before)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(names) + 2), 4))
    ax.bar(x, [before[n] for n in names], color="#c8c8c8", label="before")
    ax.bar(x, [after.get(n, before[n]) for n in names], color="#1f77b4", width=0.6, label="after")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_ylabel("channels")
    ax.set_title(title)
    return _finish(plt, fig, ax, path)


def plot_histograms(series: Mapping[str, Sequence[float]], path: str | Path, *, title: str, xlabel: str,
                    bins: int = 60, log_y: bool = True) -> Path:
    """Overlaid histograms of several value sets (e.g. |γ| before and after sparsity training)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    values = {k: np.asarray(v, dtype=float) for k, v in series.items()}
    hi = max((v.max() for v in values.values() if v.size), default=1.0)
    edges = np.linspace(0, hi if hi > 0 else 1.0, bins + 1)
    for label, v in values.items():
        ax.hist(v, bins=edges, alpha=0.55, label=label)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("channels")
    ax.set_title(title)
    return _finish(plt, fig, ax, path)


def plot_trajectory(x: Sequence[float], ys: Mapping[str, Sequence[float]], path: str | Path, *, title: str,
                    xlabel: str, ylabel: str) -> Path:
    """Line plot of one or more series against ``x`` (e.g. accuracy vs MACs kept after every tick)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, y in ys.items():
        ax.plot(list(x), list(y), marker="o", ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _finish(plt, fig, ax, path)


def plot_width_configs(configs: Mapping[str, Mapping[str, int]], path: str | Path, *,
                       title: str = "channels per group") -> Path:
    """Side-by-side bars: channels of every group (x, in the first configuration's order) for each of several
    width configurations (e.g. full, uniform multiplier, searched winner)."""
    plt = _plt()
    labels = list(configs)
    names = list(configs[labels[0]])
    x = np.arange(len(names))
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names) + 2), 4))
    for i, label in enumerate(labels):
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, [configs[label].get(n, 0) for n in names], width=width,
               label=label, color="#c8c8c8" if i == 0 else None)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_ylabel("channels")
    ax.set_title(title)
    return _finish(plt, fig, ax, path)
