"""Route each input to a task by its key, with tasks that can be added and removed.

Routing mistakes are the only source of forgetting in promptbank, so two strategies are
kept side by side behind one interface:

* ``KNNRouter`` (baseline): a FAISS inner-product index over a few summary keys per task
  (k-means centroids by default); the k nearest keys vote, weighted by similarity.
* ``GaussianRouter``: one Gaussian per task (or per task class) with a covariance shared
  by all tasks; the score is the Mahalanobis distance, i.e. linear discriminant analysis.

Every input is routed on its own. ``Routing.closeness`` says how near an input is to its
chosen task in the strategy's own units; below ``unknown_threshold`` the input gets -1.

State is a JSON-able config plus named numeric arrays (a FAISS index travels as its
serialised bytes), never pickle, so a bank can store it in safetensors.
"""

from __future__ import annotations

import functools
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import faiss
import numpy as np
import torch

from .errors import BankFormatError, InvalidDataError, TaskExistsError, UnknownTaskError
from .keys import check_keys, l2_normalize, summarize_keys

#: A FAISS id is ``task_id << TASK_SHIFT | j``: the task is read back from the id itself.
TASK_SHIFT = 20
MAX_KEYS_PER_TASK = 1 << TASK_SHIFT
MAX_TASK_ID = (1 << (63 - TASK_SHIFT)) - 1

#: ``index="auto"``: exact Flat search while the index holds at most this many vectors
#: (77 MB of float32 at 384-d, ~6k tasks at 8 keys); past it the index is rebuilt as
#: IVF with 8-bit scalar quantisation (``AUTO_LARGE_SPEC``), trained on the vectors held
#: at that moment. BENCHMARKS.md section 2: at 40k vectors IVF-SQ8 agreed with exact
#: search on 99.8% of queries at 1/38 of Flat's batched time; IVF-PQ48 on only 88.7%.
AUTO_FLAT_MAX_VECTORS = 50_000
AUTO_LARGE_SPEC = "IVF{nlist},SQ8"
#: Lists of the auto IVF index: ~``AUTO_LISTS_PER_SQRT`` * sqrt(vectors), a power of two,
#: at most ``AUTO_MAX_NLIST``. At 400k clustered keys 4,096 lists agreed with exact
#: search on 99.2% of queries at nprobe 8, 2,048 lists on 95.6% (and were slower at the
#: same agreement). At 4M synthetic keys in 62,500 domains (1M tasks) 4,096 lists agreed on
#: only 42%, hence the higher cap (BENCHMARKS.md section 2). Training costs ~sample x lists:
#: k-means trains on twice the minimum sample but on at most ``TRAIN_SAMPLE_MAX`` vectors
#: unless the minimum (39 per list) needs more: 16,384 lists then train on 39 points per list,
#: not 78, and take ~5 minutes on two cores, once, at ~3M vectors.
AUTO_LISTS_PER_SQRT = 8
AUTO_MAX_NLIST = 16384
#: The LDA router's index of whitened means: lists of ~24 means at the next refresh, at most
#: this many. The cap was 4,096 until 2026-11-30: at 1M tasks (384-d) its lists held 244
#: means each and agreed with exact LDA on 39.8% of queries; with 65,536 lists of ~15 means,
#: on 96.0% (true task 0.910 vs 0.944 exact; BENCHMARKS.md section 2).
LDA_MAX_NLIST = 65536
#: Past this many lists the LDA index trains *two-level* spherical k-means (faiss.contrib:
#: sqrt(nlist) clusters, each split in proportion to its size), ~sqrt(nlist)/2 times
#: cheaper than flat k-means: 65,536 lists over 1M means took 20 s, where flat k-means for
#: 16,384 lists on 320k means took 164 s. Up to it, flat k-means, which agreed better with
#: coarse lists (4,096 lists at 1M tasks: 41% vs 30%; at 100k tasks, 960-d: 100% vs 99.9%).
LDA_FLAT_KMEANS_MAX_NLIST = 4096
#: Lists the LDA router scans per query. Its auto IVF trains spherical k-means, whose lists
#: come out even (at 100k synthetic tasks the largest held 80 means, not 403), so 8 lists
#: suffice: 99.4-99.7% / 100% agreement with exact LDA at 384 / 960 dims (BENCHMARKS.md section 2).
LDA_NPROBE = 8
#: ``index="auto"``: once the compressed index holds this many times the vectors it was
#: trained at, it is retrained with the number of lists ``auto_large_spec`` gives for its
#: new size (geometric growth, so the retraining is amortised O(1) per add; it stops once
#: the list count reaches ``AUTO_MAX_NLIST``).
AUTO_REGROW_FACTOR = 2
#: HNSW indexes search with at least this efSearch (FAISS' default, 16, found the exact
#: task for 39% of queries at 400k clustered keys; 128 for 79%).
HNSW_MIN_EF_SEARCH = 128
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
#: Gaussian/LDA ``add_task`` centres and multiplies a task's keys this many rows at a time
#: (7.9 MB of float64 at 960-d), and ``add_task_blocks`` takes them a block at a time, so its
#: memory does not grow with the task: for a 20newsgroups-sized task (11,267 keys, 960-d)
#: numpy's peak inside add_task went from 248 to 30 MiB (BENCHMARKS.md, slow path 20).
STATS_BLOCK_ROWS = 1024
#: Largest (queries x lists) coarse-score matrix one search builds (64 MB of float32):
#: 4,096 queries at 4,096 lists, 256 at 65,536. Every chunk reads the whole centroid matrix
#: (100 MB at 65,536 x 384), so smaller chunks cost time: at 1M tasks, one thread, a batch
#: of 256 took 775 us/query in one chunk, 996 in four, 2,198 in sixteen.
COARSE_SCORES_MAX = 1 << 24
#: Queries from which FAISS computes exhaustive distances with BLAS (see ``_blas_search``).
BLAS_MIN_QUERIES = 20
#: Most neighbours one KNN query asks for (bounds the candidate search with "all" keys).
MAX_SEARCH = 256
#: FAISS warns below this many training points per IVF list / PQ centroid.
MIN_POINTS_PER_CENTROID = 39
#: Largest k-means sample unless the minimum needs more (see AUTO_LISTS_PER_SQRT).
TRAIN_SAMPLE_MAX = 2 * MIN_POINTS_PER_CENTROID * 4096


@dataclass
class Routing:
    """Per-input routing decision plus the best few candidate tasks, best first.

    ``scores`` and ``candidate_scores`` are confidences in [0, 1] (share of the vote for
    k-NN, posterior probability for Gaussian). ``closeness`` measures distance to the
    chosen candidate in the strategy's own units and is what ``unknown_threshold`` tests.
    Missing candidates are -1 with score 0. Unknown inputs keep their candidates so a
    caller can still re-score them.
    """

    task_ids: np.ndarray  # (N,) int64, -1 = unknown
    scores: np.ndarray  # (N,) float32
    candidates: np.ndarray  # (N, top) int64
    candidate_scores: np.ndarray  # (N, top) float32
    closeness: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.task_ids)


