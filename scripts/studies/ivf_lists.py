"""How large should the LDA router's IVF lists be on a CPU without AVX-512?

The batched route over an IVF index costs two products per query: choosing its lists (every list
centre, ``nlist x dim``) and scanning the ``nprobe`` chosen lists (``nprobe x means per list x
dim``, 8-bit codes). ``faiss_index.LDA_MEANS_PER_LIST`` (24) makes lists small and many: cheap to
scan, costly to choose among, which an 8-bit coarse product (AVX-512) pays for and a float32 one
(AVX2) does not. This study builds one 100k-task router state (``router_scale.py``'s synthetic
tasks, the defaults otherwise), loads it once per list size, and times the batched routes side by
side (interleaved repeats), with agreement against exact LDA.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/studies/ivf_lists.py --threads 1 --tasks 100000 \\
        --means-per-list 24,96,384 --out runs/studies/ivf-lists.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import _bench  # noqa: E402
import router_scale  # noqa: E402


def route_parts(router: Any, batch: np.ndarray, nprobe: int) -> dict[str, float]:
    """Seconds of the batched route's three products, as ``GaussianRouter._candidates`` and
    ``faiss_index.search`` run them: whitening the queries, choosing each query's lists (float32
    product with every list centre, then top-nprobe) and scanning the chosen lists."""
    import torch

    from promptbank.keys import l2_normalize

    c = router._prepared()
    ivf = faiss.extract_index_ivf(c["index"])
    memo = c["memo"]
    t0 = time.perf_counter()
    z = (torch.from_numpy(l2_normalize(batch)) @ torch.from_numpy(c["whiten"])).numpy()
    t1 = time.perf_counter()
    score = torch.from_numpy(z) @ memo["centroids"].T
    lists = torch.topk(score.sub_(memo["half_norms"]), nprobe, dim=1, sorted=False).indices.numpy()
    t2 = time.perf_counter()
    ivf.nprobe = nprobe
    k = min(ivf.ntotal, router.config.search_k)
    ivf.search_preassigned(z, k, lists, np.zeros(lists.shape, np.float32))
    t3 = time.perf_counter()
    return {"whiten": t1 - t0, "choose lists": t2 - t1, "scan lists": t3 - t2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(parser, "runs/studies/ivf-lists.json")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=960)
    parser.add_argument("--keys-per-task", type=int, default=4)
    parser.add_argument("--domain-size", type=int, default=16)
    parser.add_argument("--task-spread", type=float, default=0.5)
    parser.add_argument("--key-spread", type=float, default=0.6)
    parser.add_argument("--query-spread", type=float, default=2.0)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--means-per-list", default="24,96,384")
    parser.add_argument("--nprobe", default="8,4")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _bench.set_threads(args.threads)

    from promptbank.routing import faiss_index, router_from_state

    rng = np.random.default_rng(args.seed)
    domains = router_scale.unit(
        rng.standard_normal((max(1, -(-args.tasks // args.domain_size)), args.dim), dtype=np.float32)
    )
    truth = rng.integers(0, args.tasks, args.queries)
    noise = rng.standard_normal((args.queries, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    config, arrays, centres = router_scale.bulk_state(args, domains, truth)
    queries = router_scale.unit(centres + args.query_spread * noise)
    batch = np.ascontiguousarray(np.resize(queries, (args.batch, args.dim)))

    cases: dict[str, dict] = {}
    ref = None
    for size in (int(s) for s in args.means_per_list.split(",")):
        faiss_index.LDA_MEANS_PER_LIST = size
        router = router_from_state(config, arrays)
        t0 = time.perf_counter()
        router.route(queries[:1])  # whitening + the index, with this list size
        first_s = time.perf_counter() - t0
        if ref is None:
            ref = router_scale.exact_nearest(router, queries)
        ivf = faiss.extract_index_ivf(router._cache["index"])
        for nprobe in (int(p) for p in args.nprobe.split(",")):
            name = f"{size}/list, nprobe {nprobe}"
            router.config.nprobe = nprobe
            got = router.route(queries).task_ids
            cases[name] = {
                "router": router,
                "nprobe": nprobe,
                "means_per_list": size,
                "nlist": int(ivf.nlist),
                "first_route_s": first_s,
                "agreement_with_exact": float(np.mean(got == ref)),
                "accuracy_true_task": float(np.mean(got == truth)),
                "samples": [],
            }
            _bench.log(f"{name}: {ivf.nlist} lists, agreement {cases[name]['agreement_with_exact']:.3f}")

    names = list(cases)
    for rep in range(args.repeats):  # interleaved: A B C, then C B A, ...
        for name in names if rep % 2 == 0 else names[::-1]:
            case = cases[name]
            case["router"].config.nprobe = case["nprobe"]
            case["samples"].append(_bench.timed(lambda r=case["router"]: r.route(batch)))
            for part, seconds in route_parts(case["router"], batch, case["nprobe"]).items():
                case.setdefault("parts", {}).setdefault(part, []).append(seconds)
    base = names[0]
    rows = {}
    for name, case in cases.items():
        rows[name] = {k: v for k, v in case.items() if k not in ("router", "samples", "parts")}
        rows[name]["parts_us_per_query"] = {
            part: float(np.median(t)) * 1e6 / args.batch for part, t in case["parts"].items()
        }
        rows[name]["route_batch_us_per_query"] = _bench.summary(case["samples"], scale=1e6 / args.batch)
        ratios = [a / b for a, b in zip(case["samples"], cases[base]["samples"])]
        rows[name][f"paired_ratio_to_{base}"] = float(np.median(ratios))
        _bench.log(
            f"{name}: {rows[name]['route_batch_us_per_query']['median']:.1f} us/query, "
            f"x{rows[name][f'paired_ratio_to_{base}']:.2f} of {base}, agreement {case['agreement_with_exact']:.3f}"
        )
    result = {
        "bench": "ivf_lists",
        "args": vars(args),
        "machine": _bench.machine_info(),
        "exact_accuracy_true_task": float(np.mean(ref == truth)),
        "cases": rows,
    }
    _bench.write_json(args.out, result)


if __name__ == "__main__":
    main()
