"""FAISS plumbing shared by the routers: index construction from factory specs, searches
that reuse the coarse quantizer, list training, and reading vectors back out."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
import torch

from ..errors import InvalidDataError

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
#: this many. At 1M tasks a cap of 4,096 left ~244 means per list, which agreed with exact
#: LDA on 40% of queries; 65,536 lists of ~15 means agree on 96.6% at the default 960-d key
#: (true task 0.963 vs 0.997 exact; BENCHMARKS.md section 2).
LDA_MAX_NLIST = 65536
#: The LDA router's auto IVF aims at lists of this many means at the next refresh.
LDA_MEANS_PER_LIST = 24
#: Whitened means the auto IVF's k-means trains on, at most (1 GB of float32 at 960-d); the
#: SQ8 codec then trains on ``LDA_CODEC_SAMPLE`` of them. Sampling every mean needed a 3.8 GB
#: float32 copy at 1M tasks x 960-d, twice the router's own memory.
LDA_TRAIN_SAMPLE_MAX = 262_144
LDA_CODEC_SAMPLE = 65_536

#: Past this many lists the LDA index trains *two-level* spherical k-means (faiss.contrib:
#: sqrt(nlist) clusters, each split in proportion to its size), ~sqrt(nlist)/2 times
#: cheaper than flat k-means: 65,536 lists over 1M means took 20 s, where flat k-means for
#: 16,384 lists on 320k means took 164 s. Up to it, flat k-means, which agreed better with
#: coarse lists (4,096 lists at 1M tasks: 41% vs 30%; at 100k tasks, 960-d: 100% vs 99.9%).
LDA_FLAT_KMEANS_MAX_NLIST = 4096
#: HNSW indexes search with at least this efSearch (FAISS' default, 16, found the exact
#: task for 39% of queries at 400k clustered keys; 128 for 79%).
HNSW_MIN_EF_SEARCH = 128
#: Largest (queries x lists) coarse-score matrix one search builds (64 MB of float32):
#: 4,096 queries at 4,096 lists, 256 at 65,536. Every chunk reads the whole centroid matrix
#: (100 MB at 65,536 x 384), so smaller chunks cost time: at 1M tasks, one thread, a batch
#: of 256 took 775 us/query in one chunk, 996 in four, 2,198 in sixteen.
COARSE_SCORES_MAX = 1 << 24
#: Queries from which FAISS computes exhaustive distances with BLAS (see ``_blas_search``).
BLAS_MIN_QUERIES = 20
#: FAISS warns below this many training points per IVF list / PQ centroid.
MIN_POINTS_PER_CENTROID = 39
#: Largest k-means sample unless the minimum needs more (see AUTO_LISTS_PER_SQRT).
TRAIN_SAMPLE_MAX = 2 * MIN_POINTS_PER_CENTROID * 4096


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


def unwrap(index: Any) -> list[Any]:
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


def make_index(spec: str, dim: int) -> Any:
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
    for part in unwrap(index):
        if getattr(part, "do_polysemous_training", False):
            part.do_polysemous_training = False
    return index


def train_size(index: Any) -> int:
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


def int8_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric 8-bit codes of float rows, one scale per row: ``rows ~ codes * scales``."""
    scales = rows.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny) / 127
    return torch.round(rows / scales).to(torch.int8), scales


@functools.lru_cache(maxsize=1)
def int8_coarse() -> bool:
    """Whether the coarse step chooses lists with an 8-bit product (``search``): only on CPUs
    with AVX-512, where it beat float32. On an AVX2-only CPU (the 2-core AMD EPYC) torch's
    int8 product has no fast kernel: 256 x 960 x 4,096 took 11.9 s against 0.08 s in float32,
    and the route at 60k tasks 2,300 us per query instead of ~50."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def coarse_memo(index: Any, quantizer: Any) -> dict[str, Any]:
    """What the coarse step needs of ``index``'s centroids: float32 rows and norms for the
    exact distances, 8-bit codes and scales for choosing the lists (``int8_coarse`` CPUs only).
    The rows are a view of the flat quantizer's own storage, not a copy (250 MB at 65,536
    lists of 960-d).

    Also sets the index's ``parallel_mode`` to 3. In FAISS's default mode 0, ``search()``
    splits the queries over threads itself and ``search_preassigned`` scans on one thread;
    mode 3 splits them inside it. At 100k tasks (960-d, two threads) the batched route took
    80 us per query with the scan on one thread and 54.5 with it on both (paired 1.56x, same
    run; BENCHMARKS.md section 2)."""
    index.parallel_mode = 3
    rows = faiss.rev_swig_ptr(faiss.downcast_index(quantizer).get_xb(), index.nlist * index.d)
    cent = torch.from_numpy(rows.reshape(index.nlist, index.d))
    norms = cent.double().square().sum(dim=1).float()
    memo = {"index": index, "centroids": cent, "norms": norms, "half_norms": norms / 2}
    if int8_coarse():
        codes, scales = int8_rows(cent)
        memo.update(codes_t=codes.T, scales_t=scales.T)
    return memo


def blas_search(index: Any, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(x, k)`` with FAISS's exhaustive distances done by BLAS from
    ``BLAS_MIN_QUERIES`` queries on (FAISS's long-time default threshold).

    The faiss-cpu 1.15.1 installed here ships a threshold of 128,000 and leaves, e.g., 256
    queries x 384 dims or 32 x 960 to a kernel that streams the whole database once per query.
    Exact LDA over 20k tasks routed 256 queries at 384-d in 103 instead of 464 us per query
    and 32 at 960-d in 567 instead of 1,676, with the same tasks.
    FAISS's global is restored after the call."""
    kept = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = min(kept, BLAS_MIN_QUERIES)
    try:
        return index.search(x, k)
    finally:
        faiss.cvar.distance_compute_blas_threshold = kept


