"""The default router at a million tasks: RSS, route time and agreement with exact LDA,
measured on one machine at the default settings (``lda``, 960-d keys, 6-bit class means).

A bank that holds a million tasks was saved and is loaded: the router's state is built in
bulk (each synthetic task's unit keys give its mean, and their centred rows the shared scatter,
exactly as ``add_task`` computes them) and loaded with ``router_from_state``, as
``PromptBank.load`` does; the first route whitens every mean and builds the index. Adding a
million tasks one ``add_task`` at a time works the same way but takes ~1 ms each (the
distributed trainer merges routers instead, ``Router.merge``). Then tasks are added and
removed at that size, and routing is compared with exact LDA: a brute-force search over every
whitened mean, in chunks, with the same whitening.

Tasks are synthetic, as in ``routing.py``: unit centres in domains of ``--domain-size`` near
neighbours, ``--keys-per-task`` keys around each, one class (one mean) per task; queries are
noisier draws around random task centres.

    OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 .venv/bin/python scripts/bench/router_scale.py --threads 2 \\
        --tasks 1000000 --out runs/bench/router-scale-1m.json
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

import _bench
import numpy as np

GOAL_RSS_BYTES = 4 << 30  # the issue: 1M tasks in <= 4 GB RSS
GOAL_AGREEMENT = 0.95
CHUNK = 8192  # tasks generated and folded in at a time


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def task_keys(start: int, stop: int, args: Any, domains: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centres, keys) of tasks ``start:stop``, seeded by ``start``."""
    rng = np.random.default_rng([args.seed, start])
    noise = rng.standard_normal((stop - start, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    centres = unit(domains[np.arange(start, stop) % len(domains)] + args.task_spread * noise)
    base = np.repeat(centres, args.keys_per_task, axis=0)
    noise = rng.standard_normal(base.shape, dtype=np.float32) / np.sqrt(args.dim)
    return centres, unit(base + args.key_spread * noise)


def bulk_state(
    args: Any, domains: np.ndarray, truth: np.ndarray
) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """An LDA router's saved state for ``args.tasks`` synthetic tasks, built a chunk at a time,
    and the centres of the tasks in ``truth`` (where the queries are drawn)."""
    from promptbank.routing import make_router
    from promptbank.routing.mean_codes import quantize_means, saved_means
    from promptbank.routing.stats import pack_upper

    n, kpt, d = args.tasks, args.keys_per_task, args.dim
    config, _ = make_router("lda", dim=d).state()
    bits = config["mean_bits"]
    if bits not in (6, 8):
        raise SystemExit(f"bulk_state builds 6- or 8-bit means, the router's default is {bits}")
    codes, scales, outliers = None, None, None
    scatter = np.zeros((d, d))
    query_centres = np.empty((len(truth), d), np.float32)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        centres, keys = task_keys(start, stop, args, domains)
        inside = (truth >= start) & (truth < stop)
        query_centres[inside] = centres[truth[inside] - start]
        keys = keys.astype(np.float64).reshape(stop - start, kpt, d)
        means = keys.mean(axis=1)
        centred = (keys - means[:, None]).reshape(-1, d)
        scatter += centred.T @ centred
        q, s, o = quantize_means(means, bits)
        q = saved_means(q, bits)  # packed a chunk at a time: packing 1M x 960 at once took ~10 GB
        if codes is None:  # the arrays as a saved bank holds them
            codes = np.empty((n, q.shape[1]), q.dtype)
            scales = np.empty((n, s.shape[1]), s.dtype)
            outliers = np.empty((n, o.shape[1]), np.int16)
        codes[start:stop], scales[start:stop], outliers[start:stop] = q, s, o
    config["tasks"] = [[t, 1] for t in range(n)]
    arrays = {
        "comp_label": np.full(n, -1, np.int64),
        "comp_count": np.full(n, kpt, np.int64),
        "comp_mean": codes,
        "comp_mean_scale": scales,
        "comp_mean_outlier": outliers,
        "task_factor": np.zeros((n, 0, d), np.float16),
        "scatter_packed": pack_upper(scatter),
    }
    return config, arrays, query_centres


def exact_nearest(router: Any, queries: np.ndarray) -> np.ndarray:
    """Exact LDA with one mean per task: the task of the nearest whitened mean, by brute force
    over every mean, a chunk of tasks at a time, with the router's own whitening."""
    from promptbank.keys import l2_normalize

    c = router._prepared()
    z = l2_normalize(queries).astype(np.float64) @ c["whiten"].astype(np.float64)
    best = np.full(len(z), np.inf)
    arg = np.full(len(z), -1, np.int64)
    tids = np.array(router.task_ids())
    for lo in range(0, len(tids), CHUNK):
        ids = tids[lo : lo + CHUNK]
        white = np.concatenate([router._tasks[int(t)].float_means() for t in ids]).astype(np.float64) @ c["whiten"]
        dist = (z**2).sum(1)[:, None] - 2 * z @ white.T + (white**2).sum(1)[None]
        j = dist.argmin(axis=1)
        better = dist[np.arange(len(z)), j] < best
        best[better], arg[better] = dist[np.arange(len(z)), j][better], ids[j][better]
    return arg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(parser, "runs/bench/router-scale.json")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=960, help="key dimension (the default key's)")
    parser.add_argument("--keys-per-task", type=int, default=4)
    parser.add_argument("--domain-size", type=int, default=16, help="tasks per cluster of near neighbours")
    parser.add_argument("--task-spread", type=float, default=0.5)
    parser.add_argument("--key-spread", type=float, default=0.6)
    parser.add_argument("--query-spread", type=float, default=2.0)
    parser.add_argument("--queries", type=int, default=1000, help="queries for agreement and accuracy")
    parser.add_argument("--batch", type=int, default=256, help="queries per batched route")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--edits", type=int, default=1000, help="tasks added, then removed, at full size")
    parser.add_argument("--nprobe", default="8,4", help="IVF lists scanned per query, timed side by side")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _bench.set_threads(args.threads)

    from promptbank.routing import router_from_state

    machine = _bench.machine_info()
    rng = np.random.default_rng(args.seed)
    domains = unit(rng.standard_normal((max(1, -(-args.tasks // args.domain_size)), args.dim), dtype=np.float32))
    truth = rng.integers(0, args.tasks, args.queries)
    noise = rng.standard_normal((args.queries, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    gc.collect()
    rss0 = _bench.rss_bytes()
    _bench.reset_peak_rss()

    t0 = time.perf_counter()
    config, arrays, centres = bulk_state(args, domains, truth)
    state_s = time.perf_counter() - t0
    queries = unit(centres + args.query_spread * noise)
    state_bytes = sum(a.nbytes for a in arrays.values())
    router = router_from_state(config, arrays)
    del arrays  # the router keeps views of what it needs, as after PromptBank.load
    gc.collect()
    t0 = time.perf_counter()
    router.route(queries[:1])  # whitening + index of every mean
    prepare_s = time.perf_counter() - t0
    rss_loaded = _bench.rss_bytes() - rss0
    _bench.log(
        f"{args.tasks:,} tasks: state {state_bytes / 2**20:.0f} MiB built in {state_s:.0f} s; first route "
        f"{prepare_s:.0f} s; RSS +{rss_loaded / 2**30:.2f} GiB"
    )

    t0 = time.perf_counter()
    extra = range(args.tasks, args.tasks + args.edits)
    _, keys = task_keys(args.tasks, args.tasks + args.edits, args, domains)
    for i, t in enumerate(extra):
        router.add_task(t, keys[i * args.keys_per_task : (i + 1) * args.keys_per_task])
    router.route(queries[:1])
    add_ms = (time.perf_counter() - t0) * 1e3 / args.edits
    t0 = time.perf_counter()
    for t in extra:
        router.remove_task(t)
    router.route(queries[:1])
    remove_ms = (time.perf_counter() - t0) * 1e3 / args.edits
    _bench.log(f"add {add_ms:.2f} ms/task, remove {remove_ms:.2f} ms/task (incl. index updates)")

    got = router.route(queries).task_ids
    ref = exact_nearest(router, queries)
    agreement, accuracy, exact_accuracy = (
        float(np.mean(got == ref)),
        float(np.mean(got == truth)),
        float(np.mean(ref == truth)),
    )
    batch = np.ascontiguousarray(np.resize(queries, (args.batch, args.dim)))
    timing = {}
    for nprobe in [int(x) for x in args.nprobe.split(",")]:
        router.config.nprobe = nprobe
        samples = [_bench.timed(lambda: router.route(batch)) for _ in range(args.repeats)]
        agree_np = float(np.mean(router.route(queries).task_ids == ref))
        timing[str(nprobe)] = {
            "route_batch_us_per_query": _bench.summary(samples, scale=1e6 / args.batch),
            "agreement_with_exact": agree_np,
        }
        _bench.log(
            f"nprobe {nprobe}: {timing[str(nprobe)]['route_batch_us_per_query']['median']:.1f} us/query "
            f"(batch {args.batch}), agreement {agree_np:.3f}"
        )
    router.config.nprobe = int(args.nprobe.split(",")[0])
    rss_end, peak = _bench.rss_bytes() - rss0, _bench.rss_bytes("VmHWM") - rss0
    c = router._cache
    result = {
        "bench": "router_scale",
        "args": vars(args),
        "machine": machine,
        "tasks": args.tasks,
        "router": router.config_state(),
        "index_in_use": type(c["index"]).__name__,
        "state_bytes": state_bytes,
        "state_bytes_per_task": state_bytes / args.tasks,
        "rss_after_first_route_bytes": rss_loaded,
        "rss_bytes": rss_end,
        "rss_bytes_per_task": rss_end / args.tasks,
        "rss_peak_bytes": peak,
        "goal_rss_bytes": GOAL_RSS_BYTES,
        "state_build_s": state_s,
        "first_route_s": prepare_s,
        "add_ms_per_task": add_ms,
        "remove_ms_per_task": remove_ms,
        "agreement_with_exact": agreement,
        "goal_agreement": GOAL_AGREEMENT,
        "accuracy_true_task": accuracy,
        "exact_accuracy_true_task": exact_accuracy,
        "by_nprobe": timing,
    }
    _bench.log(
        f"RSS +{rss_end / 2**30:.2f} GiB (peak +{peak / 2**30:.2f}); agreement with exact {agreement:.3f}; "
        f"true task {accuracy:.3f} (exact {exact_accuracy:.3f})"
    )
    _bench.write_json(args.out, result)


if __name__ == "__main__":
    main()