class Router(ABC):
    """Task-key router: add/remove tasks, route inputs, export state as arrays."""

    strategy: ClassVar[str]

    def __init__(self, dim: int, unknown_threshold: float | None = None) -> None:
        if int(dim) < 1:
            raise InvalidDataError(f"key dimension must be >= 1, got {dim}")
        self.dim = int(dim)
        self.unknown_threshold = None if unknown_threshold is None else float(unknown_threshold)

    # -- interface ---------------------------------------------------------------------
    @abstractmethod
    def add_task(self, task_id: int, keys: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Index a new task from its raw per-input keys (and optional class labels)."""

    def add_task_blocks(self, task_id: int, blocks: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> None:
        """Index a new task from its keys given a block of rows at a time, each block with its
        labels (or None). Routers that keep only statistics (``gaussian``, ``lda``) hold one
        block at a time, so a task's keys never need to be in memory at once; the others
        gather the blocks and call :meth:`add_task`."""
        pairs = list(blocks)
        labels = [lab for _, lab in pairs]
        if not pairs:
            raise InvalidDataError("a task needs at least one key; got no blocks of keys")
        if any(lab is None for lab in labels) and any(lab is not None for lab in labels):
            raise InvalidDataError("give labels with every block of keys, or with none")
        self.add_task(task_id, np.concatenate([k for k, _ in pairs]),
                      None if labels[0] is None else np.concatenate(labels))

    @abstractmethod
    def remove_task(self, task_id: int) -> None:
        """Forget a task; its inputs can no longer be routed to it."""

    @abstractmethod
    def task_ids(self) -> list[int]:
        """Known task ids, in the order they were added."""

    @abstractmethod
    def __contains__(self, task_id: object) -> bool:
        """Whether ``task_id`` is routed to (O(1), unlike ``task_ids()``)."""

    @abstractmethod
    def _candidates(self, queries: np.ndarray, top: int) -> tuple[np.ndarray, ...]:
        """(candidates, candidate_scores, closeness of the best) for non-empty routers."""

    @abstractmethod
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able config and named numeric arrays that rebuild this router exactly."""

    @classmethod
    @abstractmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Router:
        """Inverse of :meth:`state`."""

    # -- shared behaviour ----------------------------------------------------------------
    def route(self, queries: np.ndarray, top: int = 3) -> Routing:
        """Route every query on its own; an empty router marks everything unknown."""
        if int(top) < 1:
            raise InvalidDataError(f"top must be >= 1, got {top}")
        top = int(top)
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise InvalidDataError(
                f"queries must be an (N, {self.dim}) array of keys, got shape {q.shape}; "
                "encode them with the key encoder the router was built with"
            )
        n = len(q)
        if n == 0 or len(self) == 0:
            return Routing(
                task_ids=np.full(n, -1, np.int64),
                scores=np.zeros(n, np.float32),
                candidates=np.full((n, top), -1, np.int64),
                candidate_scores=np.zeros((n, top), np.float32),
                closeness=np.full(n, -np.inf, np.float32),
            )
        cand, cand_scores, closeness = self._candidates(check_keys(q, self.dim), top)
        closeness = closeness.astype(np.float32)  # compare at the precision callers calibrate on
        task_ids = cand[:, 0].copy()
        if self.unknown_threshold is not None:
            task_ids[closeness < self.unknown_threshold] = -1
        return Routing(
            task_ids=task_ids,
            scores=cand_scores[:, 0].astype(np.float32),
            candidates=cand,
            candidate_scores=cand_scores.astype(np.float32),
            closeness=closeness.astype(np.float32),
        )

    def nbytes_per_task(self) -> float:
        """Bytes of routing state (config JSON + arrays) per task, the bank's cost metric."""
        config, arrays = self.state()
        total = len(json.dumps(config)) + sum(a.nbytes for a in arrays.values())
        return total / max(len(self.task_ids()), 1)

    def __len__(self) -> int:
        return len(self.task_ids())

    def _check_new(self, task_id: int) -> int:
        if isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)):
            raise InvalidDataError(f"task ids are integers, got {task_id!r}")
        tid = int(task_id)
        if not 0 <= tid <= MAX_TASK_ID:
            raise InvalidDataError(f"task id must be in [0, {MAX_TASK_ID}], got {tid}")
        if tid in self:
            raise TaskExistsError(
                f"task {tid} is already in the router; remove it first to replace it"
            )
        return tid

    def _check_known(self, task_id: int) -> int:
        tid = int(task_id)
        if tid not in self:
            raise UnknownTaskError(
                f"task {tid} is not in the router (known: {self.task_ids()[:20]})"
            )
        return tid

    def _check_labels(self, labels: np.ndarray | None, n: int) -> np.ndarray | None:
        if labels is None:
            return None
        lab = np.asarray(labels)
        if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
            raise InvalidDataError(
                f"labels must be {n} integer class indices (one per key), got "
                f"shape {lab.shape} dtype {lab.dtype}"
            )
        return lab.astype(np.int64)


# -- per-row grouping of neighbours by task ------------------------------------------------


