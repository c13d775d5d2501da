"""Study: does the router's own class posterior improve the answers, alone or fused with the prompt's?

The ``lda`` router keeps, per task, one mean per class and a shared covariance: a linear
discriminant classifier of the task's labels, fitted on every labelled input the router saw
(train + validation + key inputs, up to ``key_per_class`` per class), at no extra storage. Here,
with the task given (oracle), on the stream's test inputs:

- ``prompt``: the trained prompt's label scores (the bank's answer today);
- ``lda``: the router's class posterior alone (``GaussianRouter.class_log_posterior``);
- ``fused``: prompt log-score + w x LDA log-posterior, w the one ``add_task`` kept (chosen on the
  validation inputs with the router as it was then); the validation accuracy and log-likelihood
  at every weight, at that moment, are recorded so other choice rules can be compared;
- ``probe``: logistic regression on the same keys of the 64 training inputs per class (the
  ``linear-probe`` baseline), and ``probe_keys`` on every key input (the LDA's own data).

Prompts come from the stream runner's prompt cache (trained and cached here if absent).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/studies/key_answers.py --stream offline-5 \
        --out runs/studies/key_answers.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import _bench  # noqa: E402


def prompt_scores(bank, name: str, texts: list[str], labels: tuple[str, ...]) -> np.ndarray:
    """(n, C) label scores of the task's own module, in label order (without the key classes)."""
    preds = bank.predict(texts, task=name, batch_size=16, key_classes=False)
    return np.array([[p.scores[label] for label in labels] for p in preds], dtype=np.float64)


def lda_scores(bank, name: str, texts: list[str], held_in=None) -> np.ndarray:
    """(n, C) router class log posteriors, in label order (leave-one-out for ``held_in`` labels)."""
    from promptbank.key_classes import key_class_scores

    return key_class_scores(bank, name, bank.key_encoder.encode(texts), held_in=held_in)


def log_likelihood(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean log-probability of the true label under the softmax of the label scores."""
    logp = torch.log_softmax(torch.as_tensor(scores), dim=1).numpy()
    return float(np.mean(logp[np.arange(len(truth)), truth]))


def probe(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, xt: np.ndarray, k: int) -> np.ndarray:
    """The linear-probe baseline's head (penalty picked on validation); its test predictions."""
    from streams.probe import PENALTIES, fit_logistic

    best = None
    for penalty in PENALTIES:
        w, b = fit_logistic(x, y, k, penalty)
        acc = float(np.mean((torch.as_tensor(xv) @ w + b).argmax(1).numpy() == yv))
        if best is None or acc > best[0]:
            best = (acc, w, b)
    return (torch.as_tensor(xt) @ best[1] + best[2]).argmax(1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="offline-5")
    parser.add_argument("--order", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument("--placement", default="prefix", choices=("prefix", "suffix"))
    parser.add_argument("--method", default="ulpt", help="the module kind (promptbank.prompts.PROMPTS)")
    parser.add_argument("--options", default=None, help="the kind's options as JSON, as `promptbank run --options`")
    parser.add_argument("--out", default="runs/studies/key_answers.json")
    args = parser.parse_args()
    _bench.set_threads(args.threads)
    _bench.quiet_truncation()

    from promptbank import BankConfig
    from promptbank.backbone import load_backbone
    from promptbank.key_classes import KEY_CLASS_WEIGHTS, fused
    from streams.bank_strategy import PromptCache
    from streams.config import RunConfig
    from streams.runner import load_tasks, make_strategy

    options = json.loads(args.options) if args.options else {}
    bank_config = BankConfig(placement=args.placement, method=args.method, prompt_options=options)
    cfg = RunConfig(stream=args.stream, order=args.order, seed=args.seed, bank=bank_config)
    tasks = load_tasks(cfg)
    strategy = make_strategy(cfg, load_backbone(cfg.backbone, bf16=cfg.bf16), progress=True)
    bank = strategy.bank
    at_add = {}  # the validation inputs as the bank sees them when it picks a task's weight
    for t in tasks:
        key = PromptCache.key(bank, t, strategy.train_config)
        cached = strategy.prompt_cache.get(key)
        spec = strategy.task_spec(t)
        bank.add_task(spec.name, spec.texts, spec.labels, **spec.options, prompt_state=cached[0] if cached else None)
        if cached is None:
            strategy.prompt_cache.put(key, bank.prompt_state(t.name), bank.task_info(t.name).metadata)
        yv = np.asarray(t.val_labels)
        pv = prompt_scores(bank, t.name, t.val_texts, t.label_names)
        at_add[t.name] = (pv, lda_scores(bank, t.name, t.val_texts, held_in=yv), bank.task_info(t.name).metadata)
        print(f"{t.name}: added ({'cached prompt' if cached else 'trained'})", flush=True)

    rows = {}
    for t in tasks:
        k = len(t.label_names)
        yv, yt = np.asarray(t.val_labels), np.asarray(t.test_labels)
        pv, lv, meta = at_add[t.name]
        pt, lt = prompt_scores(bank, t.name, t.test_texts, t.label_names), lda_scores(bank, t.name, t.test_texts)
        val_acc = {w: float(np.mean(fused(pv, lv, w).argmax(1) == yv)) for w in KEY_CLASS_WEIGHTS}
        val_loglik = {w: log_likelihood(fused(pv, lv, w), yv) for w in KEY_CLASS_WEIGHTS}
        best_w = float(meta.get("key_class_weight", 0.0))  # what add_task kept
        row = {
            "prompt": float(np.mean(pt.argmax(1) == yt)),
            "lda": float(np.mean(lt.argmax(1) == yt)),
            "fused": float(np.mean(fused(pt, lt, best_w).argmax(1) == yt)),
            "fused_weight": best_w,
            "fused_by_weight": {str(w): float(np.mean(fused(pt, lt, w).argmax(1) == yt)) for w in KEY_CLASS_WEIGHTS},
            "val_by_weight": {str(w): a for w, a in val_acc.items()},
            "val_loglik_by_weight": {str(w): a for w, a in val_loglik.items()},
            "weights_chosen_at": "add_task",
            "test_inputs": len(yt),
        }
        if not args.no_probe:
            enc = bank.key_encoder
            xtr, xv, xt = enc.encode(t.train_texts), enc.encode(t.val_texts), enc.encode(t.test_texts)
            row["probe"] = float(np.mean(probe(xtr, np.asarray(t.train_labels), xv, yv, xt, k) == yt))
            xk = np.concatenate([xtr, enc.encode(t.key_texts)]) if t.key_texts else xtr
            yk = np.concatenate([t.train_labels, t.key_labels]) if t.key_texts else np.asarray(t.train_labels)
            row["probe_keys"] = float(np.mean(probe(xk, yk, xv, yv, xt, k) == yt))
        rows[t.name] = row
        print(t.name, {k: v for k, v in row.items() if not isinstance(v, dict)}, flush=True)
    columns = ["prompt", "lda", "fused"] + ([] if args.no_probe else ["probe", "probe_keys"])
    result = {
        "machine": _bench.machine_info(),
        "command": "scripts/studies/key_answers.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "stream": args.stream,
        "seed": args.seed,
        "method": args.method,
        "options": options,
        "tasks": rows,
        "average": {c: float(np.mean([r[c] for r in rows.values()])) for c in columns},
    }
    print(json.dumps(result["average"], indent=1))
    print(_bench.write_json(args.out, result))


if __name__ == "__main__":
    main()
