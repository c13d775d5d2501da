"""Which key source routes best? Encode the same tasks with each key encoder and route the test
inputs with each routing strategy; prints a table and writes JSON (``--out``).

    .venv/bin/python scripts/compare_keys.py --out runs/compare_keys.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from promptbank.backbone import load_backbone
from promptbank.keys import make_key_encoder
from promptbank.router import make_router
from streams.splits import get_task

ROUTERS = {"knn-10-all": {"strategy": "knn", "k": 10, "summary": "all"}, "knn": {"strategy": "knn"}, "gaussian": {"strategy": "gaussian"},
           "lda": {"strategy": "lda"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default="bbc,trec,rotten_tomatoes,sms_spam")
    parser.add_argument("--encoders", default="minilm,embedding-mean,backbone-mean")
    parser.add_argument("--train-per-class", type=int, default=50)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    tasks = [get_task(n, args.train_per_class, 1, args.test_per_class, seed=0) for n in args.tasks.split(",")]
    backbone = load_backbone()
    rows = []
    for enc_name in args.encoders.split(","):
        encoder = make_key_encoder(enc_name, backbone=backbone)
        started = time.perf_counter()
        train = [encoder.encode(t.train_texts) for t in tasks]
        test = [encoder.encode(t.test_texts) for t in tasks]
        seconds = time.perf_counter() - started
        n_texts = sum(len(t.train_texts) + len(t.test_texts) for t in tasks)
        for router_name, options in ROUTERS.items():
            router = make_router(dim=encoder.dim, **options)
            for i, (t, keys) in enumerate(zip(tasks, train)):
                router.add_task(i, keys, np.asarray(t.train_labels))
            per_task = {t.name: float(np.mean(router.route(q, top=1).task_ids == i)) for i, (t, q) in enumerate(zip(tasks, test))}
            overall = float(np.mean([r == i for i, q in enumerate(test) for r in router.route(q, top=1).task_ids]))
            rows.append({"encoder": enc_name, "router": router_name, "routing_acc": overall, "per_task": per_task,
                         "encode_seconds": round(seconds, 1), "texts": n_texts, "dim": encoder.dim})
            print(f"{enc_name:<15} {router_name:<11} routing {overall:.3f}  " + " ".join(f"{k}={v:.2f}" for k, v in per_task.items())
                  + f"  ({seconds:.0f} s to encode {n_texts} texts)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"tasks": [t.name for t in tasks], "budgets": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
