"""Which key source routes best? The same streams, encoded with each key source, routed by the
default `lda` router and by the k-NN vote baseline, with and without the validation keys.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_keys.py --out runs/compare_keys.json

Keys are cached per part under runs/keys_cache/ (shared with scripts/routing_study.py), so a
"+" key costs nothing once its parts have been encoded. Prints a table; writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import routing_study as study  # noqa: E402  (sets threads/offline env, puts the repo on sys.path)

from promptbank.routing import make_router  # noqa: E402

ROUTERS = {"lda": {"strategy": "lda"}, "knn-10-all": {"strategy": "knn", "k": 10, "summary": "all"}}
KEYS = "minilm,embedding-mean,embedding-set-mean,minilm+embedding-mean,minilm+embedding-set-mean"  # add backbone-mean: a full LLM forward per text (~1 h here)


def accuracy(router_options: dict, tasks: list[study.TaskKeys]) -> float:
    router = make_router(dim=tasks[0].train.shape[1], **router_options)
    for i, t in enumerate(tasks):
        router.add_task(i, t.train, t.labels)
    routed = np.concatenate([router.route(t.test, top=1).task_ids for t in tasks])
    truth = np.concatenate([np.full(len(t.test), i) for i, t in enumerate(tasks)])
    return float(np.mean(routed == truth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="offline-9,vader-4,split-20ng")
    parser.add_argument("--keys", default=KEYS, help="comma-separated key encoders (parts joined with '+')")
    parser.add_argument("--out", default="runs/compare_keys.json")
    args = parser.parse_args()
    study._set_threads()
    encoder = study._LazyEncoder()
    rows = []
    for keys in args.keys.split(","):
        study.KEY_ENCODER = keys
        for name in args.streams.split(","):
            order = 1 if 1 in study.STREAMS[name].orders else None
            started = time.perf_counter()
            for router_val in (False, True):
                tasks = study.load_stream(name, order, encoder, router_val=router_val)
                for router, options in ROUTERS.items():
                    acc = accuracy(options, tasks)
                    rows.append({"keys": keys, "stream": name, "router": router, "router_val": router_val,
                                 "dim": int(tasks[0].train.shape[1]), "accuracy": acc})
                    print(f"{keys:<24} {name:<11} {router:<11} val keys {'yes' if router_val else 'no ':<3}  "
                          f"routing {acc:.4f}", flush=True)
            rows[-1]["seconds_with_encoding"] = time.perf_counter() - started
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"budgets": study.BUDGETS, "environment": study._environment(), "rows": rows}, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
