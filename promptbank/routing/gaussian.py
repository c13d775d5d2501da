"""The Gaussian router: per-task (or per-class) means and one shared covariance (LDA)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import faiss
import numpy as np
import torch

from ..errors import BankFormatError, InvalidDataError
from ..keys import check_keys, l2_normalize
from . import faiss_index as fx
from .base import ROUTERS, Router, group_neighbours, pick_rows, rank_candidates, task_margin
from .gaussian_config import LDA_NPROBE, NOVELTY_SCORES, GaussianConfig  # noqa: F401 (re-exported)
from .heap import release_freed_memory
from .mean_codes import MEAN_OUTLIERS, SCALE_DTYPE, checked_means, quantize_means, saved_means
from .stats import (
    NO_RESIDUAL,
    BackgroundMoments,
    ClassRows,
    ClassStats,
    ClassStatsSum,
    TaskStats,
    eigh,
    lda_log_posterior,
    pack_upper,
    principal_factor,
    row_blocks,
    shared_if_empty,
    symmetric_float32,
    unpack_upper,
)

#: Gaussian/LDA routers: with at most this many class means the whitening (one dim x dim
#: eigendecomposition) and the index of whitened means are rebuilt after every change, so
#: routing is exact LDA. Past it a change is applied incrementally (new means whitened
#: with the current whitening, removed ones dropped from the index) and everything is
#: rebuilt once the number of keys has grown or shrunk by ``WHITENING_REFRESH_FACTOR``:
#: amortised O(1) per add instead of O(number of means).
EXACT_WHITENING_MAX_COMPONENTS = 1024
WHITENING_REFRESH_FACTOR = 2.0
#: Gaussian/LDA rebuilds whiten this many means at a time (63 MB of float64 at 960-d).
REBUILD_BLOCK_MEANS = 8192
#: Centred key rows of small tasks (no more keys than dimensions) wait in a buffer and join
#: the shared scatter this many at a time, in one product: adding a 4-key task at 960-d went
#: from 16 ms (a dim x dim matrix formed and added per task) to well under 1 ms.
PENDING_SCATTER_ROWS = 2048
#: The "relative" closeness models the spread of the class means around their centre by its
#: top directions only: exact up to this many + 1 class means, and one query x rank product.
BACKGROUND_RANK = 64


@ROUTERS.register("gaussian")
class GaussianRouter(Router):
    """Linear discriminant routing: per-task (or per-class) means, one shared covariance.

    Score of a task = log of its Gaussian likelihood (classes of a task mixed by their
    frequencies), i.e. -0.5 * squared Mahalanobis distance / temperature; confidences are
    the softmax over the tasks found among the ``search_k`` nearest whitened means.
    The covariance is the pooled within-class scatter of all tasks, shrunk towards a
    scaled identity (``shrinkage``: "oas" picks the amount from the data, or a float in
    [0, 1]). Adding/removing a task adds/subtracts its sufficient statistics; the
    whitening and the FAISS index over whitened means are rebuilt lazily at the next route
    while there are at most ``EXACT_WHITENING_MAX_COMPONENTS`` means (exact LDA). In larger
    banks a change is applied to the index incrementally with the current whitening, which
    is recomputed once the number of keys has doubled or halved, so adds stay amortised
    O(1); a router loaded from its state starts from a fresh whitening. ``index``: "auto"
    (exact Flat up to ``AUTO_FLAT_MAX_VECTORS`` means, then IVF-SQ8 with spherical k-means
    lists) or any FAISS factory spec (L2 over whitened means). ``nprobe``: lists an IVF index
    scans per query (``LDA_NPROBE`` = 8; 4 routed 25% faster at 100k tasks but agreed with
    exact LDA on 0.6 point fewer queries at 1M, BENCHMARKS.md section 2).
    ``closeness`` (what ``unknown_threshold`` cuts; higher = more familiar) depends on
    ``novelty``. "relative" (default) is relative Mahalanobis (Ren et al. 2021): -(squared
    distance to the chosen task's nearest mean - squared distance to a background Gaussian of
    every key) / dim; the background is built from the class means and the shared covariance
    alone (``stats.Background``), so it costs no state. "posterior" is the chosen task's
    posterior at the softer ``novelty_temperature``; "nearest" the distance term alone;
    "margin" the chosen task's log-likelihood less the runner-up task's, / dim (an input that two
    tasks explain about equally well is unfamiliar; needs two tasks or more). On offline-9 at 5%
    false rejects of validation inputs, "margin" flags 86% of a held-out task's inputs and 66-100%
    of far out-of-distribution texts, "relative" 78% and 35-99%, posterior 66%, nearest 25%
    (``scripts/studies/unknown_inputs.py``, docs/routing.md).
    Keys and queries are L2-normalised first (a no-op for KeyEncoder output), which also
    keeps the float16 scatter factors in range.

    Cost: per task, its means (6-bit, ``mean_codes.quantize_means``: 484 B per mean at 384-d;
    8-bit or float16 with ``mean_bits=8`` or ``16``), a ``scatter_rank`` x dim
    float16 factor and a dim float32 residual (~8.4 KB at rank 8, 384-d); shared: the
    upper triangle of the dim x dim scatter in float32 (296 KB at 384-d). The scatter and
    the means are kept in memory at exactly the precision they are saved in, so a loaded
    router routes exactly like the one that saved it. States saved with a full float64
    scatter and float32 means still load.
    """

    strategy = "gaussian"
    #: whether the per-task diagonal residual is part of the state (removal subtracts it)
    _uses_residual: ClassVar[bool] = True

    config_class = GaussianConfig

    def __init__(self, config: GaussianConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self._tasks: dict[int, TaskStats] = {}
        self._scatter_sum = np.zeros((self.dim, self.dim), dtype=np.float32)  # see symmetric_float32
        self._pending: list[np.ndarray] = []  # centred rows not yet in the scatter
        self._pending_rows = 0
        self._cache: dict[str, Any] | None = None
        self._n_keys = 0  # keys and components (class means) of all tasks, kept current
        self._n_comp = 0

    @property
    def _scatter(self) -> np.ndarray:
        """The shared within-class scatter (float32, exactly symmetric), pending rows included."""
        self._fold_pending()
        return self._scatter_sum

    def _fold_pending(self) -> None:
        """Add the buffered centred rows to the shared scatter, in one product."""
        if self._pending:
            rows = np.concatenate(self._pending)
            self._pending, self._pending_rows = [], 0
            self._scatter_sum = symmetric_float32(self._scatter_sum + rows.T @ rows)

    @_scatter.setter
    def _scatter(self, value: np.ndarray) -> None:
        self._pending, self._pending_rows = [], 0
        self._scatter_sum = value

    def _fold_scatter(self, cs: ClassStats) -> None:
        """Add a new task's within-class scatter to the shared one (a small task's centred
        rows wait in the buffer, ``PENDING_SCATTER_ROWS``)."""
        if cs.scatter is not None:
            self._scatter = symmetric_float32(self._scatter + cs.scatter)
            return
        self._pending.append(cs.centred)
        self._pending_rows += len(cs.centred)
        if self._pending_rows >= PENDING_SCATTER_ROWS:
            self._fold_pending()

    def _task_stats(self, cs: ClassStats, factor: np.ndarray, residual: np.ndarray) -> TaskStats:
        means, scale, outliers = quantize_means(cs.means, self.config.mean_bits)
        means = saved_means(means, self.config.mean_bits)  # held as saved: 6-bit codes packed
        return TaskStats(cs.classes, cs.counts, means, *shared_if_empty(factor, residual), scale, outliers)

    def task_ids(self) -> list[int]:
        return list(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def _new_task_classes(
        self, task_id: int, blocks: Iterable[tuple[np.ndarray, np.ndarray | None]]
    ) -> tuple[int, ClassStats]:
        """A new task's id and the class statistics of its unit keys (one class for all keys
        without ``per_class`` or labels), read one block at a time."""
        tid = self._check_new(task_id)
        stats, labelled = ClassStatsSum(self.dim), set()
        for keys, labels in blocks:
            keys = check_keys(keys, self.dim)
            labels = self._check_labels(labels, len(keys))
            labelled.add(labels is not None)
            if len(labelled) > 1:
                raise InvalidDataError("give labels with every block of keys, or with none")
            if not self.config.per_class or labels is None:
                labels = np.full(len(keys), -1, dtype=np.int64)
            stats.add(keys, labels)
        if stats.n == 0:
            raise InvalidDataError("a task needs at least one key; got no blocks of keys")
        return tid, stats.result()

    def add_task(self, task_id: int, keys: np.ndarray, labels: np.ndarray | None = None) -> None:
        keys = check_keys(keys, self.dim)
        self.add_task_blocks(task_id, row_blocks(keys, self._check_labels(labels, len(keys))))

    def add_task_blocks(self, task_id: int, blocks: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> None:
        tid, cs = self._new_task_classes(task_id, blocks)
        factor, variance = principal_factor(cs, self.config.scatter_rank)
        kept = (factor.astype(np.float64) ** 2).sum(axis=0)
        residual = np.clip(variance - kept, 0.0, None).astype(np.float32)
        stats = self._task_stats(cs, factor, residual)
        self._scatter = symmetric_float32(self._scatter + stats.scatter())
        self._tasks[tid] = stats
        self._changed(tid, stats, +1)

    def remove_task(self, task_id: int) -> None:
        tid = self._check_known(task_id)
        stats = self._tasks.pop(tid)
        self._scatter = symmetric_float32(self._scatter - stats.scatter())
        if not self._tasks:
            self._scatter[:] = 0.0  # no float residue once empty
        self._changed(tid, stats, -1)

    def _absorb(self, other: Router, id_map: dict[int, int]) -> None:
        assert isinstance(other, GaussianRouter)
        for tid, stats in other._tasks.items():  # in the other router's order, as a sequential add would
            self._tasks[id_map[tid]] = stats
            self._changed(id_map[tid], stats, +1)
        self._scatter = symmetric_float32(self._scatter.astype(np.float64) + other._scatter)

    def _changed(self, tid: int, stats: TaskStats, sign: int) -> None:
        """Book-keeping after ``tid`` was added (+1) or removed (-1)."""
        self._n_keys += sign * int(stats.counts.sum())
        self._n_comp += sign * len(stats.counts)
        if self._cache is not None and self._tasks:
            self._cache["dirty"].add(tid)
        else:
            self._cache = None

    def covariance(self) -> np.ndarray:
        """The shared, shrunk covariance the router whitens with (float64, dim x dim)."""
        n = sum(int(s.counts.sum()) for s in self._tasks.values())
        m = sum(len(s.counts) for s in self._tasks.values())
        dof = max(n - m, 1)
        s = self._scatter.astype(np.float64) / dof
        tr = float(np.trace(s))
        if tr <= 0:
            return np.eye(self.dim)
        p = self.dim
        mu = tr / p
        if self.config.shrinkage == "oas":  # Chen et al. 2010, oracle approximating shrinkage
            tr2 = float((s * s).sum())
            den = (dof + 1 - 2 / p) * (tr2 - tr * tr / p)
            rho = 1.0 if den <= 0 else min(1.0, ((1 - 2 / p) * tr2 + tr * tr) / den)
        else:
            rho = float(self.config.shrinkage)
        cov = (1 - rho) * s
        cov[np.diag_indices_from(cov)] += rho * mu
        return cov

    def _prepared(self) -> dict[str, Any]:
        """Whitening + index of whitened means, brought up to date with the tasks."""
        c = self._cache
        if c is not None and not c["dirty"]:
            return c
        if c is None or self._refresh_due(c):
            self._cache = c = None  # free the old index before the new one is built
            return self._rebuild()
        added = []
        for tid in sorted(c["dirty"]):  # incremental: the whitening stays as it is
            old = c["serials"].pop(tid, None)
            if old is not None:
                c["index"].remove_ids(faiss.IDSelectorRange(old.start, old.stop))
                c["comp_task"][old] = -1
            if tid in self._tasks:
                added.append((tid, self._tasks[tid]))
        self._index_tasks(c, added)
        c["dirty"].clear()
        return c

    def _refresh_due(self, c: dict[str, Any]) -> bool:
        f = WHITENING_REFRESH_FACTOR
        return (
            self._n_comp <= EXACT_WHITENING_MAX_COMPONENTS
            or self._n_keys >= f * c["keys_at"]
            or self._n_keys * f <= c["keys_at"]
        )

    def _rebuild(self) -> dict[str, Any]:
        """Whitening from the current scatter, and a new index of every whitened mean.

        The means are whitened a block of tasks at a time (and, to train an IVF index, a
        sample of them), so the transient memory is one block, not a float32 copy of every
        mean: at 1M tasks x 960-d that copy alone would be 3.8 GB."""
        vals, vecs = eigh(self.covariance())
        whiten = vecs / np.sqrt(np.maximum(vals, vals.max() * 1e-9))
        items = list(self._tasks.items())
        sizes = np.array([len(s.counts) for _, s in items], dtype=np.int64)
        ends = np.cumsum(sizes)
        n = int(ends[-1]) if len(ends) else 0

        def white_of(means: list[np.ndarray]) -> np.ndarray:
            """Whitened rows of ``means`` (float64 products, float32 result)."""
            return (np.concatenate(means).astype(np.float64) @ whiten).astype(np.float32)

        def whitened(rows: np.ndarray) -> np.ndarray:
            """Whitened means of the (sorted) global rows ``rows``, a block at a time."""
            owner = np.searchsorted(ends, rows, side="right")
            out = np.empty((len(rows), self.dim), np.float32)
            for lo in range(0, len(rows), REBUILD_BLOCK_MEANS):
                hi = min(len(rows), lo + REBUILD_BLOCK_MEANS)
                out[lo:hi] = white_of(
                    [
                        items[o][1].float_means()[r - (ends[o] - sizes[o])][None]
                        for o, r in zip(owner[lo:hi], rows[lo:hi])
                    ]
                )
            return out

        c: dict[str, Any] = {
            "whiten": whiten.astype(np.float32),
            "index": self._new_index(n, whitened),
            "comp_task": np.full(max(n, 16), -1, np.int64),
            "comp_logw": np.zeros(max(n, 16)),
            "serials": {},
            "next": 0,
            "max_classes": 1,
            "keys_at": self._n_keys,
            "dirty": set(),
        }
        block: list[tuple[int, TaskStats]] = []
        held = 0
        moments = BackgroundMoments(self.dim) if self.config.novelty == "relative" else None
        for i, item in enumerate(items):
            block.append(item)
            held += len(item[1].counts)
            if held >= REBUILD_BLOCK_MEANS or i + 1 == len(items):
                white = white_of([s.float_means() for _, s in block])
                if moments is not None:
                    moments.add(white, np.concatenate([s.counts for _, s in block]))
                self._index_tasks(c, block, white)
                block, held = [], 0
        if moments is not None:
            c["background"] = moments.background(BACKGROUND_RANK)
        if n > EXACT_WHITENING_MAX_COMPONENTS:  # rare (the keys doubled or halved): worth a trim
            fx.compact_lists(c["index"])
            release_freed_memory()
        self._cache = c
        return c

    def _new_index(self, n: int, whitened: Callable[[np.ndarray], np.ndarray]) -> Any:
        """Empty L2 index with int64 ids for ``n`` whitened means (``faiss_index.mean_index``)."""
        return fx.mean_index(self.dim, self.config.index, n, whitened)

    def _index_tasks(
        self, c: dict[str, Any], block: list[tuple[int, TaskStats]], white: np.ndarray | None = None
    ) -> None:
        """Register ``block``'s means in the cache and add them to the index in one call
        (``white``: already whitened, in block order; else whitened here)."""
        if not block:
            return
        if white is None:
            white = np.concatenate([s.float_means() for _, s in block]) @ c["whiten"]  # float32
        first = c["next"]
        for tid, stats in block:
            k = len(stats.counts)
            serials = slice(c["next"], c["next"] + k)  # its index ids (a slice: no array per task)
            c["next"] += k
            if c["next"] > len(c["comp_task"]):  # amortised growth
                size = max(c["next"], 2 * len(c["comp_task"]))
                c["comp_task"] = np.concatenate([c["comp_task"], np.full(size - len(c["comp_task"]), -1)])
                c["comp_logw"] = np.concatenate([c["comp_logw"], np.zeros(size - len(c["comp_logw"]))])
            c["comp_task"][serials] = tid
            c["comp_logw"][serials] = np.log(stats.counts / stats.counts.sum())
            c["serials"][tid] = serials
            c["max_classes"] = max(c["max_classes"], k)
        ids = np.arange(first, c["next"], dtype=np.int64)
        c["index"].add_with_ids(np.ascontiguousarray(white, dtype=np.float32), ids)

    def _candidates(self, queries: np.ndarray, top: int) -> tuple[np.ndarray, ...]:
        c = self._prepared()
        n = len(queries)
        # torch, like the coarse step in fx.search: one thread pool for the route's matrix
        # products (numpy's BLAS pool next to torch's doubled the route's time on 2 cores)
        z = (torch.from_numpy(l2_normalize(queries)) @ torch.from_numpy(c["whiten"])).numpy()
        k = min(c["index"].ntotal, max(self.config.search_k, top * c["max_classes"]))
        ivf = faiss.try_extract_index_ivf(c["index"])
        if ivf is not None:
            ivf.nprobe = min(ivf.nlist, self.config.nprobe)
        dist, comp = fx.search(c["index"], z, k, c.setdefault("memo", {}))
        ok = comp >= 0
        tasks = np.where(ok, c["comp_task"][np.maximum(comp, 0)], -1)
        dist = np.maximum(dist.astype(np.float64), 0.0)
        logw = c["comp_logw"][np.maximum(comp, 0)]
        order, starts, seg_row, seg_task = group_neighbours(tasks)
        if len(starts) == 0:
            return (np.full((n, top), -1, np.int64), np.zeros((n, top)), np.full(n, -np.inf))
        seg_of = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(order))))

        def task_posterior(temperature: float) -> tuple[np.ndarray, np.ndarray]:
            """Per (row, task) segment: log-likelihood and posterior over the row's tasks."""
            lf = np.where(ok, -0.5 * dist / temperature + logw, -np.inf).ravel()[order]
            seg_max = np.maximum.reduceat(lf, starts)
            task_logit = seg_max + np.log(np.add.reduceat(np.exp(lf - seg_max[seg_of]), starts))
            row_max = np.full(n, -np.inf)
            np.maximum.at(row_max, seg_row, task_logit)
            p = np.exp(task_logit - row_max[seg_row])
            return task_logit, p / np.bincount(seg_row, weights=p, minlength=n)[seg_row]

        task_logit, prob = task_posterior(self.config.temperature)
        near = np.maximum.reduceat(-dist.ravel()[order], starts) / self.dim
        chosen = rank_candidates(n, seg_row, task_logit, near, top)
        cand = np.where(chosen >= 0, seg_task[np.maximum(chosen, 0)], -1)
        if self.config.novelty == "margin":
            terms = np.where(ok, -0.5 * dist / self.config.temperature + logw, np.inf)
            return cand, pick_rows(prob, chosen, 0.0), task_margin(seg_row, task_logit, near, terms) / self.dim
        if self.config.novelty == "posterior":
            familiar = task_posterior(self.config.novelty_temperature)[1]
        else:
            familiar = near
        closeness = pick_rows(familiar, chosen[:, :1], -np.inf)[:, 0]
        if self.config.novelty == "relative":
            closeness = closeness + c["background"].squared_distance(z) / self.dim
        return cand, pick_rows(prob, chosen, 0.0), closeness

    def class_log_posterior(
        self, queries: np.ndarray, task_id: int, held_in: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """LDA's answer *within* one task: each query's log posterior over the task's classes.

        The router already holds what a linear discriminant classifier of the task's labels
        needs (class means, class counts, the shared covariance), so this answer costs no
        storage; the bank weighs it against its module's label scores.

        Args:
            queries: (n, dim) keys.
            task_id: a task added with labelled keys (``per_class``).
            held_in: for queries whose keys the router learnt from, their labels: each is then
                measured against its own class's mean *without* itself (leave-one-out), or a
                class of few keys looks closer than it is to an input it never saw.

        Returns:
            The task's class labels (C,) and the (n, C) float64 log posteriors (rows sum to 1
            after ``exp``), at temperature 1.
        """
        stats = self._tasks[self._check_known(task_id)]
        whiten = torch.from_numpy(self._prepared()["whiten"])
        z = (torch.from_numpy(l2_normalize(check_keys(queries, self.dim))) @ whiten).double()
        means = (torch.from_numpy(stats.float_means()) @ whiten).double()
        position = {int(label): i for i, label in enumerate(stats.labels)}
        own = None if held_in is None else np.array([position[int(y)] for y in held_in])
        return stats.labels.copy(), lda_log_posterior(z, means, stats.counts, own)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config = {
            **self.config_state(),
            "tasks": [[tid, len(s.counts)] for tid, s in self._tasks.items()],
        }
        stats = list(self._tasks.values())
        d, r = self.dim, self.config.scatter_rank

        def join(field: str, empty_shape: tuple[int, ...], dtype: Any, stack: bool) -> np.ndarray:
            if not stats:
                return np.zeros(empty_shape, dtype)
            parts = [getattr(s, field) for s in stats]
            return np.stack(parts) if stack else np.concatenate(parts)

        bits = self.config.mean_bits
        none = saved_means(np.zeros((0, d), np.float16 if bits == 16 else np.int8), bits)  # the empty form
        arrays = {
            "comp_label": join("labels", (0,), np.int64, stack=False),
            "comp_count": join("counts", (0,), np.int64, stack=False),
            "comp_mean": join("means", none.shape, none.dtype, stack=False),  # held as saved
            "task_factor": join("factor", (0, r, d), np.float16, stack=True),
            "scatter_packed": pack_upper(self._scatter),
        }
        if bits != 16:
            arrays["comp_mean_scale"] = join("scale", (0, 1 + MEAN_OUTLIERS), SCALE_DTYPE[bits], stack=False)
            arrays["comp_mean_outlier"] = join("outliers", (0, MEAN_OUTLIERS), np.int16, stack=False)
        if self._uses_residual:
            arrays["task_residual"] = join("residual", (0, d), np.float32, stack=True)
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> GaussianRouter:
        # states saved before the novelty option had thresholds on the nearest-mean closeness
        # ... and 16-bit means
        router = cls(cls.config_class.from_state(config, novelty="nearest", mean_bits=16))
        try:
            start = 0
            residuals = arrays.get("task_residual")
            coded = router.config.mean_bits != 16
            scales = arrays["comp_mean_scale"] if coded else None
            outliers = arrays["comp_mean_outlier"] if coded else None
            means = checked_means(arrays["comp_mean"], router.config.mean_bits, router.dim)
            rows = ClassRows(
                labels=np.asarray(arrays["comp_label"], np.int64),
                counts=np.asarray(arrays["comp_count"], np.int64),
                means=np.asarray(means),  # as saved: packed 6-bit, int8, float16 (float32 if saved so)
                scale=None if scales is None else np.asarray(scales, SCALE_DTYPE[router.config.mean_bits]),
                outliers=None if outliers is None else np.asarray(outliers, np.int16),
            )
            for i, (tid, n_comp) in enumerate(config["tasks"]):
                factor, residual = shared_if_empty(
                    np.asarray(arrays["task_factor"][i], np.float16),
                    NO_RESIDUAL if residuals is None else np.asarray(residuals[i], np.float32),
                )
                router._tasks[int(tid)] = TaskStats.of_rows(rows, start, start + int(n_comp), factor, residual)
                start += int(n_comp)
            if residuals is None and router._uses_residual:
                raise KeyError("task_residual")
            router._n_keys, router._n_comp = int(rows.counts[:start].sum()), start
            if "scatter_packed" in arrays:
                router._scatter = unpack_upper(np.asarray(arrays["scatter_packed"]), router.dim)
            else:  # saved before the packed float32 layout: a full float64 matrix
                router._scatter = np.array(arrays["scatter"], dtype=np.float64)
        except (KeyError, IndexError) as exc:
            raise BankFormatError(f"Gaussian router state is incomplete: {exc}") from None
        columns = (rows.labels, rows.means, rows.scale, rows.outliers)
        if router._scatter.shape != (router.dim, router.dim) or any(
            a is not None and len(a) != start for a in (rows.counts, *columns)
        ):
            raise BankFormatError("Gaussian router arrays do not match its config")
        return router
