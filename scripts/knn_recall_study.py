"""Where does a k-NN vote over every key beat ``lda``? On inputs that repeat training text?

    .venv/bin/python scripts/knn_recall_study.py --stream split-20ng --out runs/knn_recall_split-20ng.json

Keys, budgets and routers are those of ``scripts/routing_study.py`` (its key cache is reused).
A test input *overlaps* when it shares a run of ``--ngram`` words with a router training text of
the stream that at most ``--max-df`` training texts contain (so quoted replies, signatures and
cross-posts count, boilerplate does not). Reported: the share of overlapping test inputs, each
router's routing accuracy on the inputs with and without overlap, and McNemar's exact test
(the inputs only one of the two routes right) overall and per part.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from math import comb
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import routing_study as rs  # noqa: E402  (sets the thread and offline environment first)
from streams.named import stream_tasks  # noqa: E402
from streams.splits import get_task  # noqa: E402

ROUTERS = ("lda", "knn-10-all")


def _grams(text: str, n: int) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _mcnemar(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the discordant inputs."""
    n = only_a + only_b
    return min(1.0, 2 * sum(comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n) if n else 1.0


def overlaps(stream: str, n: int, max_df: int) -> np.ndarray:
    """Per test input, in stream order: does it share a rare ``n``-word run with a router training text?"""
    router_texts, test_texts = [], []
    for name in stream_tasks(stream, None):
        data = get_task(name, **rs.BUDGETS)
        router_texts += data.train_texts + data.key_texts + data.val_texts
        test_texts += data.test_texts
    df = collections.Counter(g for text in router_texts for g in _grams(text, n))
    return np.array([any(0 < df.get(g, 0) <= max_df for g in _grams(text, n)) for text in test_texts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="split-20ng", choices=sorted(rs.STREAMS))
    parser.add_argument("--ngram", type=int, default=8, help="words in a shared run")
    parser.add_argument("--max-df", type=int, default=5, help="a run in more training texts is boilerplate")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rs._set_threads()
    tasks = rs.load_stream(args.stream, None, rs._LazyEncoder(), router_val=True)
    truth = np.concatenate([np.full(len(t.test), i) for i, t in enumerate(tasks)])
    queries = np.concatenate([t.test for t in tasks])
    right = {s.name: rs.build(s, tasks).route(queries).task_ids == truth
             for s in rs.STRATEGIES if s.name in ROUTERS}
    overlap = overlaps(args.stream, args.ngram, args.max_df)
    result = {"stream": args.stream, "ngram": args.ngram, "max_df": args.max_df, "inputs": len(truth),
              "overlap_share": float(overlap.mean()), "environment": rs._environment()}
    lda, knn = right["lda"], right["knn-10-all"]
    for part, mask in (("all", np.ones_like(overlap)), ("overlap", overlap), ("no_overlap", ~overlap)):
        only_knn, only_lda = int((knn & ~lda & mask).sum()), int((lda & ~knn & mask).sum())
        result[part] = {"inputs": int(mask.sum()), "lda": float(lda[mask].mean()), "knn-10-all": float(knn[mask].mean()),
                        "only_lda_right": only_lda, "only_knn_right": only_knn,
                        "mcnemar_p": _mcnemar(only_lda, only_knn)}
        r = result[part]
        print(f"{args.stream} {part:>10}: {r['inputs']:5d} inputs  lda {100 * r['lda']:.2f}  k-NN {100 * r['knn-10-all']:.2f}"
              f"  only lda {only_lda}  only k-NN {only_knn}  McNemar p {r['mcnemar_p']:.3f}")
    print(f"overlapping test inputs: {100 * result['overlap_share']:.1f}%")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
