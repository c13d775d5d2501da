"""The k-NN vote router: a FAISS inner-product index over a few summary keys per task."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from ..errors import BankFormatError, InvalidDataError
from ..keys import check_keys, l2_normalize, summarize_keys
from . import faiss_index as fx
from .base import (
    MAX_KEYS_PER_TASK,
    ROUTERS,
    TASK_SHIFT,
    Router,
    RouterConfig,
    group_neighbours,
    pick_rows,
    rank_candidates,
)
from .faiss_index import (
    AUTO_FLAT_MAX_VECTORS,
    HNSW_MIN_EF_SEARCH,
    TRAIN_SAMPLE_MAX,
    auto_large_spec,
)

#: ``index="auto"``: once the compressed index holds this many times the vectors it was
#: trained at, it is retrained with the number of lists ``auto_large_spec`` gives for its
#: new size (geometric growth, so the retraining is amortised O(1) per add; it stops once
#: the list count reaches ``AUTO_MAX_NLIST``).
AUTO_REGROW_FACTOR = 2
#: Most neighbours one KNN query asks for (bounds the candidate search with "all" keys).
MAX_SEARCH = 256


@dataclass
class KNNConfig(RouterConfig):
    """Options of the k-NN vote router.

    Args:
        k: neighbours that vote.
        summary: what a task stores: "kmeans" centroids, its "mean", or "all" keys.
        n_centroids: centroids per task (per class with ``per_class``) for "kmeans".
        per_class: summarise each class of a task on its own.
        temperature: vote weight exp((s - s_best) / temperature); -> 0 is 1-NN.
        index: "auto" or any FAISS factory spec ("Flat", "IVF1024,SQ8", "HNSW32", ...).
        nprobe: IVF lists scanned per query.
        seed: k-means seed.
    """

    k: int = 10
    summary: str = "kmeans"
    n_centroids: int = 8
    per_class: bool = False
    temperature: float = 0.1
    index: str = "auto"
    nprobe: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1 or self.n_centroids < 1 or self.nprobe < 1:
            raise InvalidDataError("k, n_centroids and nprobe must all be >= 1")
        if not self.temperature > 0:
            raise InvalidDataError(f"temperature must be > 0, got {self.temperature}")
        if self.summary not in ("kmeans", "mean", "all"):
            raise InvalidDataError(f"unknown summary '{self.summary}'; choose kmeans, mean or all")
        self.k, self.n_centroids, self.nprobe, self.seed = (
            int(self.k),
            int(self.n_centroids),
            int(self.nprobe),
            int(self.seed),
        )
        self.per_class, self.temperature, self.index = bool(self.per_class), float(self.temperature), str(self.index)


@ROUTERS.register("knn")
class KNNRouter(Router):
    """Baseline: the k nearest summary keys vote for their task, weighted by similarity.

    Keys are summarised per task (``summary``: "kmeans" with ``n_centroids`` centroids,
    "mean", or "all"), L2-normalised and stored float32 in a FAISS inner-product index
    whose ids encode the task (``task_id << 20 | j``), so no side table maps ids to tasks.

    Vote weight of a neighbour with similarity s is exp((s - s_best) / temperature):
    temperature -> 0 is 1-NN, large temperature is a plain majority vote.
    ``closeness`` is the best cosine similarity to the chosen task's keys.

    Index: ``index="auto"`` keeps an exact Flat index up to ``AUTO_FLAT_MAX_VECTORS``
    vectors, then converts to IVF-SQ8 (``auto_large_spec``) trained on what it holds, and
    retrains it with more lists each time it has grown ``AUTO_REGROW_FACTOR``-fold. Any
    FAISS factory spec also works ("Flat", "IVF1024,SQ8", "IVF1024,PQ48", "HNSW32", ...).
    Specs that need training collect vectors in an exact Flat index until they have enough
    to train on (39 per IVF list and per PQ centroid), then move to the trained index.
    Each move trains FAISS k-means inside the ``add_task`` call that crosses the line, on
    up to twice the minimum training set: one-offs of ~5 s at the 50k-vector switch (1,024
    lists), 1.5-3 minutes at 200k vectors (4,096 lists) on one loaded core, and 12 minutes
    at 3.2M vectors (16,384 lists, the last regrowth; two contended cores), against
    ~0.1-2 ms for an ordinary add. Pass an explicit spec to avoid the regrowths.
    Removal uses ``remove_ids`` (IVF: a scan of the lists, ~1 ms at 400k vectors). HNSW
    has no removal: the graph is rebuilt without the task, O(size of index) (12 s at 40k
    vectors); its recall on clustered keys also falls as the bank grows (BENCHMARKS.md),
    so ``auto`` never picks it.
    """

    strategy = "knn"

    config_class = KNNConfig

    def __init__(self, config: KNNConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        if self.config.index != "auto":
            fx.make_index(self.config.index, self.dim)  # fail now on a bad spec, not at the first add
        self._index: Any = None
        self._spec: str | None = None  # spec of self._index
        self._target: str | None = None  # spec still waiting for enough training vectors
        self._target_need: int | None = None  # vectors _target needs to train (computed once)
        self._trained_at = 0  # vectors held when the current trained index was built
        self._counts: dict[int, int] = {}  # task id -> number of stored keys
        self._memo: dict[str, Any] = {}  # coarse centroids of the IVF index in use

    def task_ids(self) -> list[int]:
        return list(self._counts)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._counts

    def __len__(self) -> int:
        return len(self._counts)

    @property
    def ntotal(self) -> int:
        """Vectors currently in the index."""
        return 0 if self._index is None else int(self._index.ntotal)

    def summarize(self, keys: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """The unit-norm vectors this router would store for a task with these keys."""
        keys = check_keys(keys, self.dim)
        if not (self.config.per_class and labels is not None):
            return summarize_keys(keys, self.config.summary, self.config.n_centroids, self.config.seed)
        classes = np.unique(labels)
        per = max(1, math.ceil(self.config.n_centroids / len(classes)))
        return np.concatenate(
            [summarize_keys(keys[labels == c], self.config.summary, per, self.config.seed) for c in classes]
        )

    def add_task(self, task_id: int, keys: np.ndarray, labels: np.ndarray | None = None) -> None:
        tid = self._check_new(task_id)
        keys = check_keys(keys, self.dim)
        vecs = self.summarize(keys, self._check_labels(labels, len(keys)))
        if len(vecs) > MAX_KEYS_PER_TASK:
            raise InvalidDataError(
                f"a task can store at most {MAX_KEYS_PER_TASK} keys, got {len(vecs)}; use summary='kmeans'"
            )
        if self._index is None:
            self._start_index()
        ids = (np.int64(tid) << TASK_SHIFT) | np.arange(len(vecs), dtype=np.int64)
        self._index.add_with_ids(vecs, ids)
        self._counts[tid] = len(vecs)
        self._maybe_grow()

    def _start_index(self) -> None:
        spec = self.config.index
        if spec == "auto":
            self._index, self._spec = fx.make_index("Flat", self.dim), "Flat"
            self._set_target(None)
            return
        index = fx.make_index(spec, self.dim)
        if index.is_trained:
            self._index, self._spec = index, spec
            self._set_target(None)
        else:  # collect exactly until there is enough to train on
            self._index, self._spec = fx.make_index("Flat", self.dim), "Flat"
            self._set_target(spec, probe=index)

    def _set_target(self, spec: str | None, probe: Any = None) -> None:
        """Aim at ``spec``; its training-set size is computed here, once, not per add."""
        self._target, self._target_need = spec, None
        if spec is not None:
            self._target_need = fx.train_size(probe if probe is not None else fx.make_index(spec, self.dim))

    def _maybe_grow(self) -> None:
        """Move to the trained/compressed index once there are enough vectors for it."""
        if self._target is None and self.config.index == "auto":
            if self._spec == "Flat":
                if self.ntotal > AUTO_FLAT_MAX_VECTORS:
                    self._set_target(auto_large_spec(self.ntotal, self.dim))
            elif self.ntotal >= AUTO_REGROW_FACTOR * max(self._trained_at, 1):
                spec = auto_large_spec(self.ntotal, self.dim)
                if spec != self._spec:
                    self._set_target(spec)
                else:  # no more lists to gain yet: look again after the next growth step
                    self._trained_at = self.ntotal
        if self._target is None:
            return
        if self._target_need is None:
            self._set_target(self._target)
        if self.ntotal < self._target_need:
            return
        target = fx.make_index(self._target, self.dim)
        total = self.ntotal
        need = self._target_need  # k-means time grows with the sample: see TRAIN_SAMPLE_MAX
        cap = max(need, min(2 * need, TRAIN_SAMPLE_MAX))
        rng = np.random.default_rng(self.config.seed)
        picked = np.sort(rng.choice(total, cap, replace=False)) if total > cap else None
        parts, seen = [], 0
        for _, vecs in fx.chunks(self._index):  # training sample, without holding everything
            if picked is None:
                parts.append(vecs)
            else:
                lo, hi = np.searchsorted(picked, [seen, seen + len(vecs)])
                parts.append(vecs[picked[lo:hi] - seen])
            seen += len(vecs)
        target.train(np.ascontiguousarray(np.concatenate(parts)))
        del parts
        for ids, vecs in fx.chunks(self._index):
            target.add_with_ids(vecs, ids)
        self._index, self._spec, self._trained_at = target, self._target, total
        self._set_target(None)

    def remove_task(self, task_id: int) -> None:
        tid = self._check_known(task_id)
        sel = faiss.IDSelectorRange(tid << TASK_SHIFT, (tid + 1) << TASK_SHIFT)
        try:
            removed = self._index.remove_ids(sel)
        except RuntimeError:  # e.g. HNSW: no removal, rebuild without the task
            ids, vecs = fx.dump(self._index)
            keep = (ids >> TASK_SHIFT) != tid
            self._index = fx.make_index(self._spec, self.dim)
            self._index.add_with_ids(vecs[keep], ids[keep])
            removed = int((~keep).sum())
        if removed != self._counts[tid]:
            raise BankFormatError(
                f"router index held {removed} keys of task {tid}, expected {self._counts[tid]}; "
                "the index is out of sync with its task table: rebuild the router"
            )
        del self._counts[tid]

    def _absorb(self, other: Router, id_map: dict[int, int]) -> None:
        assert isinstance(other, KNNRouter)
        if other._index is None:
            return
        if self._index is None:
            self._start_index()
        low = (1 << TASK_SHIFT) - 1
        for ids, vecs in fx.chunks(other._index):  # decoded: exact for Flat, the stored codes for SQ/PQ
            new = np.array([id_map[int(t)] for t in ids >> TASK_SHIFT], np.int64) << TASK_SHIFT | (ids & low)
            self._index.add_with_ids(np.ascontiguousarray(vecs), new)
        for tid, n in other._counts.items():
            self._counts[id_map[tid]] = n
        self._maybe_grow()

    def _tune_search(self, k: int) -> None:
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None:
            ivf.nprobe = min(self.config.nprobe, ivf.nlist)
        inner = faiss.downcast_index(self._index.index) if hasattr(self._index, "id_map") else None
        if inner is not None and hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = max(inner.hnsw.efSearch, HNSW_MIN_EF_SEARCH, 2 * k)

    def _candidates(self, queries: np.ndarray, top: int) -> tuple[np.ndarray, ...]:
        q = l2_normalize(queries)
        n = len(q)
        most_keys = max(self._counts.values())
        k_search = min(self.ntotal, MAX_SEARCH, max(self.config.k, self.config.k + (top - 1) * most_keys))
        self._tune_search(k_search)
        sims, ids = fx.search(self._index, np.ascontiguousarray(q, dtype=np.float32), k_search, self._memo)
        tasks = np.where(ids >= 0, ids >> TASK_SHIFT, -1)
        sims = sims.astype(np.float64)
        # Only the k nearest vote; farther neighbours just supply extra candidates (vote 0).
        weight = np.exp((sims - sims[:, :1]) / self.config.temperature)
        weight[:, self.config.k :] = 0.0
        weight[tasks < 0] = 0.0
        order, starts, seg_row, seg_task = group_neighbours(tasks)
        if len(starts) == 0:
            return (np.full((n, top), -1, np.int64), np.zeros((n, top)), np.full(n, -np.inf))
        vote = np.add.reduceat(weight.ravel()[order], starts)
        best_sim = np.maximum.reduceat(sims.ravel()[order], starts)
        total = np.bincount(seg_row, weights=vote, minlength=n)
        share = vote / np.maximum(total[seg_row], 1e-300)
        chosen = rank_candidates(n, seg_row, vote, best_sim, top)
        cand = np.where(chosen >= 0, seg_task[np.maximum(chosen, 0)], -1)
        return cand, pick_rows(share, chosen, 0.0), pick_rows(best_sim, chosen[:, :1], -np.inf)[:, 0]

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config = {
            **self.config_state(),
            "index_spec": self._spec,
            "target_spec": self._target,
            "trained_at": self._trained_at,
            "tasks": [[tid, n] for tid, n in self._counts.items()],
        }
        arrays: dict[str, np.ndarray] = {}
        if self._index is not None:
            arrays["index"] = faiss.serialize_index(self._index)
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> KNNRouter:
        router = cls(KNNConfig.from_state(config))
        router._counts = {int(t): int(n) for t, n in config["tasks"]}
        router._spec, router._target = config.get("index_spec"), config.get("target_spec")
        if "index" in arrays:
            router._index = faiss.deserialize_index(np.ascontiguousarray(arrays["index"], np.uint8))
            if router._index.d != router.dim:
                raise BankFormatError(f"router index has dimension {router._index.d}, config says {router.dim}")
        held = sum(router._counts.values())
        # banks saved before "trained_at" existed: count from the size at load
        router._trained_at = int(config.get("trained_at", router.ntotal if router._spec != "Flat" else 0))
        if router.ntotal != held:
            raise BankFormatError(
                f"router index holds {router.ntotal} keys but its task table lists {held}; "
                "the bank's router files are damaged or from different saves"
            )
        return router
