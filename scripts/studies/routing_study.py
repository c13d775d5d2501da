"""Which routing strategy identifies the task best on the same keys, and how does it hold on
tasks it was not tuned on?

Answer so far (docs/routing.md, "Why these defaults"): ``lda`` on ``minilm+embedding-set-mean`` keys; a
k-NN vote over every key beats it only on split-20ng posts that repeat training posts. Open: tasks the
key and router were not tuned on (held-out tasks, inputs of no known task).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python scripts/studies/routing_study.py \
        --streams offline-9,vader-4,split-20ng --out runs/routing_study.json
    # MiniLM keys from training inputs only: --keys minilm --train-keys-only

Per stream: tasks are loaded with the stream runner's default budgets (64 train / 16 val /
100 test per class, seed 0, router keys from up to 1,024 training inputs per class), texts are encoded once per key part (cached as .npy under
runs/keys_cache/), tasks are added to each router in stream order with their train and
validation keys and class labels (exactly what ``PromptBank.add_task`` gives the router), and every test input
is routed on its own, in one batch. Reported per stream and strategy: routing accuracy
overall and per task, top-2/top-3 candidate recall (what re-scoring the candidates with
their prompts could recover at most), batched and single-query routing time per input,
routing state bytes per task (amortised ``nbytes_per_task`` and the marginal cost of one
more task), add / remove times, and how closely routing after ``remove_task`` agrees with a
router rebuilt without the task.

Unknown tasks (``--unknown-stream``, default offline-9): each task is held out in turn; the
router holds the others, a threshold on ``closeness`` is set on the known tasks' validation
keys so that 5% of them are rejected, and the known tasks' test inputs (false rejects) and
the held-out task's test inputs (detections) are scored with it.

Rows marked "reference" are not bank routers: most keep every training key (hundreds of KB
per task) and exist to show where the key-only ceiling lies; ``lda-rm-diagonal`` is an
ablation of LDARouter's removal rule.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import _bench  # noqa: E402

from promptbank.keys import DEFAULT_KEY_ENCODER, l2_normalize  # noqa: E402
from promptbank.routing import LDARouter, Router, make_router, router_from_state  # noqa: E402
from streams.named import STREAMS, stream_tasks  # noqa: E402
from streams.splits import KEY_PER_CLASS, get_task  # noqa: E402

BUDGETS = {"train_per_class": 64, "val_per_class": 16, "test_per_class": 100, "seed": 0, "key_per_class": KEY_PER_CLASS}
KEY_ENCODER = DEFAULT_KEY_ENCODER  # --keys overrides
REJECT_KNOWN = 0.05  # share of known-task validation inputs the unknown threshold rejects
SINGLE_QUERIES = 200  # queries routed one at a time for the single-query latency


def _set_threads() -> None:
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


# -- keys ------------------------------------------------------------------------------------


_LazyEncoder = _bench.KeyParts  # keys cached per part under runs/keys_cache/


def _cached_keys(encoder: _bench.KeyParts, task: str, split: str, texts: list[str]) -> np.ndarray:
    """Keys of ``texts`` under ``KEY_ENCODER`` (each part from runs/keys_cache/ when encoded before)."""
    return encoder.keys(KEY_ENCODER, task, split, texts)


@dataclass
class TaskKeys:
    name: str
    train: np.ndarray
    labels: np.ndarray
    test: np.ndarray
    val: np.ndarray | None = None


def load_stream(name: str, order: int | None, encoder: _LazyEncoder, router_val: bool) -> list[TaskKeys]:
    """Keys of each task of the stream, in stream order. With ``router_val`` the routers learn
    from train + validation keys, as ``PromptBank.add_task`` does; ``val`` is kept apart either way."""
    tasks = []
    for task_name in stream_tasks(name, order):
        data = get_task(task_name, **BUDGETS)
        train = _cached_keys(encoder, task_name, "train", data.train_texts)
        val = _cached_keys(encoder, task_name, "val", data.val_texts)
        labels = np.asarray(data.train_labels, np.int64)
        if data.key_texts:  # --key-per-class: further training inputs for the router only
            train = np.concatenate([train, _cached_keys(encoder, task_name, "key", data.key_texts)])
            labels = np.concatenate([labels, np.asarray(data.key_labels, np.int64)])
        if router_val:
            train = np.concatenate([train, val])
            labels = np.concatenate([labels, np.asarray(data.val_labels, np.int64)])
        tasks.append(
            TaskKeys(
                name=task_name,
                train=train,
                labels=labels,
                test=_cached_keys(encoder, task_name, "test", data.test_texts),
                val=val,
            )
        )
    return tasks


# -- reference routers (study only: they keep every key) ---------------------------------------


class _AllKeysRouter(Router):
    """Keeps every training key; subclasses score tasks from them. Not a bank router."""

    def __init__(self, dim: int, unknown_threshold: float | None = None) -> None:
        super().__init__(dim=dim, unknown_threshold=unknown_threshold)
        self._keys: dict[int, np.ndarray] = {}
        self._dirty = True

    def add_task(self, task_id: int, keys: np.ndarray, labels: np.ndarray | None = None) -> None:
        self._keys[self._check_new(task_id)] = l2_normalize(keys)
        self._dirty = True

    def remove_task(self, task_id: int) -> None:
        del self._keys[self._check_known(task_id)]
        self._dirty = True

    def task_ids(self) -> list[int]:
        return list(self._keys)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._keys

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        ids = list(self._keys)
        return {"strategy": self.strategy, "tasks": ids}, {f"keys_{t}": self._keys[t] for t in ids}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Router:
        raise NotImplementedError("study-only reference router")

    def _fit(self) -> None:
        raise NotImplementedError

    def _scores(self, queries: np.ndarray) -> np.ndarray:
        """(N, T) scores, higher is better, columns in task_ids() order."""
        raise NotImplementedError

    def _candidates(self, queries: np.ndarray, top: int) -> tuple[np.ndarray, ...]:
        if len(self._keys) == 1:  # nothing to tell apart
            s = np.zeros((len(queries), 1))
        else:
            if self._dirty:
                self._fit()
                self._dirty = False
            s = self._scores(l2_normalize(queries))
        ids = np.asarray(self.task_ids(), np.int64)
        order = np.argsort(-s, axis=1, kind="stable")[:, :top]
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        cand = np.full((len(s), top), -1, np.int64)
        conf = np.zeros((len(s), top))
        w = order.shape[1]
        cand[:, :w] = ids[order]
        conf[:, :w] = np.take_along_axis(p, order, axis=1)
        return cand, conf, np.take_along_axis(s, order[:, :1], axis=1)[:, 0]


class LogRegAllKeys(_AllKeysRouter):
    """Reference: multinomial logistic regression over tasks on every key (L-BFGS, L2)."""

    strategy = "logreg-all-keys"

    def __init__(self, dim: int, l2: float = 1e-4, unknown_threshold: float | None = None) -> None:
        super().__init__(dim=dim, unknown_threshold=unknown_threshold)
        self.l2 = l2

    def _fit(self) -> None:
        x = torch.from_numpy(np.concatenate(list(self._keys.values())))
        y = torch.from_numpy(np.concatenate([np.full(len(k), i) for i, k in enumerate(self._keys.values())]))
        self._lin = torch.nn.Linear(self.dim, len(self._keys), dtype=torch.float32)
        torch.nn.init.zeros_(self._lin.weight)
        torch.nn.init.zeros_(self._lin.bias)
        opt = torch.optim.LBFGS(
            self._lin.parameters(),
            lr=1.0,
            max_iter=300,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-6,
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(self._lin(x), y) + self.l2 * self._lin.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)

    def _scores(self, queries: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.log_softmax(self._lin(torch.from_numpy(queries)), dim=1).numpy().astype(np.float64)


class SVMAllKeys(_AllKeysRouter):
    """Reference: RBF-kernel SVM over tasks on every key (scikit-learn, if installed)."""

    strategy = "rbf-svm-all-keys"

    def _fit(self) -> None:
        from sklearn.svm import SVC

        x = np.concatenate(list(self._keys.values()))
        y = np.concatenate([np.full(len(k), i) for i, k in enumerate(self._keys.values())])
        self._svm = SVC(C=10.0, kernel="rbf", gamma="scale", decision_function_shape="ovr").fit(x, y)

    def _scores(self, queries: np.ndarray) -> np.ndarray:
        s = self._svm.decision_function(queries)
        return s[:, None] if s.ndim == 1 else s


class LDAPlusKNN(Router):
    """Reference: LDA log-posterior plus log of the 10-NN vote share over every key."""

    strategy = "lda+knn-all"

    def __init__(self, dim: int, unknown_threshold: float | None = None) -> None:
        super().__init__(dim=dim, unknown_threshold=unknown_threshold)
        self.lda = make_router("lda", dim=dim)
        self.knn = make_router("knn", dim=dim, k=10, summary="all")

    def add_task(self, task_id: int, keys: np.ndarray, labels: np.ndarray | None = None) -> None:
        self.lda.add_task(task_id, keys, labels)
        self.knn.add_task(task_id, keys, labels)

    def remove_task(self, task_id: int) -> None:
        self.lda.remove_task(task_id)
        self.knn.remove_task(task_id)

    def task_ids(self) -> list[int]:
        return self.lda.task_ids()

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.lda

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        (c1, a1), (c2, a2) = self.lda.state(), self.knn.state()
        return {"strategy": self.strategy, "lda": c1, "knn": c2}, {
            **{f"lda_{k}": v for k, v in a1.items()},
            **{f"knn_{k}": v for k, v in a2.items()},
        }

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Router:
        raise NotImplementedError("study-only reference router")

    def _candidates(self, queries: np.ndarray, top: int) -> tuple[np.ndarray, ...]:
        ids = self.task_ids()
        col = {t: i for i, t in enumerate(ids)}
        total = np.full((len(queries), len(ids)), 0.0)
        for router, floor in ((self.lda, 1e-12), (self.knn, 1e-3)):
            r = router.route(queries, top=len(ids))
            p = np.full((len(queries), len(ids)), floor)
            rows, js = np.nonzero(r.candidates >= 0)
            p[rows, [col[int(t)] for t in r.candidates[rows, js]]] += r.candidate_scores[rows, js]
            total += np.log(p)
            if router is self.lda:
                closeness = r.closeness.astype(np.float64)
        order = np.argsort(-total, axis=1, kind="stable")[:, :top]
        prob = np.exp(total - total.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        cand = np.full((len(queries), top), -1, np.int64)
        conf = np.zeros((len(queries), top))
        cand[:, : order.shape[1]] = np.asarray(ids, np.int64)[order]
        conf[:, : order.shape[1]] = np.take_along_axis(prob, order, axis=1)
        return cand, conf, closeness


class LDARemoveDiagonal(LDARouter):
    """Ablation: LDARouter whose removal also subtracts the diagonal residual, as
    GaussianRouter does; the remainder left in the shared scatter is then indefinite."""

    strategy = "lda-rm-diagonal"

    def remove_task(self, task_id: int) -> None:
        tid = self._check_known(task_id)
        self._scatter -= self._tasks.pop(tid).scatter()
        if not self._tasks:
            self._scatter[:] = 0.0
        self._cache = None


# -- strategies ------------------------------------------------------------------------------


def _subclusters(per: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Labels refined into ``per`` spherical k-means sub-clusters per class (several
    Gaussian components per class; the router only sees component ids)."""

    def relabel(keys: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = np.zeros(len(labels), np.int64)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            if len(idx) < 4 * per:
                out[idx] = c * per
                continue
            km = faiss.Kmeans(
                keys.shape[1], per, niter=20, seed=0, spherical=True, verbose=False, min_points_per_centroid=1
            )
            km.train(np.ascontiguousarray(keys[idx]))
            out[idx] = c * per + km.index.search(np.ascontiguousarray(keys[idx]), 1)[1][:, 0]
        return out

    return relabel


@dataclass
class Strategy:
    name: str
    make: Callable[[int], Router]
    note: str
    reference: bool = False  # study-only: keeps every key, not a bank router
    relabel: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    config: dict[str, Any] | None = None  # make_router options, for bank routers
    removal_only: bool = False  # an ablation that only changes remove_task: skip unknown tasks


def _bank(name: str, note: str, relabel=None, **config: Any) -> Strategy:
    return Strategy(name, lambda dim: make_router(dim=dim, **config), note, relabel=relabel, config=config)


STRATEGIES: list[Strategy] = [
    _bank("knn-10-all", "baseline of design.md: 10-NN vote over every train key", strategy="knn", k=10, summary="all"),
    _bank("knn-default", "KNNRouter defaults: 8 k-means centroids per task, 10-NN", strategy="knn"),
    _bank(
        "knn-class-means",
        "nearest class mean (cosine), 1-NN",
        strategy="knn",
        k=1,
        summary="mean",
        per_class=True,
        n_centroids=1000,
    ),
    _bank(
        "knn-task-mean-sqfp16",
        "footprint-bound: one mean key per task, float16 index, 10-NN",
        strategy="knn",
        summary="mean",
        index="SQfp16",
    ),
    _bank("gaussian", "GaussianRouter defaults: one mean per task, rank-8+diag scatter", strategy="gaussian"),
    _bank("gaussian-perclass", "GaussianRouter per_class=True", strategy="gaussian", per_class=True),
    _bank(
        "lda-task",
        "LDARouter per_class=False: one mean per task, exact pooled scatter",
        strategy="lda",
        per_class=False,
    ),
    _bank("lda", "LDARouter defaults: class means, exact pooled scatter", strategy="lda"),
    _bank("lda-8bit", "lda with 8-bit class means (mean_bits=8)", strategy="lda", mean_bits=8),
    _bank("lda-16bit", "lda with float16 class means (mean_bits=16)", strategy="lda", mean_bits=16),
    _bank(
        "lda-nearest",
        "lda with closeness = distance to the nearest mean (novelty='nearest', the old score)",
        strategy="lda",
        novelty="nearest",
    ),
    _bank(
        "lda-rank8",
        "lda storing a rank-8 factor of each task's scatter, subtracted on removal (a former default)",
        strategy="lda",
        scatter_rank=8,
    ),
    _bank("lda-2-per-class", "LDARouter, 2 k-means components per class", relabel=_subclusters(2), strategy="lda"),
    _bank("lda-4-per-class", "LDARouter, 4 k-means components per class", relabel=_subclusters(4), strategy="lda"),
    Strategy(
        "lda-rm-diagonal",
        LDARemoveDiagonal,
        "ablation: lda removing the diagonal residual too (GaussianRouter's rule)",
        reference=True,
        removal_only=True,
    ),
    Strategy("lda+knn-all", LDAPlusKNN, "LDA log-posterior + log 10-NN vote share (all keys)", reference=True),
    Strategy("logreg-all-keys", LogRegAllKeys, "softmax head over tasks retrained on every key", reference=True),
    Strategy("rbf-svm-all-keys", SVMAllKeys, "RBF-SVM over tasks on every key (needs scikit-learn)", reference=True),
]


def _labels(strategy: Strategy, task: TaskKeys) -> np.ndarray:
    return strategy.relabel(task.train, task.labels) if strategy.relabel else task.labels


def state_bytes(router: Router) -> int:
    config, arrays = router.state()
    return len(json.dumps(config)) + sum(np.asarray(a).nbytes for a in arrays.values())


def build(strategy: Strategy, tasks: list[TaskKeys], skip: int | None = None) -> Router:
    router = strategy.make(tasks[0].train.shape[1])
    for i, t in enumerate(tasks):
        if i != skip:
            router.add_task(i, t.train, _labels(strategy, t))
    return router


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def measure(strategy: Strategy, tasks: list[TaskKeys], check_removal: bool = True) -> dict[str, Any]:
    """Everything the table reports for one strategy on one stream."""
    dim = tasks[0].train.shape[1]
    queries = np.concatenate([t.test for t in tasks])
    truth = np.concatenate([np.full(len(t.test), i) for i, t in enumerate(tasks)])
    router = strategy.make(dim)
    empty_bytes = state_bytes(router)  # what the router costs before any task (shared state)
    add_ms, ready_ms, sizes = [], [], []
    for i, t in enumerate(tasks):
        labels = _labels(strategy, t)
        start = time.perf_counter()
        router.add_task(i, t.train, labels)
        add_ms.append(_ms(start))
        start = time.perf_counter()
        router.route(queries[:1], top=1)  # lazy rebuilds (whitening, heads) happen here
        ready_ms.append(_ms(start))
        sizes.append(state_bytes(router))

    routing = router.route(queries, top=3)
    batched = []
    for _ in range(3):
        start = time.perf_counter()
        router.route(queries, top=3)
        batched.append(time.perf_counter() - start)
    single = queries[:SINGLE_QUERIES]
    start = time.perf_counter()
    for i in range(len(single)):
        router.route(single[i : i + 1], top=3)
    single_s = time.perf_counter() - start

    hit = routing.candidates == truth[:, None]
    n_tasks = len(tasks)
    confusion = np.zeros((n_tasks, n_tasks), np.int64)
    routed = routing.task_ids
    np.add.at(confusion, (truth[routed >= 0], routed[routed >= 0]), 1)
    per_task = {t.name: float(np.mean(routed[truth == i] == i)) for i, t in enumerate(tasks)}
    out: dict[str, Any] = {
        "strategy": strategy.name,
        "note": strategy.note,
        "reference": strategy.reference,
        "router_config": strategy.config,
        "accuracy": float(np.mean(routed == truth)),
        "per_task": per_task,
        "top2_recall": float(hit[:, :2].any(axis=1).mean()),
        "top3_recall": float(hit[:, :3].any(axis=1).mean()),
        "confusion": confusion.tolist(),
        "us_per_input_batched": min(batched) / len(queries) * 1e6,
        "us_per_input_single": single_s / len(single) * 1e6,
        "bytes_per_task": float(router.nbytes_per_task()),
        "marginal_bytes_per_task": (sizes[-1] - empty_bytes) / n_tasks,
        "shared_bytes": empty_bytes,
        "add_ms_mean": float(np.mean(add_ms)),
        "ready_ms_mean": float(np.mean(ready_ms)),
        "add_ms": add_ms,
        "ready_ms": ready_ms,
    }
    if not strategy.reference:  # persistence: the loaded router must route identically
        loaded = router_from_state(*router.state())
        again = loaded.route(queries, top=3)
        out["state_round_trip_identical"] = bool(
            np.array_equal(again.candidates, routing.candidates) and np.array_equal(again.closeness, routing.closeness)
        )
    if check_removal:
        out.update(_removal(strategy, tasks, router))
    return out


def _removal(strategy: Strategy, tasks: list[TaskKeys], full: Router) -> dict[str, Any]:
    """Remove each task in turn from the full router: time, and agreement with a router
    built without it (routing of the remaining tasks' test inputs)."""
    remove_ms, ready_ms, agree, delta = [], [], [], []
    full_state = full.state() if not strategy.reference else None
    for skip in range(len(tasks)):
        router = router_from_state(*full_state) if full_state else build(strategy, tasks)
        keep = [i for i in range(len(tasks)) if i != skip]
        queries = np.concatenate([tasks[i].test for i in keep])
        truth = np.concatenate([np.full(len(tasks[i].test), i) for i in keep])
        router.route(queries[:1], top=1)
        start = time.perf_counter()
        router.remove_task(skip)
        remove_ms.append(_ms(start))
        start = time.perf_counter()
        router.route(queries[:1], top=1)
        ready_ms.append(_ms(start))
        fresh = build(strategy, tasks, skip=skip)
        a, b = router.route(queries, top=1).task_ids, fresh.route(queries, top=1).task_ids
        agree.append(float(np.mean(a == b)))
        delta.append(float(np.mean(a == truth) - np.mean(b == truth)))
    return {
        "remove_ms_mean": float(np.mean(remove_ms)),
        "remove_ready_ms_mean": float(np.mean(ready_ms)),
        "remove_agreement_min": min(agree),
        "remove_agreement_mean": float(np.mean(agree)),
        "remove_accuracy_delta_mean": float(np.mean(delta)),
        "remove_accuracy_delta_min": min(delta),
    }


# -- unknown tasks ---------------------------------------------------------------------------


def _auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a random positive > a random negative), ties counted half."""
    scores = np.concatenate([positive, negative])
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0
    ranks[order] = np.repeat(avg, counts) + 1
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def unknown_study(strategy: Strategy, tasks: list[TaskKeys]) -> dict[str, Any]:
    """Hold each task out in turn; threshold closeness on known validation keys."""
    per_held: dict[str, Any] = {}
    for held in range(len(tasks)):
        router = build(strategy, tasks, skip=held)
        known = [i for i in range(len(tasks)) if i != held]
        val = np.concatenate([tasks[i].val for i in known])
        threshold = float(np.quantile(router.route(val, top=1).closeness, REJECT_KNOWN))
        test = np.concatenate([tasks[i].test for i in known])
        truth = np.concatenate([np.full(len(tasks[i].test), i) for i in known])
        r_known = router.route(test, top=1)
        r_new = router.route(tasks[held].test, top=1)
        accepted = r_known.closeness >= threshold
        per_held[tasks[held].name] = {
            "threshold": threshold,
            "false_reject": float(np.mean(~accepted)),
            "detected": float(np.mean(r_new.closeness < threshold)),
            "known_correct_and_accepted": float(np.mean(accepted & (r_known.task_ids == truth))),
            "auroc": _auroc(r_known.closeness.astype(np.float64), r_new.closeness.astype(np.float64)),
        }
    keys = ("false_reject", "detected", "known_correct_and_accepted", "auroc")
    return {"mean": {k: float(np.mean([v[k] for v in per_held.values()])) for k in keys}, "per_held_out": per_held}


# -- report ----------------------------------------------------------------------------------


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def print_stream(name: str, tasks: list[TaskKeys], rows: list[dict[str, Any]]) -> None:
    n_test = sum(len(t.test) for t in tasks)
    print(f"\n== {name}: {len(tasks)} tasks, {sum(len(t.train) for t in tasks)} train keys, {n_test} test inputs ==")
    head = (
        f"{'strategy':<18} {'acc':>6} {'top2':>6} {'top3':>6} {'worst task':>22} {'us/in':>7} {'us/1q':>7} "
        f"{'B/task':>9} {'+B/task':>9} {'add ms':>7} {'rdy ms':>7} {'rm ms':>7} {'rm agree':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        worst = min(r["per_task"], key=r["per_task"].get)
        ref = "*" if r["reference"] else " "
        print(
            f"{r['strategy'] + ref:<18} {r['accuracy']:>6.4f} {r['top2_recall']:>6.4f} {r['top3_recall']:>6.4f} "
            f"{worst[:15] + ' ' + format(r['per_task'][worst], '.3f'):>22} {r['us_per_input_batched']:>7.1f} "
            f"{r['us_per_input_single']:>7.0f} {_fmt_bytes(r['bytes_per_task']):>9} "
            f"{_fmt_bytes(r['marginal_bytes_per_task']):>9} {r['add_ms_mean']:>7.1f} {r['ready_ms_mean']:>7.1f} "
            f"{r.get('remove_ms_mean', float('nan')):>7.1f} {r.get('remove_agreement_mean', float('nan')):>8.4f}"
        )
    print(
        "(* study-only: a reference that keeps every key, or an ablation; not a bank router. B/task: nbytes_per_task, shared state amortised over "
        "the tasks; +B/task: (state bytes - empty router's bytes) / tasks. us/in: batched; us/1q: one query per call. "
        "rdy: first route after add (lazy rebuild). rm agree: routing after remove_task vs a router built without "
        "the task)"
    )
    short = [t.name[:9] for t in tasks]
    print(f"\n{'per task':<18} " + " ".join(f"{s:>9}" for s in short))
    for r in rows:
        print(f"{r['strategy']:<18} " + " ".join(f"{r['per_task'][t.name]:>9.3f}" for t in tasks))


def print_unknown(name: str, results: dict[str, dict[str, Any]]) -> None:
    print(
        f"\n== unknown tasks on {name}: each task held out in turn; threshold rejects "
        f"{REJECT_KNOWN:.0%} of known validation keys =="
    )
    print(
        f"{'strategy':<18} {'false rej':>9} {'detected':>9} {'AUROC':>7} {'known ok':>9}   detected when held out: "
        + ", ".join(next(iter(results.values()))["per_held_out"])
    )
    for s, res in results.items():
        m = res["mean"]
        per = " ".join(f"{v['detected']:.2f}" for v in res["per_held_out"].values())
        print(
            f"{s:<18} {m['false_reject']:>9.3f} {m['detected']:>9.3f} {m['auroc']:>7.3f} "
            f"{m['known_correct_and_accepted']:>9.3f}   {per}"
        )


def _environment() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="offline-9,vader-4,split-20ng")
    parser.add_argument("--order", type=int, default=1, help="stream order (offline-9 has 1-3; others only 1)")
    parser.add_argument("--strategies", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--unknown-stream", default="offline-9", help="stream for the unknown-task study ('' to skip)")
    parser.add_argument("--no-removal", action="store_true", help="skip the remove-each-task measurement")
    parser.add_argument(
        "--keys", default=DEFAULT_KEY_ENCODER, help="key encoder, parts joined with '+' (default: %(default)s)"
    )
    parser.add_argument(
        "--train-keys-only",
        action="store_true",
        help="routers learn from training keys only (the bank also gives them validation keys)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=BUDGETS["seed"],
        help="data draw of every task (get_task's seed); the runner's is 0 (default: %(default)s)",
    )
    parser.add_argument(
        "--key-per-class",
        type=int,
        default=BUDGETS["key_per_class"],
        help="labelled training inputs per class the routers learn from (default: the stream runner's, "
        "%(default)s; 0: the prompt's 64 only, as in the earliest studies)",
    )
    parser.add_argument("--out", default="runs/routing_study.json")
    args = parser.parse_args()
    _set_threads()
    global KEY_ENCODER
    KEY_ENCODER = args.keys
    BUDGETS["seed"] = args.seed
    BUDGETS["key_per_class"] = args.key_per_class

    chosen = STRATEGIES
    if args.strategies:
        names = args.strategies.split(",")
        unknown = [n for n in names if n not in {s.name for s in STRATEGIES}]
        if unknown:
            parser.error(f"unknown strategies {unknown}; choose from {[s.name for s in STRATEGIES]}")
        chosen = [s for s in STRATEGIES if s.name in names]
    try:
        import sklearn  # noqa: F401
    except ImportError:
        chosen = [s for s in chosen if s.name != "rbf-svm-all-keys"]

    encoder = _LazyEncoder()
    result: dict[str, Any] = {
        "budgets": BUDGETS,
        "key_encoder": KEY_ENCODER,
        "router_val": not args.train_keys_only,
        "default_mean_bits": make_router("lda", dim=8).config.mean_bits,
        "environment": _environment(),
        "strategies": {s.name: {"note": s.note, "reference": s.reference, "config": s.config} for s in chosen},
        "streams": {},
        "unknown": {},
    }
    for name in args.streams.split(","):
        order = args.order if args.order in STREAMS[name].orders else None
        tasks = load_stream(name, order, encoder, router_val=not args.train_keys_only)
        started = time.perf_counter()
        rows = []
        for strategy in chosen:
            rows.append(measure(strategy, tasks, check_removal=not args.no_removal))
        print_stream(f"{name} (order {order or 1})", tasks, rows)
        result["streams"][name] = {
            "order": order or 1,
            "tasks": [t.name for t in tasks],
            "n_train": [len(t.train) for t in tasks],
            "n_test": [len(t.test) for t in tasks],
            "rows": rows,
            "seconds": time.perf_counter() - started,
        }
        if name == args.unknown_stream:
            # the threshold is set on validation keys, so these routers must not have seen them
            held_out_val = load_stream(name, order, encoder, router_val=False)
            unknown = {s.name: unknown_study(s, held_out_val) for s in chosen if not s.removal_only}
            print_unknown(name, unknown)
            result["unknown"] = {"stream": name, "reject_known_val": REJECT_KNOWN, "results": unknown}
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