def search(index: Any, x: np.ndarray, k: int, memo: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(x, k)``; for an IVF with a flat coarse quantizer, the coarse step runs
    here and the lists are scanned with ``search_preassigned``.

    The lists are chosen by one matrix product (queries x centroids: 8-bit with exact int32
    sums on AVX-512 CPUs, float32 elsewhere, ``int8_coarse``), then their distances are computed exactly in
    float32 where the scan uses them (not for scalar-quantised lists under L2: there FAISS
    measures the query against the centroid itself; 88 -> 77 us per query at 100k tasks, two
    threads, side test, same ids and distances), so only the choice of lists is approximate.
    At 100k tasks (960-d, 4,096 lists, batch 256) the float32 numpy product made the route
    145 us per query at two threads, this 107 (both with the list scan on one thread), with
    the same agreement with exact LDA (BENCHMARKS.md section 2; no gain at 384-d). ``memo``
    keeps the centroids for the index it was taken from."""
    quantizer = faiss.downcast_index(index.quantizer) if isinstance(index, faiss.IndexIVF) else None
    if not isinstance(quantizer, faiss.IndexFlat) or quantizer.ntotal != index.nlist:
        return blas_search(index, x, k)
    if memo.get("index") is not index:
        memo.clear()
        memo.update(coarse_memo(index, quantizer))
    rows = max(1, COARSE_SCORES_MAX // int(index.nlist))
    if len(x) > rows:  # the score matrix is bounded by COARSE_SCORES_MAX, not by the batch
        parts = [search(index, x[i : i + rows], k, memo) for i in range(0, len(x), rows)]
        return np.concatenate([d for d, _ in parts]), np.concatenate([i for _, i in parts])
    nprobe = min(int(index.nprobe), int(index.nlist))
    l2 = quantizer.metric_type == faiss.METRIC_L2
    x = np.ascontiguousarray(x, dtype=np.float32)
    xt = torch.from_numpy(x)  # shares x's memory
    if int8_coarse():
        codes, scales = int8_rows(xt)
        score = torch._int_mm(codes, memo["codes_t"]).float()  # ~ x.c / (scale of x), in place below
        score.mul_(memo["scales_t"]).mul_(scales)
    else:
        score = xt @ memo["centroids"].T
    if l2:  # nearest = largest x.c - |c|^2 / 2
        score.sub_(memo["half_norms"])
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


def two_level_lists(ivf: Any, sample: np.ndarray) -> None:
    """Fill ``ivf``'s flat quantizer with spherical two-level k-means centroids of ``sample``
    (``LDA_FLAT_KMEANS_MAX_NLIST``); ``ivf.train`` then skips its own k-means."""
    from faiss.contrib.clustering import two_level_clustering

    centroids, _ = two_level_clustering(
        sample,
        round(math.sqrt(ivf.nlist)),
        ivf.nlist,
        clustering_niter=10,
        spherical=True,
        seed=1,
        min_points_per_centroid=1,
    )
    ivf.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))


def dump(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of an IDMap2 index whose sub-index can reconstruct."""
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    if not len(ids):
        return ids, np.zeros((0, index.d), np.float32)
    return ids, np.asarray(index.index.reconstruct_n(0, index.ntotal), dtype=np.float32)


def chunks(index: Any, size: int = 65_536):
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
    for li in range(ivf.nlist):
        n = lists.list_size(li)
        if n:
            ids = faiss.rev_swig_ptr(lists.get_ids(li), n).astype(np.int64)
            codes = faiss.rev_swig_ptr(lists.get_codes(li), n * code_size).reshape(n, code_size)
            prefix = np.frombuffer(int(li).to_bytes(prefix_size, "little"), np.uint8)
            got_ids.append(ids)
            got_codes.append(np.hstack([np.broadcast_to(prefix, (n, prefix_size)), codes]))
            held += n
        if held and (held >= size or li == ivf.nlist - 1):
            codes = np.ascontiguousarray(np.concatenate(got_codes))
            yield np.concatenate(got_ids), np.asarray(ivf.sa_decode(codes), np.float32)
            got_ids, got_codes, held = [], [], 0


def mean_index(dim: int, spec: str, n: int, whitened: Callable[[np.ndarray], np.ndarray]) -> Any:
    """An empty L2 index with int64 ids for the LDA router's ``n`` whitened means, trained on a
    sample of them (``whitened(rows)``) if IVF.

    Args:
        dim: the means' dimension.
        spec: a FAISS ``index_factory`` string, or "auto".
        n: how many means it will hold.
        whitened: the whitened means of the given row numbers.

    Returns:
        The IVF index (it takes ids itself), or an ``IndexIDMap2`` around a flat one (also while
        there are too few means to train the lists on).

    "auto" past ``AUTO_FLAT_MAX_VECTORS`` means: IVF-SQ8 with lists for ~``LDA_MEANS_PER_LIST`` means each
    at twice the current size (the size at the next refresh), trained with *spherical*
    k-means. Plain k-means on whitened means left hub lists near the origin that most
    queries probed: at 100k synthetic tasks (960-d, 4,096 lists) a query scanned 1,902
    means at nprobe 16 instead of ~390. Spherical lists at nprobe 8 (``LDA_NPROBE``) took
    the batched route from 336 to 181 us per query, agreement with exact LDA 0.998 ->
    1.000 (BENCHMARKS.md section 2). Past ``LDA_FLAT_KMEANS_MAX_NLIST`` lists (a refresh at
    ~70k+ means) the k-means is two-level, so it stays a matter of seconds.
    """
    need = None
    if spec == "auto":
        nlist = min(LDA_MAX_NLIST, 1 << max(round(math.log2(max(2 * n / LDA_MEANS_PER_LIST, 1))), 0))
        spec = "Flat" if n <= AUTO_FLAT_MAX_VECTORS else AUTO_LARGE_SPEC.format(nlist=nlist, m=1)
        need = nlist  # k-means with fewer than 39 points per list: fine for this use
    index = faiss.index_factory(dim, spec, faiss.METRIC_L2)
    ivf, auto = faiss.try_extract_index_ivf(index), need is not None
    if auto and ivf is not None:
        ivf.cp.min_points_per_centroid, ivf.cp.spherical = 1, True  # no warning; no hub lists
    if not index.is_trained:
        need = train_size(index) if need is None else need
        if n < need:
            index, ivf = faiss.IndexFlatL2(dim), None  # too few means to train on yet
        else:
            rng = np.random.default_rng(0)
            cap = min(n, 2 * train_size(index))
            if auto:
                cap = min(cap, max(need, LDA_TRAIN_SAMPLE_MAX))
            sample = np.ascontiguousarray(whitened(np.sort(rng.choice(n, cap, replace=False))))
            if auto and ivf.nlist > LDA_FLAT_KMEANS_MAX_NLIST:
                two_level_lists(ivf, sample)
                sample = sample[:LDA_CODEC_SAMPLE]  # the lists are there: the SQ8 codec needs few
            index.train(sample)  # the lists, unless already there; then the SQ8 codec
    return index if ivf is not None else faiss.IndexIDMap2(index)


def compact_lists(index: Any) -> None:
    """Re-allocate an IVF index's inverted lists at exactly their sizes.

    Lists filled a block of vectors at a time grow by reallocation (capacity doubling), so they
    end up to twice as large as their contents; copying each list once into a fresh
    ``ArrayInvertedLists`` (one allocation per list) and dropping the old ones gives the slack
    back. The copy is transient: one more index's worth of memory while it runs.
    """
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return
    ivf = faiss.downcast_index(ivf)
    old = ivf.invlists
    fresh = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    for li in range(ivf.nlist):
        n = old.list_size(li)
        if n:
            fresh.add_entries(li, n, old.get_ids(li), old.get_codes(li))
    ivf.replace_invlists(fresh, True)  # the index owns the fresh lists and deletes the old ones
    fresh.this.disown()
