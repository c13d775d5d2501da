"""Routing at scale: KNNRouter over synthetic clustered keys, 10 -> 100,000+ tasks, per index type.

Keys (``--dim``, default 960 like the bank's minilm+embedding-set-mean keys; 384 = MiniLM alone) are drawn around task centres that are themselves grouped in
"domains" of ``--domain-size`` tasks (near-neighbour tasks, as bbc/reuters are), so exact
search is not trivially perfect and approximate indexes can be told apart. Per size and index:
build time through the router (one ``add_task`` per task, as a bank adds them; the largest
single ``add_task`` shows a one-off training spike), index bytes, latency per query (single
queries and batches, through ``router.route`` and through the raw FAISS search underneath),
task-id agreement with exact search (the Flat router) and accuracy against the true task, and
at every size the time to add one more task and to remove one.

Index types: "Flat" (exact); "auto" (``index="auto"``: Flat up to AUTO_FLAT_MAX_VECTORS, then
IVF-SQ8 that regrows its lists as the bank grows -- filled task by task, so its build time holds
the switch and the regrowths); "IVF{nlist},SQ8" built directly with the lists ``auto_large_spec``
gives at the final size; "IVFPQ" (IVF{nlist},PQ48, the auto index before the benchmark; with
``np``: no polysemous training); "HNSW32". An IVF spec stays an exact Flat index until it has the
vectors to train on (39 per list and per PQ centroid), so at small sizes it *is* Flat.

``--exact-chunked`` computes the exact reference by brute force over the generated keys, in
chunks, through the router's own vote, instead of building a Flat router (saves a second copy of
every key: needed at 1M tasks).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python scripts/bench/routing.py --threads 1 \
        --tasks 10000 --out runs/bench/routing-10k.json
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from typing import Any

import _bench
import numpy as np

DIM = 960  # --dim overrides


def make_keys(
    n_tasks: int, keys_per_task: int, domain_size: int, spreads: tuple[float, float], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(task centres, keys) as float32; keys[t * kpt : (t + 1) * kpt] belong to task t."""
    task_spread, key_spread = spreads
    rng = np.random.default_rng(seed)
    n_domains = max(1, -(-n_tasks // domain_size))
    domains = _unit(rng.standard_normal((n_domains, DIM), dtype=np.float32))
    centres = np.empty((n_tasks, DIM), np.float32)
    for start in range(0, n_tasks, 65536):  # chunks keep the temporary arrays small
        stop = min(n_tasks, start + 65536)
        noise = rng.standard_normal((stop - start, DIM), dtype=np.float32) / np.sqrt(DIM)
        centres[start:stop] = _unit(domains[np.arange(start, stop) % n_domains] + task_spread * noise)
    keys = np.empty((n_tasks * keys_per_task, DIM), np.float32)
    for start in range(0, n_tasks, 65536):
        stop = min(n_tasks, start + 65536)
        base = np.repeat(centres[start:stop], keys_per_task, axis=0)
        noise = rng.standard_normal(base.shape, dtype=np.float32) / np.sqrt(DIM)
        keys[start * keys_per_task : stop * keys_per_task] = _unit(base + key_spread * noise)
    return centres, keys


def make_queries(centres: np.ndarray, n: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    truth = rng.integers(0, len(centres), n)
    noise = rng.standard_normal((n, DIM), dtype=np.float32) / np.sqrt(DIM)
    return _unit(centres[truth] + spread * noise), truth


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build(spec: str, keys: np.ndarray, kpt: int, nprobe: int) -> tuple[Any, dict[str, Any]]:
    """A KNNRouter filled task by task; build-time stats."""
    from promptbank.routing import KNNRouter

    router = KNNRouter(DIM, index=spec, nprobe=nprobe)
    n_tasks = len(keys) // kpt
    rss0 = _bench.rss_bytes()
    slowest, slowest_at = 0.0, -1
    started = time.perf_counter()
    for t in range(n_tasks):
        t0 = time.perf_counter()
        router.add_task(t, keys[t * kpt : (t + 1) * kpt])
        dt = time.perf_counter() - t0
        if dt > slowest:
            slowest, slowest_at = dt, t
    total = time.perf_counter() - started
    import faiss

    index_bytes = len(faiss.serialize_index(router._index))
    ivf = faiss.try_extract_index_ivf(router._index)
    return router, {
        "nlist": None if ivf is None else int(ivf.nlist),
        "trained_at_vectors": router._trained_at,
        "build_s": total,
        "build_us_per_task": total / n_tasks * 1e6,
        "slowest_add_task_s": slowest,
        "slowest_add_task_at": slowest_at,
        "index_in_use": router._spec,
        "still_waiting_to_train": router._target,
        "index_bytes": index_bytes,
        "index_bytes_per_task": index_bytes / n_tasks,
        "rss_growth_bytes": _bench.rss_bytes() - rss0,
    }


class ChunkedExact:
    """Stands in for a FAISS Flat index: exact inner-product search over ``keys`` in chunks
    (faiss.knn per chunk, merged), so the exact reference needs no copy of the keys."""

    def __init__(self, keys: np.ndarray, ids: np.ndarray, chunk: int = 1 << 19) -> None:
        self.keys, self.ids, self.chunk, self.d = keys, ids, chunk, keys.shape[1]
        self.ntotal = len(keys)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        best_s = np.full((len(q), k), -np.inf, np.float32)
        best_i = np.full((len(q), k), -1, np.int64)
        for start in range(0, self.ntotal, self.chunk):
            stop = min(self.ntotal, start + self.chunk)
            s, i = faiss.knn(q, self.keys[start:stop], k, metric=faiss.METRIC_INNER_PRODUCT)
            s_all = np.concatenate([best_s, s], axis=1)
            i_all = np.concatenate([best_i, np.where(i >= 0, self.ids[start:stop][np.maximum(i, 0)], -1)], axis=1)
            top = np.argsort(-s_all, axis=1, kind="stable")[:, :k]
            best_s, best_i = np.take_along_axis(s_all, top, 1), np.take_along_axis(i_all, top, 1)
        return best_s, best_i


def chunked_exact_router(keys: np.ndarray, kpt: int) -> Any:
    from promptbank.routing import TASK_SHIFT, KNNRouter

    class ExactRouter(KNNRouter):
        def _tune_search(self, k: int) -> None:  # no FAISS index to tune
            pass

    n_tasks = len(keys) // kpt
    router = ExactRouter(DIM, index="Flat")
    ids = (np.repeat(np.arange(n_tasks, dtype=np.int64), kpt) << TASK_SHIFT) | np.tile(
        np.arange(kpt, dtype=np.int64), n_tasks
    )
    router._index, router._spec = ChunkedExact(keys, ids), "Flat (chunked brute force)"
    router._counts = dict.fromkeys(range(n_tasks), kpt)
    return router


def ivf_probe_stats(ivf: Any, whitened_queries: np.ndarray) -> dict[str, float]:
    """List sizes, and means scanned per query at the index's nprobe: a few large lists that
    most queries probe (hubs) show up as scanned >> nprobe x mean list."""
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
    _, lists = ivf.quantizer.search(np.ascontiguousarray(whitened_queries, dtype=np.float32), ivf.nprobe)
    return {
        "nlist": int(ivf.nlist),
        "nprobe": int(ivf.nprobe),
        "largest_list": int(sizes.max()),
        "mean_list": float(sizes.mean()),
        "scanned_per_query": float(sizes[lists].sum(1).mean()),
    }


def kmeans_twin(router: Any, nlist: int) -> Any:
    """The router's current whitened means in a fresh IVF-SQ8 with ``nlist`` lists, trained by
    flat spherical k-means on a sample of them as large as the router's (the auto index used
    at most 4,096 such lists once). Twins see the same data, unlike the
    index in use, which was trained at the last refresh."""
    import faiss

    from promptbank.routing.faiss_index import MIN_POINTS_PER_CENTROID

    c = router._cache
    serials = np.concatenate([np.arange(c["serials"][t].start, c["serials"][t].stop) for t in router._tasks])
    white = np.ascontiguousarray(np.concatenate([s.float_means() for s in router._tasks.values()]) @ c["whiten"])
    index = faiss.index_factory(DIM, f"IVF{nlist},SQ8", faiss.METRIC_L2)
    twin = faiss.extract_index_ivf(index)
    twin.cp.min_points_per_centroid, twin.cp.spherical = 1, True
    rng = np.random.default_rng(0)  # the router's sample size: twice the minimum per list
    size = min(len(white), 2 * MIN_POINTS_PER_CENTROID * nlist)
    index.train(white[np.sort(rng.choice(len(white), size, replace=False))])
    index.add_with_ids(white, serials)
    return index


def fp32_coarse_search(index: Any, x: np.ndarray, k: int, memo: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The router's IVF search as it was before the torch coarse step, for a side-by-side twin:
    the coarse step as one float32 numpy product with ``argpartition``, then
    ``search_preassigned`` (in the index's current parallel mode, the library's since the
    router's first route). Only the flat-quantizer IVF path is kept (the router asks no more of it)."""
    import faiss

    from promptbank.routing.faiss_index import COARSE_SCORES_MAX

    quantizer = faiss.downcast_index(index.quantizer)
    if memo.get("index") is not index:
        cent = np.ascontiguousarray(quantizer.reconstruct_n(0, index.nlist), dtype=np.float32)
        memo.clear()
        memo.update(index=index, centroids=cent, norms=(cent.astype(np.float64) ** 2).sum(axis=1).astype(np.float32))
    rows = max(1, COARSE_SCORES_MAX // int(index.nlist))
    if len(x) > rows:
        parts = [fp32_coarse_search(index, x[i : i + rows], k, memo) for i in range(0, len(x), rows)]
        return np.concatenate([d for d, _ in parts]), np.concatenate([i for _, i in parts])
    nlist, nprobe = int(index.nlist), min(int(index.nprobe), int(index.nlist))
    score = x @ memo["centroids"].T
    score *= 2.0
    score -= memo["norms"]
    lists = np.argpartition(score, nlist - nprobe, axis=1)[:, nlist - nprobe :]
    coarse = (x.astype(np.float32) ** 2).sum(axis=1, keepdims=True) - np.take_along_axis(score, lists, axis=1)
    return index.search_preassigned(
        x, k, np.ascontiguousarray(lists, dtype=np.int64), np.ascontiguousarray(coarse, dtype=np.float32)
    )


def lda_row(keys: np.ndarray, kpt: int, queries: np.ndarray, truth: np.ndarray, args: Any) -> dict[str, Any]:
    """LDARouter (the bank default) at this size, built as a bank builds it: one add_task per
    task and a route every 1% of the tasks, so what is measured is the incremental
    whitened-mean index. Compared with exact LDA: the same state loaded with a Flat index,
    whose first route recomputes the whitening and whitens every mean."""
    import faiss

    from promptbank.routing import LDARouter, faiss_index, router_from_state

    n_tasks = len(keys) // kpt
    router = LDARouter(DIM)
    every = max(1, n_tasks // 100)
    rss0 = _bench.rss_bytes()
    _bench.reset_peak_rss()
    slowest, started = 0.0, time.perf_counter()
    for t in range(n_tasks):
        t0 = time.perf_counter()
        router.add_task(t, keys[t * kpt : (t + 1) * kpt])
        if t % every == every - 1 or t == n_tasks - 1:
            router.route(queries[:1])
        slowest = max(slowest, time.perf_counter() - t0)
    build_s = time.perf_counter() - started
    rss, peak = _bench.rss_bytes() - rss0, _bench.rss_bytes("VmHWM") - rss0
    config, arrays = router.state()
    state_bytes = len(json.dumps(config)) + sum(a.nbytes for a in arrays.values())
    exact = router_from_state({**config, "index": "Flat"}, arrays)
    t0 = time.perf_counter()
    exact.route(queries[:1])
    rebuild_s = time.perf_counter() - t0
    got, ref = router.route(queries).task_ids, exact.route(queries).task_ids
    c = router._cache
    ivf = faiss.try_extract_index_ivf(c["index"])
    batch = np.ascontiguousarray(np.resize(queries, (args.batch, DIM)))
    singles = queries[: args.single_queries]
    variants = {
        "lda": lambda: router.route(batch),
        "exact": lambda: exact.route(batch),
        "single": lambda: [router.route(singles[i : i + 1]) for i in range(len(singles))],
    }

    def faiss_threshold(route: Callable[[], Any]) -> Callable[[], Any]:
        """``route`` with exhaustive searches left to FAISS's own BLAS threshold (the router
        lowers it to BLAS_MIN_QUERIES), as the Flat path once ran."""
        return _bench.with_attribute(faiss_index, "blas_search", lambda index, x, k: index.search(x, k), route)

    variants["exact_faiss_threshold"] = faiss_threshold(variants["exact"])
    if ivf is None:
        variants["lda_faiss_threshold"] = faiss_threshold(variants["lda"])
    twins: dict[str, Any] = {}
    if ivf is not None:  # side by side: the same router with another search, nprobe or index swapped in
        z = queries.astype(np.float32) @ c["whiten"]

        def routed_with(
            swap: dict[str, Any],
            nprobe: int,
            search: Callable[..., Any] | None = None,
            parallel_mode: int | None = None,
        ) -> Callable[[np.ndarray], Any]:
            def route(x: np.ndarray) -> Any:
                for key in swap:
                    swap[key], c[key] = c[key], swap[key]
                kept = router.config.nprobe, faiss_index.search
                router.config.nprobe, faiss_index.search = nprobe, search or kept[1]
                scanned = faiss.extract_index_ivf(c["index"])  # its mode was set by the memo (route above)
                mode = scanned.parallel_mode
                if parallel_mode is not None:
                    scanned.parallel_mode = parallel_mode
                try:
                    return router.route(x)
                finally:
                    if parallel_mode is not None:
                        scanned.parallel_mode = mode
                    router.config.nprobe, faiss_index.search = kept
                    for key in swap:
                        swap[key], c[key] = c[key], swap[key]

            return route

        specs = [
            ("fp32_coarse", {"index": c["index"], "memo": {}}, ivf.nprobe, fp32_coarse_search, None),
            ("serial_scan", {"index": c["index"]}, ivf.nprobe, None, 0),
            ("nprobe4", {"index": c["index"], "memo": {}}, 4, None, None),
        ]
        if ivf.nlist > faiss_index.LDA_FLAT_KMEANS_MAX_NLIST:  # two-level lists vs as many flat ones as the old cap
            old_cap = kmeans_twin(router, faiss_index.LDA_FLAT_KMEANS_MAX_NLIST)
            specs.append(("old_cap", {"index": old_cap, "memo": {}}, ivf.nprobe, None, None))
        for name, swap, nprobe, search, parallel_mode in specs:
            route = routed_with(swap, nprobe, search, parallel_mode)
            routed = route(queries).task_ids  # also sets the twin's nprobe
            probe = (
                ivf_probe_stats(faiss.extract_index_ivf(swap["index"]), z) if swap["index"] is not c["index"] else None
            )
            twins[name] = {
                "nprobe": nprobe,
                "probe": probe,
                "agreement_with_exact_lda": float(np.mean(routed == ref)),
                "accuracy_true_task": float(np.mean(routed == truth)),
            }
            variants[f"twin_{name}"] = lambda route=route: route(batch)
    times = _bench.interleaved(variants, repeats=args.repeats, warmup=1, rewarm=not args.no_rewarm)
    extra = _unit(keys[:kpt] + 0.1)
    t0 = time.perf_counter()
    router.add_task(n_tasks, extra)
    router.route(queries[:1])
    add_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    router.remove_task(n_tasks // 2)
    router.route(queries[:1])
    remove_ms = (time.perf_counter() - t0) * 1e3
    row = {
        "view": "lda",
        "build_s": build_s,
        "slowest_add_task_and_route_s": slowest,
        "index_in_use": "Flat" if ivf is None else f"IVF{ivf.nlist},SQ8",
        "whitening_keys_at": c["keys_at"],
        "keys_now": router._n_keys,
        "state_bytes_per_task": state_bytes / n_tasks,
        "rss_growth_bytes": rss,
        "rss_peak_growth_bytes": peak,
        "exact_full_rebuild_s": rebuild_s,
        "agreement_with_exact_lda": float(np.mean(got == ref)),
        "accuracy_true_task": float(np.mean(got == truth)),
        "exact_lda_accuracy_true_task": float(np.mean(ref == truth)),
        "route_batch_us_per_query": _bench.summary(times["lda"], scale=1e6 / args.batch),
        "exact_route_batch_us_per_query": _bench.summary(times["exact"], scale=1e6 / args.batch),
        "exact_faiss_threshold_over_now_time": _bench.ratio(times["exact_faiss_threshold"], times["exact"]),
        **(
            {
                "lda_faiss_threshold_route_batch_us_per_query": _bench.summary(
                    times["lda_faiss_threshold"], scale=1e6 / args.batch
                ),
                "lda_faiss_threshold_over_now_time": _bench.ratio(times["lda_faiss_threshold"], times["lda"]),
            }
            if ivf is None
            else {}
        ),
        "route_single_us_per_query": _bench.summary(times["single"], scale=1e6 / max(len(singles), 1)),
        "add_one_task_and_route_ms": add_ms,
        "remove_one_task_and_route_ms": remove_ms,
    }
    if twins:
        row["probe"] = ivf_probe_stats(ivf, z)
        for name, twin in twins.items():
            twin["route_batch_us_per_query"] = _bench.summary(times[f"twin_{name}"], scale=1e6 / args.batch)
            _bench.log(
                f"  lda variant {name}: {twin['probe'] or 'own index'}, nprobe {twin['nprobe']}, agree "
                f"{twin['agreement_with_exact_lda']:.3f}, true {twin['accuracy_true_task']:.3f}, batch {twin['route_batch_us_per_query']['median']:.1f} us/q"
            )
        twins["fp32_coarse_over_now_time"] = _bench.ratio(times["twin_fp32_coarse"], times["lda"])
        twins["nprobe4_over_now_time"] = _bench.ratio(times["twin_nprobe4"], times["lda"])
        twins["serial_scan_over_now_time"] = _bench.ratio(times["twin_serial_scan"], times["lda"])
        if "old_cap" in twins:
            twins["old_cap_over_now_time"] = _bench.ratio(times["twin_old_cap"], times["lda"])
        row["variants"] = twins
    _bench.log(
        f"  lda: built in {build_s:.1f}s (slowest add+route {slowest:.2f}s), {row['index_in_use']}, "
        f"{row['state_bytes_per_task']:.0f} B/task state, RSS +{rss / n_tasks:.0f} B/task (peak +{peak / n_tasks:.0f}), agree with exact LDA {row['agreement_with_exact_lda']:.3f}, "
        f"true {row['accuracy_true_task']:.3f} (exact {row['exact_lda_accuracy_true_task']:.3f}); batch "
        f"{row['route_batch_us_per_query']['median']:.1f} us/q (exact {row['exact_route_batch_us_per_query']['median']:.1f}); "
        f"full rebuild {rebuild_s:.2f}s; add+route {add_ms:.1f} ms, remove+route {remove_ms:.1f} ms"
    )
    return row


def raw_search(router: Any, queries: np.ndarray) -> None:
    """The FAISS search the router issues, without the router's vote / bookkeeping."""
    k = min(router.ntotal, 256, router.config.k + 2 * max(router._counts.values()))
    router._tune_search(k)
    router._index.search(queries, k)


def parse_view(view: str) -> tuple[str, dict[str, int]]:
    """ "HNSW32@ef128" -> ("HNSW32", {"ef": 128}); "IVFPQ@nprobe64" -> ("IVFPQ", {"nprobe": 64})."""
    base, _, opt = view.partition("@")
    if not opt:
        return base, {}
    for name in ("nprobe", "ef"):
        if opt.startswith(name):
            return base, {name: int(opt[len(name) :])}
    raise SystemExit(f"unknown view option {opt!r} (use @efN or @nprobeN)")


def configure(router: Any, params: dict[str, int], defaults: dict[str, Any]) -> None:
    """Search-time settings of one view of a built router (same index, other knobs)."""
    import faiss

    router.config.nprobe = params.get("nprobe", defaults["nprobe"])
    inner = faiss.downcast_index(router._index.index) if hasattr(router._index, "id_map") else None
    if inner is not None and hasattr(inner, "hnsw"):
        # the router only ever raises efSearch (max(current, 2k)): reset it per view
        inner.hnsw.efSearch = params.get("ef", defaults["ef"])


def main() -> None:
    global DIM
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(parser, "runs/bench/routing.json")
    parser.add_argument("--tasks", type=int, nargs="+", default=[10, 1000, 10000, 100000])
    parser.add_argument(
        "--indexes",
        nargs="+",
        default=["Flat", "auto", "auto@nprobe8", "auto@nprobe32", "IVF{nlist},SQ8", "IVFPQ", "HNSW32"],
        help="FAISS specs or 'auto', each optionally with a search-time option @efN / @nprobeN; "
        "IVFPQ = IVF{nlist},PQ48 (the auto index before this benchmark); "
        "{nlist} = the lists auto_large_spec gives at this size",
    )
    parser.add_argument(
        "--ivfpq-suffix",
        default="np",
        help="appended to the IVFPQ spec: 'np' = no polysemous training (FAISS' factory default "
        "trains polysemous codes, ~45x slower to train and unused by the router); '' = as the library does",
    )
    parser.add_argument(
        "--dim", type=int, default=DIM, help="key dimension (default: the bank's default key, %(default)s)"
    )
    parser.add_argument("--keys-per-task", type=int, default=4)
    parser.add_argument("--domain-size", type=int, default=16, help="tasks per cluster of near neighbours")
    parser.add_argument("--task-spread", type=float, default=0.5, help="task centre noise around its domain")
    parser.add_argument("--key-spread", type=float, default=0.6, help="key noise around its task centre")
    parser.add_argument("--query-spread", type=float, default=2.0, help="query noise around its task centre")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--accuracy-queries", type=int, default=1000)
    parser.add_argument("--single-queries", type=int, default=50, help="single-query calls per repetition")
    parser.add_argument("--batch", type=int, default=256, help="queries per batched call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--skip-remove",
        nargs="*",
        default=[],
        help="index types whose remove_task is not timed (e.g. HNSW32 at 100k: a full rebuild)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-rewarm",
        action="store_true",
        help="time each call right after a neighbour's, not after an untimed call of its own (a former default)",
    )
    parser.add_argument("--lda", action="store_true", help="also measure LDARouter (the bank default) at each size")
    parser.add_argument(
        "--exact-chunked",
        action="store_true",
        help="exact reference by chunked brute force through the router's vote, not a Flat router",
    )
    args = parser.parse_args()
    DIM = args.dim
    _bench.set_threads(args.threads)

    from promptbank.routing.faiss_index import AUTO_FLAT_MAX_VECTORS, auto_large_spec

    machine = _bench.machine_info()
    results = []
    for n_tasks in args.tasks:
        kpt = args.keys_per_task
        centres, keys = make_keys(n_tasks, kpt, args.domain_size, (args.task_spread, args.key_spread), args.seed)
        queries, truth = make_queries(centres, args.accuracy_queries, args.query_spread, args.seed)
        n_vec = len(keys)
        views = {v: parse_view(v) for v in args.indexes}
        if "Flat" not in views:
            views = {"Flat": ("Flat", {}), **views}  # the exact reference
        auto = auto_large_spec(n_vec, DIM)
        nlist = int(auto.split(",")[0][3:])
        ivfpq = f"IVF{nlist},PQ{DIM // 8}" + args.ivfpq_suffix
        builds = {base: (ivfpq if base == "IVFPQ" else base.format(nlist=nlist)) for base, _ in views.values()}
        _bench.log(f"{n_tasks} tasks x {kpt} keys = {n_vec} vectors; builds {builds}; views {list(views)}")
        routers, built = {}, {}
        for base, spec in builds.items():
            gc.collect()
            if base == "Flat" and args.exact_chunked:
                routers[base] = chunked_exact_router(keys, kpt)
                built[base] = {
                    "spec": "Flat (chunked brute force, not a router index)",
                    "index_in_use": "Flat",
                    "index_bytes": None,
                }
                continue
            router, stats = build(spec, keys, kpt, args.nprobe)
            routers[base] = router
            built[base] = {"spec": spec, **stats}
            _bench.log(
                f"  built {base} ({spec}) in {stats['build_s']:.2f}s, in use {stats['index_in_use']}, "
                f"{stats['index_bytes_per_task']:.0f} B/task, slowest add_task {stats['slowest_add_task_s'] * 1e3:.1f} ms "
                f"(task {stats['slowest_add_task_at']})"
            )
        from promptbank.routing.faiss_index import HNSW_MIN_EF_SEARCH

        defaults = {"nprobe": args.nprobe, "ef": HNSW_MIN_EF_SEARCH}

        def run(view: str, fn: Any) -> Any:
            base, params = views[view]
            configure(routers[base], params, defaults)
            return fn(routers[base])

        # accuracy: agreement with exact search, and with the true task
        rows: dict[str, dict[str, Any]] = {}
        exact = run("Flat", lambda r: r.route(queries).task_ids)
        for view, (base, params) in views.items():
            got = exact if view == "Flat" else run(view, lambda r: r.route(queries).task_ids)
            rows[view] = {
                "view": view,
                "index": base,
                "search_params": params,
                **built[base],
                "agreement_with_exact": float(np.mean(got == exact)),
                "accuracy_true_task": float(np.mean(got == truth)),
            }

        # latency: single queries and batches, router vs raw FAISS, interleaved across views
        singles = queries[: args.single_queries]
        batch = np.ascontiguousarray(np.resize(queries, (args.batch, DIM)))
        cases = {}
        timed = [
            v for v in views if not (args.exact_chunked and views[v][0] == "Flat")
        ]  # brute force: not a router index
        for view in timed:
            cases[f"{view}|route_single"] = lambda v=view: run(
                v, lambda r: [r.route(singles[i : i + 1]) for i in range(len(singles))]
            )
            cases[f"{view}|raw_single"] = lambda v=view: run(
                v, lambda r: [raw_search(r, singles[i : i + 1]) for i in range(len(singles))]
            )
            cases[f"{view}|route_batch"] = lambda v=view: run(v, lambda r: r.route(batch))
            cases[f"{view}|raw_batch"] = lambda v=view: run(v, lambda r: raw_search(r, batch))
        times = _bench.interleaved(cases, repeats=args.repeats, warmup=1, rewarm=not args.no_rewarm)
        for key, samples in times.items():
            view, what = key.split("|")
            per = len(singles) if what.endswith("single") else args.batch
            rows[view][f"{what}_us_per_query"] = _bench.summary(samples, scale=1e6 / per)
        for view in timed:
            rows[view]["vs_flat"] = (
                None
                if "Flat" not in timed
                else {
                    what: _bench.ratio(times[f"{view}|{what}"], times[f"Flat|{what}"])
                    for what in ("route_single", "route_batch")
                }
            )

        # add one task, remove one task (mid-bank), per built index
        extra = _unit(keys[:kpt] + 0.1)  # any new vectors
        gone = n_tasks // 2
        gone_keys = np.ascontiguousarray(keys[gone * kpt : (gone + 1) * kpt])
        for base, router in routers.items():
            built[base]["add_one_task_ms"] = built[base]["remove_one_task_ms"] = None
            if args.exact_chunked and base == "Flat":
                continue
            configure(router, {}, defaults)
            t0 = time.perf_counter()
            router.add_task(n_tasks, extra)
            built[base]["add_one_task_ms"] = (time.perf_counter() - t0) * 1e3
            built[base]["added_task_routed_to_itself"] = float(np.mean(router.route(extra).task_ids == n_tasks))
            if base in args.skip_remove:
                continue
            before = router.ntotal
            t0 = time.perf_counter()
            router.remove_task(gone)
            built[base]["remove_one_task_ms"] = (time.perf_counter() - t0) * 1e3
            built[base]["removed_vectors"] = before - router.ntotal
            built[base]["removed_task_still_a_candidate"] = bool((router.route(gone_keys).candidates == gone).any())
        for view, row in rows.items():
            b = built[row["index"]]
            for key in (
                "add_one_task_ms",
                "remove_one_task_ms",
                "added_task_routed_to_itself",
                "removed_vectors",
                "removed_task_still_a_candidate",
            ):
                row[key] = b.get(key)
            rm = "skipped" if row["remove_one_task_ms"] is None else f"{row['remove_one_task_ms']:.2f} ms"
            add = "skipped" if row["add_one_task_ms"] is None else f"{row['add_one_task_ms']:.2f} ms"
            if view not in timed:
                _bench.log(f"  {view:15s} true {row['accuracy_true_task']:.3f} (exact reference)")
                continue
            _bench.log(
                f"  {view:15s} agree {row['agreement_with_exact']:.3f} true {row['accuracy_true_task']:.3f} | "
                f"single {row['route_single_us_per_query']['median']:.0f} us (raw {row['raw_single_us_per_query']['median']:.0f}) | "
                f"batch {row['route_batch_us_per_query']['median']:.1f} us/q (raw {row['raw_batch_us_per_query']['median']:.1f}) | "
                f"add {add}, remove {rm}"
            )
        entry = {"n_tasks": n_tasks, "n_vectors": n_vec, "rows": list(rows.values())}
        if args.lda:
            routers = None
            gc.collect()
            routers = {}
            entry["lda"] = lda_row(keys, kpt, queries, truth, args)
        results.append(entry)
        routers = keys = centres = None
        gc.collect()

    _bench.write_json(
        args.out,
        {
            "bench": "routing",
            "args": vars(args),
            "machine": machine,
            "auto_flat_max_vectors_current": AUTO_FLAT_MAX_VECTORS,
            "auto_large_spec_at_sizes": {str(r["n_vectors"]): auto_large_spec(r["n_vectors"], DIM) for r in results},
            "results": results,
        },
    )
    _bench.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