def _segments(tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group the (row, task) pairs of an (N, K) neighbour table; -1 entries are ignored.

    Returns the flat element order (sorted by row then task), the start of each group in
    that order, and each group's row and task.
    """
    n, k = tasks.shape
    # a stable sort within each row (-1 first, then dropped): the order a lexsort by (row,
    # task) gives, at a quarter of its time for 256 x 32 neighbours
    order = (np.argsort(tasks, axis=1, kind="stable") + (np.arange(n) * k)[:, None]).ravel()
    t = tasks.ravel()[order]
    keep = t >= 0
    order, t = order[keep], t[keep]
    r = order // k
    new = np.ones(len(order), dtype=bool)
    new[1:] = (r[1:] != r[:-1]) | (t[1:] != t[:-1])
    starts = np.flatnonzero(new)
    return order, starts, r[starts], t[starts]


def _rank(
    n: int, seg_row: np.ndarray, primary: np.ndarray, secondary: np.ndarray, top: int
) -> np.ndarray:
    """(N, top) indices of each row's best groups (by primary, then secondary); -1 pads."""
    counts = np.bincount(seg_row, minlength=n)
    first = np.cumsum(counts) - counts
    pos = np.arange(len(seg_row)) - first[seg_row]
    width = max(int(counts.max(initial=0)), top)
    p = np.full((n, width), -np.inf)
    s = np.full((n, width), -np.inf)
    g = np.full((n, width), -1, dtype=np.int64)
    p[seg_row, pos] = primary
    s[seg_row, pos] = secondary
    g[seg_row, pos] = np.arange(len(seg_row))
    best = np.lexsort((-s, -p), axis=1)[:, :top]
    return np.take_along_axis(g, best, axis=1)


def _pick(values: np.ndarray, chosen: np.ndarray, fill: float) -> np.ndarray:
    """values[chosen] with ``fill`` where chosen is -1."""
    out = np.full(chosen.shape, fill, dtype=np.float64)
    ok = chosen >= 0
    out[ok] = values[chosen[ok]]
    return out


# -- strategy 1: k-NN vote over summary keys -----------------------------------------------


def auto_large_spec(n_vectors: int, dim: int) -> str:
    """The compressed index used past ``AUTO_FLAT_MAX_VECTORS``: IVF with ~8*sqrt(N) lists
    (a power of two, at most ``AUTO_MAX_NLIST`` and at most what N vectors can train) over
    8-bit scalar-quantised vectors (``AUTO_LARGE_SPEC``; a ``{m}`` there would be a PQ
    size of ~8 dims per byte)."""
    wanted = round(math.log2(AUTO_LISTS_PER_SQRT * math.sqrt(max(n_vectors, 1))))
    trainable = int(math.log2(max(n_vectors // MIN_POINTS_PER_CENTROID, 1)))
    nlist = min(1 << max(min(wanted, trainable), 0), AUTO_MAX_NLIST)
    m = max(d for d in range(1, max(dim // 8, 1) + 1) if dim % d == 0)
    return AUTO_LARGE_SPEC.format(nlist=nlist, m=m)


def _unwrap(index: Any) -> list[Any]:
    """``index`` and the indexes it wraps (IDMap, pre-transform, refine, IVF), downcast."""
    out, todo = [], [index]
    while todo:
        cur = faiss.downcast_index(todo.pop())
        out.append(cur)
        for attr in ("index", "base_index"):
            inner = getattr(cur, attr, None)
            if isinstance(inner, faiss.Index):
                todo.append(inner)
    return out


def _make_index(spec: str, dim: int) -> Any:
    """Inner-product index for ``spec`` that accepts our int64 ids (IVF natively, else IDMap2).

    PQ codes are trained without polysemous training: the factory turns it on for "PQm"
    specs, the router never does a polysemous search, and it made the one-off training
    ~10x slower (164 s instead of 14 s at 40k vectors; same routing).
    """
    try:
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise InvalidDataError(f"FAISS cannot build index '{spec}': {exc}") from None
    if faiss.try_extract_index_ivf(index) is None:
        index = faiss.index_factory(dim, "IDMap2," + spec, faiss.METRIC_INNER_PRODUCT)
    for part in _unwrap(index):
        if getattr(part, "do_polysemous_training", False):
            part.do_polysemous_training = False
    return index


def _train_size(index: Any) -> int:
    """Vectors needed before ``index`` can be trained without degenerate clusters."""
    if index.is_trained:
        return 0
    ivf = faiss.try_extract_index_ivf(index)
    inner = faiss.downcast_index(ivf if ivf is not None else getattr(index, "index", index))
    pq = getattr(inner, "pq", None)
    if ivf is None and pq is None:  # unknown trainable kind: assume 256-centroid codebooks
        return MIN_POINTS_PER_CENTROID * 256
    need = MIN_POINTS_PER_CENTROID * ivf.nlist if ivf is not None else 1
    if pq is not None:
        need = max(need, MIN_POINTS_PER_CENTROID * (1 << pq.nbits))
    return need


def _int8_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric 8-bit codes of float rows, one scale per row: ``rows ~ codes * scales``."""
    scales = rows.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny) / 127
    return torch.round(rows / scales).to(torch.int8), scales


def _coarse_memo(index: Any, quantizer: Any) -> dict[str, Any]:
    """What the coarse step needs of ``index``'s centroids: float32 rows and norms for the
    exact distances, 8-bit codes and scales for choosing the lists.

    Also sets the index's ``parallel_mode`` to 3. In FAISS's default mode 0, ``search()``
    splits the queries over threads itself and ``search_preassigned`` scans on one thread;
    mode 3 splits them inside it. At 100k tasks (960-d, two threads) the batched route took
    80 us per query with the scan on one thread and 54.5 with it on both (paired 1.56x, same
    run; BENCHMARKS.md section 2)."""
    index.parallel_mode = 3
    cent = torch.from_numpy(np.ascontiguousarray(quantizer.reconstruct_n(0, index.nlist), dtype=np.float32))
    codes, scales = _int8_rows(cent)
    norms = cent.double().square().sum(dim=1).float()
    return {"index": index, "centroids": cent, "norms": norms, "half_norms": norms / 2,
            "codes_t": codes.T, "scales_t": scales.T}


def _blas_search(index: Any, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(x, k)`` with FAISS's exhaustive distances done by BLAS from
    ``BLAS_MIN_QUERIES`` queries on (FAISS's long-time default threshold).

    The faiss-cpu 1.15.1 installed here ships a threshold of 128,000 and leaves, e.g., 256
    queries x 384 dims or 32 x 960 to a kernel that streams the whole database once per query.
    Exact LDA over 20k tasks routed 256 queries at 384-d in 103 instead of 464 us per query
    and 32 at 960-d in 567 instead of 1,676, with the same tasks (BENCHMARKS.md, slow path 14).
    FAISS's global is restored after the call."""
    kept = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = min(kept, BLAS_MIN_QUERIES)
    try:
        return index.search(x, k)
    finally:
        faiss.cvar.distance_compute_blas_threshold = kept


def _search(index: Any, x: np.ndarray, k: int, memo: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(x, k)``; for an IVF with a flat coarse quantizer, the coarse step runs
    here and the lists are scanned with ``search_preassigned``.

    The lists are chosen by one 8-bit integer matrix product (queries x centroids, exact
    int32 sums: the same on every machine), then their distances are computed exactly in
    float32 where the scan uses them (not for scalar-quantised lists under L2: there FAISS
    measures the query against the centroid itself; 88 -> 77 us per query at 100k tasks, two
    threads, side test, same ids and distances), so only the choice of lists is approximate.
    At 100k tasks (960-d, 4,096 lists, batch 256) the float32 numpy product made the route
    145 us per query at two threads, this 107 (both with the list scan on one thread), with
    the same agreement with exact LDA (BENCHMARKS.md section 2; no gain at 384-d). ``memo``
    keeps the centroids for the index it was taken from."""
    quantizer = faiss.downcast_index(index.quantizer) if isinstance(index, faiss.IndexIVF) else None
    if not isinstance(quantizer, faiss.IndexFlat) or quantizer.ntotal != index.nlist:
        return _blas_search(index, x, k)
    if memo.get("index") is not index:
        memo.clear()
        memo.update(_coarse_memo(index, quantizer))
    rows = max(1, COARSE_SCORES_MAX // int(index.nlist))
    if len(x) > rows:  # the score matrix is bounded by COARSE_SCORES_MAX, not by the batch
        parts = [_search(index, x[i : i + rows], k, memo) for i in range(0, len(x), rows)]
        return np.concatenate([d for d, _ in parts]), np.concatenate([i for _, i in parts])
    nprobe = min(int(index.nprobe), int(index.nlist))
    l2 = quantizer.metric_type == faiss.METRIC_L2
    x = np.ascontiguousarray(x, dtype=np.float32)
    xt = torch.from_numpy(x)  # shares x's memory
    codes, scales = _int8_rows(xt)
    score = torch._int_mm(codes, memo["codes_t"]).float()  # ~ x.c / (scale of x), in place below
    score.mul_(memo["scales_t"])
    if l2:  # nearest = largest x.c - |c|^2 / 2
        score.mul_(scales).sub_(memo["half_norms"])
    lists = torch.topk(score, nprobe, dim=1, sorted=False).indices
    del score
    if l2 and isinstance(index, faiss.IndexIVFScalarQuantizer):
        # FAISS's L2 scanner of scalar-quantised lists measures each query against the list's
        # centroid itself and ignores the coarse distances passed in
        coarse = torch.zeros(lists.shape)
    else:
        coarse = torch.bmm(memo["centroids"][lists], xt[:, :, None])[..., 0]  # exact x.c of the chosen lists
        if l2:
            coarse = xt.double().square().sum(dim=1, keepdim=True).float() - 2 * coarse + memo["norms"][lists]
    return index.search_preassigned(x, k, lists.numpy(), np.ascontiguousarray(coarse.numpy()))


def _two_level_lists(ivf: Any, sample: np.ndarray) -> None:
    """Fill ``ivf``'s flat quantizer with spherical two-level k-means centroids of ``sample``
    (``LDA_FLAT_KMEANS_MAX_NLIST``); ``ivf.train`` then skips its own k-means."""
    from faiss.contrib.clustering import two_level_clustering

    centroids, _ = two_level_clustering(
        sample, round(math.sqrt(ivf.nlist)), ivf.nlist, clustering_niter=10,
        spherical=True, seed=1, min_points_per_centroid=1,
    )
    ivf.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))


def _dump(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of an IDMap2 index whose sub-index can reconstruct."""
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    if not len(ids):
        return ids, np.zeros((0, index.d), np.float32)
    return ids, np.asarray(index.index.reconstruct_n(0, index.ntotal), dtype=np.float32)


def _chunks(index: Any, size: int = 65_536):
    """(ids, float32 vectors) of everything ``index`` holds, ``size`` or so at a time.

    IVF indexes are decoded list by list (``sa_decode``: lossy for quantised codes),
    IDMap2 indexes reconstructed; peak extra memory is one chunk, not the whole index.
    """
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        for start in range(0, len(ids), size):
            stop = min(len(ids), start + size)
            yield ids[start:stop], np.asarray(index.index.reconstruct_n(start, stop - start), np.float32)
        return
    ivf = faiss.downcast_index(ivf)
    lists, code_size = ivf.invlists, ivf.code_size
    prefix_size = ivf.coarse_code_size()
    got_ids: list[np.ndarray] = []
    got_codes: list[np.ndarray] = []
    held = 0
    for l in range(ivf.nlist):
        n = lists.list_size(l)
        if n:
            ids = faiss.rev_swig_ptr(lists.get_ids(l), n).astype(np.int64)
            codes = faiss.rev_swig_ptr(lists.get_codes(l), n * code_size).reshape(n, code_size)
            prefix = np.frombuffer(int(l).to_bytes(prefix_size, "little"), np.uint8)
            got_ids.append(ids)
            got_codes.append(np.hstack([np.broadcast_to(prefix, (n, prefix_size)), codes]))
            held += n
        if held and (held >= size or l == ivf.nlist - 1):
            codes = np.ascontiguousarray(np.concatenate(got_codes))
            yield np.concatenate(got_ids), np.asarray(ivf.sa_decode(codes), np.float32)
            got_ids, got_codes, held = [], [], 0


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

    def __init__(
        self,
        dim: int,
        k: int = 10,
        summary: str = "kmeans",
        n_centroids: int = 8,
        per_class: bool = False,
        temperature: float = 0.1,
        index: str = "auto",
        nprobe: int = 16,
        unknown_threshold: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(dim, unknown_threshold)
        if k < 1 or n_centroids < 1 or nprobe < 1:
            raise InvalidDataError("k, n_centroids and nprobe must all be >= 1")
        if not temperature > 0:
            raise InvalidDataError(f"temperature must be > 0, got {temperature}")
        if summary not in ("kmeans", "mean", "all"):
            raise InvalidDataError(f"unknown summary '{summary}'; choose kmeans, mean or all")
        self.k, self.summary, self.n_centroids = int(k), summary, int(n_centroids)
        self.per_class, self.temperature = bool(per_class), float(temperature)
        self.index_spec_requested, self.nprobe, self.seed = str(index), int(nprobe), int(seed)
        if index != "auto":
            _make_index(index, self.dim)  # fail now on a bad spec, not at the first add
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
        if not (self.per_class and labels is not None):
            return summarize_keys(keys, self.summary, self.n_centroids, self.seed)
        classes = np.unique(labels)
        per = max(1, math.ceil(self.n_centroids / len(classes)))
        return np.concatenate(
            [summarize_keys(keys[labels == c], self.summary, per, self.seed) for c in classes]
        )

    def add_task(self, task_id: int, keys: np.ndarray, labels: np.ndarray | None = None) -> None:
        tid = self._check_new(task_id)
        keys = check_keys(keys, self.dim)
        vecs = self.summarize(keys, self._check_labels(labels, len(keys)))
        if len(vecs) > MAX_KEYS_PER_TASK:
            raise InvalidDataError(
                f"a task can store at most {MAX_KEYS_PER_TASK} keys, got {len(vecs)}; "
                "use summary='kmeans'"
            )
        if self._index is None:
            self._start_index()
        ids = (np.int64(tid) << TASK_SHIFT) | np.arange(len(vecs), dtype=np.int64)
        self._index.add_with_ids(vecs, ids)
        self._counts[tid] = len(vecs)
        self._maybe_grow()

    def _start_index(self) -> None:
        spec = self.index_spec_requested
        if spec == "auto":
            self._index, self._spec = _make_index("Flat", self.dim), "Flat"
            self._set_target(None)
            return
        index = _make_index(spec, self.dim)
        if index.is_trained:
            self._index, self._spec = index, spec
            self._set_target(None)
        else:  # collect exactly until there is enough to train on
            self._index, self._spec = _make_index("Flat", self.dim), "Flat"
            self._set_target(spec, probe=index)

    def _set_target(self, spec: str | None, probe: Any = None) -> None:
        """Aim at ``spec``; its training-set size is computed here, once, not per add."""
        self._target, self._target_need = spec, None
        if spec is not None:
            self._target_need = _train_size(probe if probe is not None else _make_index(spec, self.dim))

    def _maybe_grow(self) -> None:
        """Move to the trained/compressed index once there are enough vectors for it."""
        if self._target is None and self.index_spec_requested == "auto":
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
        target = _make_index(self._target, self.dim)
        total = self.ntotal
        need = self._target_need  # k-means time grows with the sample: see TRAIN_SAMPLE_MAX
        cap = max(need, min(2 * need, TRAIN_SAMPLE_MAX))
        rng = np.random.default_rng(self.seed)
        picked = np.sort(rng.choice(total, cap, replace=False)) if total > cap else None
        parts, seen = [], 0
        for _, vecs in _chunks(self._index):  # training sample, without holding everything
            if picked is None:
                parts.append(vecs)
            else:
                lo, hi = np.searchsorted(picked, [seen, seen + len(vecs)])
                parts.append(vecs[picked[lo:hi] - seen])
            seen += len(vecs)
        target.train(np.ascontiguousarray(np.concatenate(parts)))
        del parts
        for ids, vecs in _chunks(self._index):
            target.add_with_ids(vecs, ids)
        self._index, self._spec, self._trained_at = target, self._target, total
        self._set_target(None)

    def remove_task(self, task_id: int) -> None:
        tid = self._check_known(task_id)
        sel = faiss.IDSelectorRange(tid << TASK_SHIFT, (tid + 1) << TASK_SHIFT)
        try:
            removed = self._index.remove_ids(sel)
        except RuntimeError:  # e.g. HNSW: no removal, rebuild without the task
            ids, vecs = _dump(self._index)
            keep = (ids >> TASK_SHIFT) != tid
            self._index = _make_index(self._spec, self.dim)
            self._index.add_with_ids(vecs[keep], ids[keep])
            removed = int((~keep).sum())
        if removed != self._counts[tid]:
            raise BankFormatError(
                f"router index held {removed} keys of task {tid}, expected {self._counts[tid]}; "
                "the index is out of sync with its task table: rebuild the router"
            )
        del self._counts[tid]

    def _tune_search(self, k: int) -> None:
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None:
            ivf.nprobe = min(self.nprobe, ivf.nlist)
        inner = faiss.downcast_index(self._index.index) if hasattr(self._index, "id_map") else None
        if inner is not None and hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = max(inner.hnsw.efSearch, HNSW_MIN_EF_SEARCH, 2 * k)

    def _candidates(self, queries: np.ndarray, top: int) -> tuple[np.ndarray, ...]:
        q = l2_normalize(queries)
        n = len(q)
        most_keys = max(self._counts.values())
        k_search = min(self.ntotal, MAX_SEARCH, max(self.k, self.k + (top - 1) * most_keys))
        self._tune_search(k_search)
        sims, ids = _search(self._index, np.ascontiguousarray(q, dtype=np.float32), k_search, self._memo)
        tasks = np.where(ids >= 0, ids >> TASK_SHIFT, -1)
        sims = sims.astype(np.float64)
        # Only the k nearest vote; farther neighbours just supply extra candidates (vote 0).
        weight = np.exp((sims - sims[:, :1]) / self.temperature)
        weight[:, self.k :] = 0.0
        weight[tasks < 0] = 0.0
        order, starts, seg_row, seg_task = _segments(tasks)
        if len(starts) == 0:
            return (np.full((n, top), -1, np.int64), np.zeros((n, top)), np.full(n, -np.inf))
        vote = np.add.reduceat(weight.ravel()[order], starts)
        best_sim = np.maximum.reduceat(sims.ravel()[order], starts)
        total = np.bincount(seg_row, weights=vote, minlength=n)
        share = vote / np.maximum(total[seg_row], 1e-300)
        chosen = _rank(n, seg_row, vote, best_sim, top)
        cand = np.where(chosen >= 0, seg_task[np.maximum(chosen, 0)], -1)
        return cand, _pick(share, chosen, 0.0), _pick(best_sim, chosen[:, :1], -np.inf)[:, 0]

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config = {
            "strategy": self.strategy,
            "dim": self.dim,
            "k": self.k,
            "summary": self.summary,
            "n_centroids": self.n_centroids,
            "per_class": self.per_class,
            "temperature": self.temperature,
            "index": self.index_spec_requested,
            "nprobe": self.nprobe,
            "unknown_threshold": self.unknown_threshold,
            "seed": self.seed,
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
        router = cls(
            dim=config["dim"],
            k=config["k"],
            summary=config["summary"],
            n_centroids=config["n_centroids"],
            per_class=config.get("per_class", False),
            temperature=config["temperature"],
            index=config["index"],
            nprobe=config["nprobe"],
            unknown_threshold=config.get("unknown_threshold"),
            seed=config.get("seed", 0),
        )
        router._counts = {int(t): int(n) for t, n in config["tasks"]}
        router._spec, router._target = config.get("index_spec"), config.get("target_spec")
        if "index" in arrays:
            router._index = faiss.deserialize_index(np.ascontiguousarray(arrays["index"], np.uint8))
            if router._index.d != router.dim:
                raise BankFormatError(
                    f"router index has dimension {router._index.d}, config says {router.dim}"
                )
        held = sum(router._counts.values())
        # banks saved before "trained_at" existed: count from the size at load
        router._trained_at = int(config.get("trained_at", router.ntotal if router._spec != "Flat" else 0))
        if router.ntotal != held:
            raise BankFormatError(
                f"router index holds {router.ntotal} keys but its task table lists {held}; "
                "the bank's router files are damaged or from different saves"
            )
        return router


# -- strategy 2: Gaussians with a shared covariance (LDA) ----------------------------------


@dataclass
class _TaskStats:
    """What a task contributes: component (class) counts and means, and its scatter.

    The scatter is kept as ``count * (F^T F + diag(residual))``: F (rank x dim, float16)
    holds the top principal directions of the within-class spread (scaled per key), and
    the residual the rest of each dimension's variance. Exactly this matrix is added to
    the shared scatter, so removing the task subtracts exactly what it added, at a few KB
    per task instead of the 590 KB of a full 384x384 float32 matrix.
    """

    labels: np.ndarray  # (C,) int64, -1 when classes are not modelled
    counts: np.ndarray  # (C,) int64
    means: np.ndarray  # (C, dim) float16 (float32 in states saved before that layout)
    factor: np.ndarray  # (rank, dim) float16
    residual: np.ndarray  # (dim,) float32, per-key variance left outside the factor; (0,) for LDA

    def scatter(self) -> np.ndarray:
        f = self.factor.astype(np.float64)
        n = float(self.counts.sum())
        out = n * (f.T @ f)
        out[np.diag_indices_from(out)] += n * self.residual.astype(np.float64)
        return out


def _stored_means(means: np.ndarray) -> np.ndarray:
    """Class means at the precision they are saved in, float16, and held so in memory (half
    the RAM of float32: 1.9 KB per mean at 960-d). On the routing study's MiniLM keys
    (offline-9, vader-4, split-20ng) float16 means routed every input as float32 means did."""
    return means.astype(np.float16)


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS, built once: building it scans the process'
    libraries (~8 ms, measured as 60% of an LDA add_task when done on every call)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: only a speed-up
        return None
    return ThreadpoolController()


def _eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.linalg.eigh on one BLAS thread: the matrices are small (at most dim x dim), and
    multithreaded LAPACK on busy cores was measured 10-100x slower than one thread."""
    controller = _blas_controller() if len(matrix) >= 32 else None
    if controller is None:
        return np.linalg.eigh(matrix)
    with controller.limit(limits=1, user_api="blas"):
        return np.linalg.eigh(matrix)


@dataclass
class _ClassStats:
    """A new task's classes, their key counts and means, and its within-class scatter (the
    sum of outer products of its unit keys minus their class means, float64). ``centred``
    holds those rows themselves only while they are fewer than the dimensions."""

    classes: np.ndarray  # (C,) int64
    counts: np.ndarray  # (C,) int64
    means: np.ndarray  # (C, dim) float64
    scatter: np.ndarray  # (dim, dim) float64
    centred: np.ndarray | None  # (N, dim) float64 when N <= dim


class _ClassStatsSum:
    """A task's class statistics, summed one block of keys at a time, so adding a task holds
    one block, not all its keys. Each block is centred on its own class means and merged
    with the pairwise update of Chan, Golub and LeVeque (1979): as precise as centring the
    whole task at once, in one pass."""

    def __init__(self, dim: int) -> None:
        self.classes = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self.means = np.zeros((0, dim))
        self.scatter = np.zeros((dim, dim))
        self._unit: list[tuple[np.ndarray, np.ndarray]] | None = []  # the rows while n <= dim

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def add(self, keys: np.ndarray, labels: np.ndarray) -> None:
        """Fold in a block of float32 keys (normalised here) and their int64 labels."""
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        n, dim = keys.shape
        # One buffer, one product: the block's centred unit keys, then per class one row
        # sqrt(n_a n_b / n) (block mean - earlier mean), whose outer products are the
        # scatter between the block's and the earlier class means.
        rows = np.empty((n + len(classes), dim))
        unit = rows[:n]
        unit[:] = l2_normalize(keys)
        onehot = np.zeros((len(classes), n))
        onehot[inverse, np.arange(n)] = 1.0
        means = onehot @ unit / counts[:, None]
        new = np.setdiff1d(classes, self.classes)
        if len(new):
            self.classes = np.concatenate([self.classes, new])
            self.counts = np.concatenate([self.counts, np.zeros(len(new), np.int64)])
            self.means = np.concatenate([self.means, np.zeros((len(new), dim))])
        pos = np.array([np.flatnonzero(self.classes == c)[0] for c in classes])
        before = self.counts[pos]
        total = before + counts
        delta = means - self.means[pos]
        rows[n:] = delta * np.sqrt(before * counts / total)[:, None]
        self.means[pos] += delta * (counts / total)[:, None]
        self.counts[pos] = total
        if self._unit is not None:
            self._unit = None if self.n > dim else [*self._unit, (unit.copy(), labels)]
        unit -= means[inverse]
        self.scatter += rows.T @ rows

    def result(self) -> _ClassStats:
        order = np.argsort(self.classes)
        classes, counts, means = self.classes[order], self.counts[order], self.means[order]
        centred = None
        if self._unit is not None:
            unit = np.concatenate([u for u, _ in self._unit])
            labels = np.concatenate([lab for _, lab in self._unit])
            centred = unit - means[np.searchsorted(classes, labels)]
        return _ClassStats(classes, counts, means, self.scatter, centred)


def _row_blocks(keys: np.ndarray, labels: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """``keys`` and ``labels`` in blocks of ``STATS_BLOCK_ROWS`` rows (views, no copies)."""
    for i in range(0, len(keys), STATS_BLOCK_ROWS):
        yield keys[i : i + STATS_BLOCK_ROWS], None if labels is None else labels[i : i + STATS_BLOCK_ROWS]


def _principal_factor(cs: _ClassStats, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(F, per-dimension variance) with F^T F the best rank-``rank`` part of the per-key
    covariance.

    With fewer keys than dimensions the small Gram matrix is decomposed instead of the
    rank-deficient covariance: cheaper, and LAPACK is very slow on the latter here.
    """
    n, d = int(cs.counts.sum()), cs.scatter.shape[0]
    variance = np.diag(cs.scatter) / n
    if rank == 0:
        return np.zeros((0, d), np.float16), variance
    if cs.centred is not None:
        vals, vecs = _eigh(cs.centred @ cs.centred.T / n)
        vals, vecs = np.clip(vals[::-1][:rank], 0.0, None), vecs[:, ::-1][:, :rank]
        # right singular vectors scaled by sqrt(eigenvalue): centred^T u / sqrt(n)
        factor = (cs.centred.T @ vecs).T / np.sqrt(n)
    else:
        vals, vecs = _eigh(cs.scatter / n)
        vals, vecs = np.clip(vals[::-1][:rank], 0.0, None), vecs[:, ::-1][:, :rank]
        factor = (vecs * np.sqrt(vals)).T
    out = np.zeros((rank, d), np.float16)
    out[: len(factor)] = factor
    return out, variance


@functools.lru_cache(maxsize=4)
def _strictly_lower(dim: int) -> np.ndarray:
    return np.tri(dim, dtype=bool, k=-1)


def _symmetric_float32(scatter: np.ndarray) -> np.ndarray:
    """``scatter`` rounded to float32 and made exactly symmetric from its upper triangle:
    the precision it is stored at, kept in memory too (590 KB at 384-d instead of 1.2 MB),
    so a saved router routes exactly like the one that saved it. Updates are computed in
    float64 and rounded once."""
    s32 = scatter.astype(np.float32)
    np.copyto(s32, s32.T, where=_strictly_lower(len(s32)))
    return s32


def _pack_upper(matrix: np.ndarray) -> np.ndarray:
    """Upper triangle (diagonal included) of a symmetric matrix, row by row, float32."""
    return matrix.astype(np.float32)[np.triu_indices(len(matrix))]


def _unpack_upper(packed: np.ndarray, dim: int) -> np.ndarray:
    if packed.shape != (dim * (dim + 1) // 2,):
        raise BankFormatError(
            f"packed scatter has {packed.size} values, a {dim}x{dim} upper triangle has "
            f"{dim * (dim + 1) // 2}"
        )
    out = np.zeros((dim, dim), np.float32)
    out[np.triu_indices(dim)] = packed
    lower = np.tril_indices(dim, -1)
    out[lower] = out.T[lower]
    return out


#: what a Gaussian/LDA router's ``closeness`` measures (see GaussianRouter)
NOVELTY_SCORES = ("posterior", "nearest")


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
    scans per query (``LDA_NPROBE`` = 8; 4 routed 25-30% faster at 100k tasks but agreed with
    exact LDA on 0.3 point fewer queries at 384-d, BENCHMARKS.md section 2).
    ``closeness`` (what ``unknown_threshold`` cuts; higher = more familiar) depends on
    ``novelty``: "posterior" (default) is the chosen task's posterior recomputed at the softer
    ``novelty_temperature`` (the routing temperature makes almost every pick look certain);
    "nearest" is -(squared Mahalanobis distance to the chosen task's nearest mean) / dim. On
    offline-9 with one task held out, "posterior" flags 79% of the unseen task's inputs at 5.9%
    false rejects, "nearest" 24%, for +4% routing time (docs/routing.md, BENCHMARKS.md).
    Keys and queries are L2-normalised first (a no-op for KeyEncoder output), which also
    keeps the float16 scatter factors in range.

    Cost: per task, its means (float16, 768 B per mean at 384-d), a ``scatter_rank`` x dim
    float16 factor and a dim float32 residual (~8.4 KB at rank 8, 384-d); shared: the
    upper triangle of the dim x dim scatter in float32 (296 KB at 384-d). The scatter and
    the means are kept in memory at exactly the precision they are saved in, so a loaded
    router routes exactly like the one that saved it. States saved with a full float64
    scatter and float32 means still load.
    """

    strategy = "gaussian"
    #: whether the per-task diagonal residual is part of the state (removal subtracts it)
    _uses_residual: ClassVar[bool] = True

    def __init__(
        self,
        dim: int,
        per_class: bool = False,
        shrinkage: str | float = "oas",
        scatter_rank: int = 8,
        temperature: float = 1.0,
        search_k: int = 32,
        index: str = "auto",
        unknown_threshold: float | None = None,
        novelty: str = "posterior",
        novelty_temperature: float = 30.0,
        nprobe: int = LDA_NPROBE,
    ) -> None:
        super().__init__(dim, unknown_threshold)
        if novelty not in NOVELTY_SCORES or not novelty_temperature > 0:
            raise InvalidDataError(
                f"novelty must be one of {NOVELTY_SCORES} and novelty_temperature > 0, "
                f"got {novelty!r} / {novelty_temperature!r}"
            )
        self.novelty, self.novelty_temperature = novelty, float(novelty_temperature)
        if shrinkage != "oas" and not (isinstance(shrinkage, (int, float)) and 0 <= shrinkage <= 1):
            raise InvalidDataError(
                f"shrinkage must be 'oas' or a number in [0, 1], got {shrinkage!r}"
            )
        if not 0 <= scatter_rank <= dim:
            raise InvalidDataError(f"scatter_rank must be in [0, {dim}], got {scatter_rank}")
        if not temperature > 0 or search_k < 1 or nprobe < 1:
            raise InvalidDataError("temperature must be > 0, search_k >= 1 and nprobe >= 1")
        self.per_class, self.shrinkage = bool(per_class), shrinkage
        self.scatter_rank, self.temperature = int(scatter_rank), float(temperature)
        self.search_k, self.index_spec, self.nprobe = int(search_k), str(index), int(nprobe)
        self._tasks: dict[int, _TaskStats] = {}
        self._scatter = np.zeros((self.dim, self.dim), dtype=np.float32)  # see _symmetric_float32
        self._cache: dict[str, Any] | None = None
        self._n_keys = 0  # keys and components (class means) of all tasks, kept current
        self._n_comp = 0

    def task_ids(self) -> list[int]:
        return list(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def _new_task_classes(
        self, task_id: int, blocks: Iterable[tuple[np.ndarray, np.ndarray | None]]
    ) -> tuple[int, _ClassStats]:
        """A new task's id and the class statistics of its unit keys (one class for all keys
        without ``per_class`` or labels), read one block at a time."""
        tid = self._check_new(task_id)
        stats, labelled = _ClassStatsSum(self.dim), set()
        for keys, labels in blocks:
            keys = check_keys(keys, self.dim)
            labels = self._check_labels(labels, len(keys))
            labelled.add(labels is not None)
            if len(labelled) > 1:
                raise InvalidDataError("give labels with every block of keys, or with none")
            if not self.per_class or labels is None:
                labels = np.full(len(keys), -1, dtype=np.int64)
            stats.add(keys, labels)
        if stats.n == 0:
            raise InvalidDataError("a task needs at least one key; got no blocks of keys")
        return tid, stats.result()

    def add_task(self, task_id: int, keys: np.ndarray, labels: np.ndarray | None = None) -> None:
        keys = check_keys(keys, self.dim)
        self.add_task_blocks(task_id, _row_blocks(keys, self._check_labels(labels, len(keys))))

    def add_task_blocks(self, task_id: int, blocks: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> None:
        tid, cs = self._new_task_classes(task_id, blocks)
        factor, variance = _principal_factor(cs, self.scatter_rank)
        kept = (factor.astype(np.float64) ** 2).sum(axis=0)
        residual = np.clip(variance - kept, 0.0, None).astype(np.float32)
        stats = _TaskStats(cs.classes, cs.counts, _stored_means(cs.means), factor, residual)
        self._scatter = _symmetric_float32(self._scatter + stats.scatter())
        self._tasks[tid] = stats
        self._changed(tid, stats, +1)

    def remove_task(self, task_id: int) -> None:
        tid = self._check_known(task_id)
        stats = self._tasks.pop(tid)
        self._scatter = _symmetric_float32(self._scatter - stats.scatter())
        if not self._tasks:
            self._scatter[:] = 0.0  # no float residue once empty
        self._changed(tid, stats, -1)

    def _changed(self, tid: int, stats: _TaskStats, sign: int) -> None:
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
        if self.shrinkage == "oas":  # Chen et al. 2010, oracle approximating shrinkage
            tr2 = float((s * s).sum())
            den = (dof + 1 - 2 / p) * (tr2 - tr * tr / p)
            rho = 1.0 if den <= 0 else min(1.0, ((1 - 2 / p) * tr2 + tr * tr) / den)
        else:
            rho = float(self.shrinkage)
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
                c["index"].remove_ids(faiss.IDSelectorRange(int(old[0]), int(old[-1]) + 1))
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
        vals, vecs = _eigh(self.covariance())
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
                out[lo:hi] = white_of([items[o][1].means[r - (ends[o] - sizes[o])][None]
                                       for o, r in zip(owner[lo:hi], rows[lo:hi])])
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
        block: list[tuple[int, _TaskStats]] = []
        held = 0
        for i, item in enumerate(items):
            block.append(item)
            held += len(item[1].counts)
            if held >= REBUILD_BLOCK_MEANS or i + 1 == len(items):
                self._index_tasks(c, block, white_of([s.means for _, s in block]))
                block, held = [], 0
        self._cache = c
        return c

    def _new_index(self, n: int, whitened: Callable[[np.ndarray], np.ndarray]) -> Any:
        """Empty L2 index with int64 ids for ``n`` whitened means (trained on a sample of
        them, ``whitened(rows)``, if IVF).

        "auto" past ``AUTO_FLAT_MAX_VECTORS`` means: IVF-SQ8 with lists for ~24 means each
        at twice the current size (the size at the next refresh), trained with *spherical*
        k-means. Plain k-means on whitened means left hub lists near the origin that most
        queries probed: at 100k synthetic tasks (960-d, 4,096 lists) a query scanned 1,902
        means at nprobe 16 instead of ~390. Spherical lists at nprobe 8 (``LDA_NPROBE``) took
        the batched route from 336 to 181 us per query, agreement with exact LDA 0.998 ->
        1.000 (BENCHMARKS.md section 2). Past ``LDA_FLAT_KMEANS_MAX_NLIST`` lists (a refresh at
        ~70k+ means) the k-means is two-level, so it stays a matter of seconds.
        """
        spec, need = self.index_spec, None
        if spec == "auto":
            nlist = min(LDA_MAX_NLIST, 1 << max(round(math.log2(max(2 * n / 24, 1))), 0))
            spec = "Flat" if n <= AUTO_FLAT_MAX_VECTORS else AUTO_LARGE_SPEC.format(nlist=nlist, m=1)
            need = nlist  # k-means with fewer than 39 points per list: fine for this use
        index = faiss.index_factory(self.dim, spec, faiss.METRIC_L2)
        ivf, auto = faiss.try_extract_index_ivf(index), need is not None
        if auto and ivf is not None:
            ivf.cp.min_points_per_centroid, ivf.cp.spherical = 1, True  # no warning; no hub lists
        if not index.is_trained:
            need = _train_size(index) if need is None else need
            if n < need:
                index, ivf = faiss.IndexFlatL2(self.dim), None  # too few means to train on yet
            else:
                rng = np.random.default_rng(0)
                cap = min(n, 2 * _train_size(index))
                sample = np.ascontiguousarray(whitened(np.sort(rng.choice(n, cap, replace=False))))
                if auto and ivf.nlist > LDA_FLAT_KMEANS_MAX_NLIST:
                    _two_level_lists(ivf, sample)
                index.train(sample)  # the lists, unless already there; then the SQ8 codec
        return index if ivf is not None else faiss.IndexIDMap2(index)

    def _index_tasks(
        self, c: dict[str, Any], block: list[tuple[int, _TaskStats]], white: np.ndarray | None = None
    ) -> None:
        """Register ``block``'s means in the cache and add them to the index in one call
        (``white``: already whitened, in block order; else whitened here)."""
        if not block:
            return
        if white is None:
            white = np.concatenate([s.means for _, s in block]) @ c["whiten"]  # float32
        first = c["next"]
        for tid, stats in block:
            k = len(stats.counts)
            serials = np.arange(c["next"], c["next"] + k, dtype=np.int64)
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
        # torch, like the coarse step in _search: one thread pool for the route's matrix
        # products (numpy's BLAS pool next to torch's doubled the route's time on 2 cores)
        z = (torch.from_numpy(l2_normalize(queries)) @ torch.from_numpy(c["whiten"])).numpy()
        k = min(c["index"].ntotal, max(self.search_k, top * c["max_classes"]))
        ivf = faiss.try_extract_index_ivf(c["index"])
        if ivf is not None:
            ivf.nprobe = min(ivf.nlist, self.nprobe)
        dist, comp = _search(c["index"], z, k, c.setdefault("memo", {}))
        ok = comp >= 0
        tasks = np.where(ok, c["comp_task"][np.maximum(comp, 0)], -1)
        dist = np.maximum(dist.astype(np.float64), 0.0)
        logw = c["comp_logw"][np.maximum(comp, 0)]
        order, starts, seg_row, seg_task = _segments(tasks)
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

        task_logit, prob = task_posterior(self.temperature)
        near = np.maximum.reduceat(-dist.ravel()[order], starts) / self.dim
        chosen = _rank(n, seg_row, task_logit, near, top)
        cand = np.where(chosen >= 0, seg_task[np.maximum(chosen, 0)], -1)
        familiar = near if self.novelty == "nearest" else task_posterior(self.novelty_temperature)[1]
        return cand, _pick(prob, chosen, 0.0), _pick(familiar, chosen[:, :1], -np.inf)[:, 0]

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config = {
            "strategy": self.strategy,
            "dim": self.dim,
            "per_class": self.per_class,
            "shrinkage": self.shrinkage,
            "scatter_rank": self.scatter_rank,
            "temperature": self.temperature,
            "search_k": self.search_k,
            "index": self.index_spec,
            "unknown_threshold": self.unknown_threshold,
            "novelty": self.novelty,
            "novelty_temperature": self.novelty_temperature,
            "nprobe": self.nprobe,
            "tasks": [[tid, len(s.counts)] for tid, s in self._tasks.items()],
        }
        stats = list(self._tasks.values())
        d, r = self.dim, self.scatter_rank

        def join(field: str, empty_shape: tuple[int, ...], dtype: Any, stack: bool) -> np.ndarray:
            if not stats:
                return np.zeros(empty_shape, dtype)
            parts = [getattr(s, field) for s in stats]
            return np.stack(parts) if stack else np.concatenate(parts)

        arrays = {
            "comp_label": join("labels", (0,), np.int64, stack=False),
            "comp_count": join("counts", (0,), np.int64, stack=False),
            "comp_mean": join("means", (0, d), np.float32, stack=False).astype(np.float16),
            "task_factor": join("factor", (0, r, d), np.float16, stack=True),
            "scatter_packed": _pack_upper(self._scatter),
        }
        if self._uses_residual:
            arrays["task_residual"] = join("residual", (0, d), np.float32, stack=True)
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> GaussianRouter:
        router = cls(
            dim=config["dim"],
            per_class=config["per_class"],
            shrinkage=config["shrinkage"],
            scatter_rank=config["scatter_rank"],
            temperature=config["temperature"],
            search_k=config["search_k"],
            index=config["index"],
            unknown_threshold=config.get("unknown_threshold"),
            # states saved before the option had thresholds on the nearest-mean closeness
            novelty=config.get("novelty", "nearest"),
            novelty_temperature=config.get("novelty_temperature", 30.0),
            nprobe=config.get("nprobe", LDA_NPROBE),
        )
        try:
            start = 0
            residuals = arrays.get("task_residual")
            for i, (tid, n_comp) in enumerate(config["tasks"]):
                sl = slice(start, start + int(n_comp))
                router._tasks[int(tid)] = _TaskStats(
                    labels=np.asarray(arrays["comp_label"][sl], np.int64),
                    counts=np.asarray(arrays["comp_count"][sl], np.int64),
                    means=np.asarray(arrays["comp_mean"][sl]),  # float16 (float32 if saved so)
                    factor=np.asarray(arrays["task_factor"][i], np.float16),
                    residual=(np.zeros(0, np.float32) if residuals is None
                              else np.asarray(residuals[i], np.float32)),
                )
                start += int(n_comp)
            if residuals is None and router._uses_residual:
                raise KeyError("task_residual")
            router._n_keys = sum(int(t.counts.sum()) for t in router._tasks.values())
            router._n_comp = sum(len(t.counts) for t in router._tasks.values())
            if "scatter_packed" in arrays:
                router._scatter = _unpack_upper(np.asarray(arrays["scatter_packed"]), router.dim)
            else:  # saved before the packed float32 layout: a full float64 matrix
                router._scatter = np.array(arrays["scatter"], dtype=np.float64)
        except (KeyError, IndexError) as exc:
            raise BankFormatError(f"Gaussian router state is incomplete: {exc}") from None
        if router._scatter.shape != (router.dim, router.dim) or start != len(arrays["comp_count"]):
            raise BankFormatError("Gaussian router arrays do not match its config")
        return router


# -- factories ------------------------------------------------------------------------------

ROUTERS: dict[str, type[Router]] = {"knn": KNNRouter, "gaussian": GaussianRouter}


def make_router(strategy: str = "knn", *, dim: int, **options: Any) -> Router:
    """A new router by strategy name ("knn", "gaussian" or "lda"); options go to its constructor."""
    if strategy not in ROUTERS:
        raise InvalidDataError(
            f"unknown routing strategy '{strategy}'; choose one of: {', '.join(ROUTERS)}"
        )
    try:
        return ROUTERS[strategy](dim=dim, **options)
    except TypeError as exc:
        raise InvalidDataError(f"bad option for the '{strategy}' router: {exc}") from None


def router_from_state(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Router:
    """Rebuild a router saved with ``state()``, whatever its strategy."""
    strategy = config.get("strategy")
    if strategy not in ROUTERS:
        raise BankFormatError(
            f"router state has unknown strategy {strategy!r}; known: {', '.join(ROUTERS)}"
        )
    return ROUTERS[strategy].from_state(config, arrays)


# -- strategy 3: LDA with the exact pooled covariance ---------------------------------------


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
    the next route. Per task the state keeps its class means (float16, 1.9 KB per class at
    960-d) and counts. The shared scatter is saved as the float32 upper triangle of the
    dim x dim matrix (1.8 MB at 960-d) whatever the number of tasks.

    Removal drops the task's means (it can no longer be chosen); its within-class scatter --
    a positive semi-definite spread, with no means or labels -- stays in the shared
    covariance as background, so removal is not exact: on the named streams routing after
    ``remove_task`` agreed with a router rebuilt without the task on 96-99.7% of inputs,
    with the same accuracy (mean change 0.0 to +1.8 points; routing_study.py). A rank-8
    factor of each task's scatter, subtracted on removal (``scatter_rank=8``, the default
    until 2026-11-30), moved that agreement by 0.1 point or less at 15 KB per task on the
    960-d key, so the default keeps none. Subtracting the diagonal residual too, as
    GaussianRouter does, leaves an indefinite remainder and was measured to wreck routing
    (down to -40 points). Removing every task resets the router exactly.
    """

    strategy = "lda"
    _uses_residual = False  # removal subtracts the low-rank factor only: not saved

    def __init__(self, dim: int, per_class: bool = True, scatter_rank: int = 0, **options: Any) -> None:
        # Same options as GaussianRouter; the defaults differ: class means route better, and
        # the scatter factor only serves removal, where it did not earn its bytes.
        super().__init__(dim, per_class=per_class, scatter_rank=scatter_rank, **options)

    def add_task_blocks(self, task_id: int, blocks: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> None:
        tid, cs = self._new_task_classes(task_id, blocks)
        factor, _ = _principal_factor(cs, self.scatter_rank)
        no_residual = np.zeros(0, np.float32)  # removal does not use it: not kept
        stats = _TaskStats(cs.classes, cs.counts, _stored_means(cs.means), factor, no_residual)
        self._tasks[tid] = stats
        self._scatter = _symmetric_float32(self._scatter + cs.scatter)
        self._changed(tid, stats, +1)

    def remove_task(self, task_id: int) -> None:
        tid = self._check_known(task_id)
        stats = self._tasks.pop(tid)
        f = stats.factor.astype(np.float64)
        self._scatter = _symmetric_float32(self._scatter - float(stats.counts.sum()) * (f.T @ f))
        if not self._tasks:
            self._scatter[:] = 0.0
        self._changed(tid, stats, -1)


ROUTERS["lda"] = LDARouter
