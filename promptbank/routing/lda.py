"""The LDA router (default): Gaussian routing on the exact pooled within-class covariance."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .base import ROUTERS
from .gaussian import GaussianConfig, GaussianRouter
from .stats import NO_RESIDUAL, principal_factor, symmetric_float32


@dataclass
class LDAConfig(GaussianConfig):
    """:class:`GaussianConfig` with LDA's defaults: class means route better, and the scatter
    factor only serves removal, where it did not earn its bytes."""

    per_class: bool = True
    scatter_rank: int = 0


@ROUTERS.register("lda")
class LDARouter(GaussianRouter):
    """Linear discriminant routing on the *exact* pooled within-class covariance.

    Same model, scores, ``closeness`` and state layout as :class:`GaussianRouter` (a
    Gaussian per class of each task by default, one covariance shared by all, shrunk with
    OAS), but each task adds its full within-class scatter to the shared matrix instead of
    a rank-``scatter_rank`` + diagonal approximation of it. On MiniLM keys that
    approximation cost 2.5-3 routing points on ``offline-9`` (91.9% -> 94.4%) and up to
    1.5 on ``split-20ng``; with the exact matrix this closed-form linear classifier routes
    as well as an RBF-SVM trained on every key (docs/routing.md).

    Adding a task is closed form: accumulate its class means and scatter; the whitening is
    recomputed lazily (one dim x dim eigendecomposition, ~30 ms at 384-d on one core) at
    the next route. Per task the state keeps its class means (6-bit, 850 B per class at
    960-d; ``mean_bits=8``: 1,156 B; ``16``: float16, 1.9 KB) and counts. The shared scatter is saved as the float32 upper triangle of the
    dim x dim matrix (1.8 MB at 960-d) whatever the number of tasks.

    Removal drops the task's means (it can no longer be chosen); its within-class scatter --
    a positive semi-definite spread, with no means or labels -- stays in the shared
    covariance as background, so removal is not exact: on the named streams routing after
    ``remove_task`` agreed with a router rebuilt without the task on 96-99.7% of inputs,
    with the same accuracy (mean change 0.0 to +1.8 points; routing_study.py). A rank-8
    factor of each task's scatter, subtracted on removal (``scatter_rank=8``), moved that
    agreement by 0.1 point or less at 15 KB per task on the
    960-d key, so the default keeps none. Subtracting the diagonal residual too, as
    GaussianRouter does, leaves an indefinite remainder and was measured to wreck routing
    (down to -40 points). Removing every task resets the router exactly.
    """

    strategy = "lda"
    _uses_residual = False  # removal subtracts the low-rank factor only: not saved

    config_class = LDAConfig

    def add_task_blocks(self, task_id: int, blocks: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> None:
        tid, cs = self._new_task_classes(task_id, blocks)
        factor, _ = principal_factor(cs, self.config.scatter_rank)
        stats = self._task_stats(cs, factor, NO_RESIDUAL)  # removal does not use a residual: none kept
        self._tasks[tid] = stats
        self._fold_scatter(cs)
        self._changed(tid, stats, +1)

    def remove_task(self, task_id: int) -> None:
        tid = self._check_known(task_id)
        stats = self._tasks.pop(tid)
        f = stats.factor.astype(np.float64)
        self._scatter = symmetric_float32(self._scatter - float(stats.counts.sum()) * (f.T @ f))
        if not self._tasks:
            self._scatter[:] = 0.0
        self._changed(tid, stats, -1)
