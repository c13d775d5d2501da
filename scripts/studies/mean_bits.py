"""How few bytes can the ``lda`` router keep a class mean in, at no routing cost?

The default keeps each class mean in 8 bits with its 32 largest components exact (1,156 B at
960-d, ``promptbank.routing.stats.quantize_means``); the ≤ 4 KB-per-task goal (issue 31) needs
fewer bytes per class. Each scheme below encodes a new task's class means and decodes them again
before they enter the router (the router itself holds float16 means), so every row routes with
exactly the precision it would store:

* ``intB+K``: B-bit codes with one scale per mean, its K largest components kept exact
  (float16 value + int16 position, 4 B each);
* ``white intB``: B-bit codes of the mean *whitened* by a reference covariance frozen when the
  router first sees enough keys (the first task's, or its first N keys): quantisation error is
  then spread evenly in the metric the router routes by, instead of landing on the low-variance
  directions that whitening magnifies. The reference costs a dim x dim matrix shared by the bank;
* ``key -> D-d``: a smaller key instead, the 960-d key times a fixed random orthogonal
  960 x D matrix (means stored as the default does, 8 bits + 32 exact).

Keys, budgets and streams are the routing study's (``routing_study.py``; cached under
runs/keys_cache/).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/studies/mean_bits.py --out runs/studies/mean-bits.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from routing_study import BUDGETS, KEY_ENCODER, TaskKeys, _environment, _LazyEncoder, _set_threads, load_stream

from promptbank.keys import l2_normalize
from promptbank.routing import gaussian, make_router

STREAMS = ("offline-9", "vader-4", "split-20ng")
SMALLER_KEYS = (768, 640, 512)
SHRINK = 0.1  # the reference covariance is shrunk this far toward its mean variance


def codes(v: np.ndarray, bits: int, exact: int = 0) -> np.ndarray:
    """``v`` after B-bit symmetric quantisation (one scale per row), ``exact`` largest kept."""
    v = np.array(v, np.float64)
    if exact:
        where = np.argpartition(np.abs(v), -exact, axis=1)[:, -exact:]
        kept = np.take_along_axis(v, where, axis=1)
        np.put_along_axis(v, where, 0.0, axis=1)
    top = 2 ** (bits - 1) - 1
    step = np.abs(v).max(axis=1, keepdims=True) / top
    step[step == 0] = 1.0
    out = np.clip(np.rint(v / step), -top, top) * step
    if exact:
        np.put_along_axis(out, where, kept.astype(np.float16), axis=1)
    return out


class Reference:
    """A whitening frozen from the first ``n_keys`` keys of the stream (pooled within-class)."""

    def __init__(self, tasks: list[TaskKeys], n_keys: int | None) -> None:
        rows, labels, offset = [], [], 0
        for t in tasks:
            rows.append(t.train)
            labels.append(t.labels + offset)
            offset += int(t.labels.max()) + 1
            if n_keys is None or sum(map(len, rows)) >= n_keys:
                break
        x, y = np.concatenate(rows)[:n_keys].astype(np.float64), np.concatenate(labels)[:n_keys]
        centred = np.concatenate([x[y == c] - x[y == c].mean(0) for c in np.unique(y)])
        cov = centred.T @ centred / len(centred)
        cov = (1 - SHRINK) * cov + SHRINK * np.trace(cov) / len(cov) * np.eye(len(cov))
        vals, vecs = np.linalg.eigh(cov)
        self.centre = x.mean(0)
        self.white, self.unwhite = vecs / np.sqrt(vals), vecs * np.sqrt(vals)

    def round_trip(self, means: np.ndarray, bits: int) -> np.ndarray:
        return self.centre + codes((means - self.centre) @ self.white, bits) @ self.unwhite.T


def schemes(tasks: list[TaskKeys]) -> dict[str, tuple[Callable[[np.ndarray], np.ndarray] | None, float]]:
    """name -> (encode-decode of a task's means, or None for the router's own; bytes per mean)."""
    dim = tasks[0].train.shape[1]
    first, first250 = Reference(tasks, None), Reference(tasks, 250)
    out: dict[str, tuple[Callable[[np.ndarray], np.ndarray] | None, float]] = {
        "float16": (lambda m: m, 2 * dim),
        "int8+32 (default)": (None, dim + 32 * 6 + 4),
    }
    for bits, exact in ((7, 8), (6, 32), (6, 8), (5, 32), (4, 32)):
        out[f"int{bits}+{exact}"] = (lambda m, b=bits, k=exact: codes(m, b, k), bits * dim / 8 + 4 * exact + 4)
    for bits in (6, 5, 4):
        out[f"white int{bits}, first task"] = (lambda m, b=bits: first.round_trip(m, b), bits * dim / 8 + 4)
    out["white int5, first 250 keys"] = (lambda m: first250.round_trip(m, 5), 5 * dim / 8 + 4)
    return out


def projected(tasks: list[TaskKeys], dim: int) -> list[TaskKeys]:
    """``tasks`` with every key times a fixed random orthogonal ``key dim x dim`` matrix."""
    basis, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(tasks[0].train.shape[1], dim)))
    return [TaskKeys(t.name, l2_normalize(t.train @ basis), t.labels, l2_normalize(t.test @ basis)) for t in tasks]


def route(tasks: list[TaskKeys], encode: Callable[[np.ndarray], np.ndarray] | None) -> float:
    """Routing accuracy of an ``lda`` router whose class means went through ``encode``."""
    dim = tasks[0].train.shape[1]
    if encode is None:
        router = make_router(dim=dim, strategy="lda")
    else:
        router = make_router(dim=dim, strategy="lda", mean_bits=16)
    original = gaussian.GaussianRouter._task_stats

    def encoded_stats(self, cs, factor, residual):  # the study's one hook: what the router keeps
        cs.means = encode(cs.means.astype(np.float64)).astype(np.float32)
        return original(self, cs, factor, residual)

    if encode is not None:
        gaussian.GaussianRouter._task_stats = encoded_stats
    try:
        for i, t in enumerate(tasks):
            router.add_task(i, t.train, t.labels)
    finally:
        gaussian.GaussianRouter._task_stats = original
    queries = np.concatenate([t.test for t in tasks])
    truth = np.concatenate([np.full(len(t.test), i) for i, t in enumerate(tasks)])
    return float(np.mean(router.route(queries, top=1).task_ids == truth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--out", default="runs/studies/mean-bits.json")
    args = parser.parse_args()
    _set_threads()
    started = time.perf_counter()
    encoder = _LazyEncoder()
    result: dict[str, dict[str, float]] = {}
    bytes_per_mean: dict[str, float] = {}
    classes: dict[str, float] = {}
    for stream in args.streams.split(","):
        tasks = load_stream(stream, 1, encoder, router_val=True)
        classes[stream] = float(np.mean([len(np.unique(t.labels)) for t in tasks]))
        for name, (encode, size) in schemes(tasks).items():
            result.setdefault(name, {})[stream] = route(tasks, encode)
            bytes_per_mean[name] = size
            print(f"{stream:<11} {name:<28} {100 * result[name][stream]:6.2f}  {size:6.0f} B/mean", flush=True)
        for dim in SMALLER_KEYS:
            name = f"key -> {dim}-d, int8+32"
            result.setdefault(name, {})[stream] = route(projected(tasks, dim), None)
            bytes_per_mean[name] = dim + 32 * 6 + 4
            print(f"{stream:<11} {name:<28} {100 * result[name][stream]:6.2f}", flush=True)
    out = {
        "budgets": BUDGETS,
        "key_encoder": KEY_ENCODER,
        "dim": int(tasks[0].train.shape[1]),
        "environment": _environment(),
        "routing_accuracy": result,
        "bytes_per_mean": bytes_per_mean,
        "classes_per_task": classes,
        "seconds": time.perf_counter() - started,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
