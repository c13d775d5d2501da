"""Continual-learning metrics from an accuracy matrix, with Avalanche's definitions.

R[i][j] is the accuracy on task j after training task i (j <= i). Forgetting and BWT use
Avalanche's standalone ``Forgetting`` / ``BWT`` metrics: the first value of a task is the one
measured right after training it, the last is after the final task.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from avalanche.evaluation.metrics.forgetting_bwt import BWT, Forgetting


def _avalanche(metric_cls: type, acc_matrix: Sequence[Sequence[float | None]]) -> dict[int, float]:
    metric = metric_cls()
    last = len(acc_matrix) - 1
    for j in range(last):
        metric.update(j, acc_matrix[j][j], initial=True)
        metric.update(j, acc_matrix[last][j])
    return metric.result()


def continual_metrics(acc_matrix: Sequence[Sequence[float | None]]) -> dict[str, float | list[float]]:
    """Average accuracy after the last task, BWT and forgetting (means over tasks j < T)."""
    if not acc_matrix:
        raise ValueError("empty accuracy matrix")
    final = [a for a in acc_matrix[-1] if a is not None]
    forgetting = _avalanche(Forgetting, acc_matrix)
    bwt = _avalanche(BWT, acc_matrix)
    keys = sorted(forgetting)
    return {
        "avg_acc": float(np.mean(final)),
        "bwt": float(np.mean([bwt[k] for k in keys])) if keys else 0.0,
        "forgetting": float(np.mean([forgetting[k] for k in keys])) if keys else 0.0,
        "forgetting_per_task": [float(forgetting[k]) for k in keys],
    }


def confusion_matrix(true: Sequence[int], pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts (true, predicted); predicted -1 (unknown) goes to an extra last column."""
    out = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
    for t, p in zip(true, pred):
        out[int(t), int(p) if p >= 0 else n_classes] += 1
    return out
