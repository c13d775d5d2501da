"""Figures people would rather look at than read: accuracy matrix and routing confusion."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _heatmap(
    values: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, xlabel: str, ylabel: str, path: Path
) -> Path:
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(cols), 1.0 + 0.6 * len(rows)))
    shown = np.ma.masked_invalid(values.astype(float))
    im = ax.imshow(shown, cmap="viridis", vmin=0.0, vmax=1.0)  # both figures show rates
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="white" if values[i, j] < 0.6 else "black",
                    fontsize=8,
                )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_matrix_png(
    acc: Sequence[Sequence[float | None]], tasks: Sequence[str], path: Path, title: str = "accuracy R[i][j]"
) -> Path:
    values = np.array(
        [[np.nan if v is None else v for v in row] + [np.nan] * (len(tasks) - len(row)) for row in acc], dtype=float
    )
    return _heatmap(
        values,
        [f"after {t}" for t in tasks[: len(acc)]],
        tasks,
        title,
        "evaluated task j",
        "trained through task i",
        path,
    )


def confusion_png(counts: np.ndarray, tasks: Sequence[str], path: Path, title: str = "routing confusion") -> Path:
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    cols = list(tasks) + (["unknown"] if counts.shape[1] > len(tasks) else [])
    return _heatmap(rates, tasks, cols, title, "routed to", "true task", path)
