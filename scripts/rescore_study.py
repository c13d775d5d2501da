"""Does re-scoring the router's candidates with their own prompts fix routing mistakes?

    .venv/bin/python scripts/rescore_study.py --run runs/offline-9-bank-ulpt \
        --held-out vader_tweets,vader_nyt --out runs/rescore_study_offline-9.json

Takes a finished bank run (``promptbank run`` output: ``bank/``, ``answers.json`` with the
label scores of every (prompt, test input) pair the run needed, ``results.json``), routes
every test input on its own with the saved router, and replays the final decision for a
grid of re-scoring settings (signal × weight × top) from the cached answers, computing
any missing pair on the fly. Per setting: routing accuracy, routed and oracle average
accuracy, share of inputs re-scored and extra prompt passes per input. Settings are
compared on the same inputs and answers, so differences are exact, not noise between runs.

Pairwise check: see ``pairwise_check``.

Unknown tasks: ``--held-out`` tasks (not in the bank) are routed like any input; an input
is flagged unknown when a score falls below a threshold set on the bank tasks' validation
inputs so that ``--frr`` of them are rejected. Scores compared: the router's closeness
(keys only), the chosen prompt's confidence, and their sum after standardising each on the
validation inputs. Reported: false-reject rate on the bank tasks' test inputs and
detection rate on the held-out tasks' test inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from _bench import machine_info, set_threads, write_json  # noqa: E402

import numpy as np  # noqa: E402

from promptbank.bank import PromptBank  # noqa: E402
from promptbank.rescore import SIGNALS, Rescorer, max_label_prob, max_logprob  # noqa: E402
from streams.splits import TaskData, get_task  # noqa: E402


class Answers:
    """Label scores per (prompt task, test task, row): the run's cache plus what we compute."""

    def __init__(self, bank: PromptBank, path: Path) -> None:
        self.bank = bank
        raw = json.loads(path.read_text()) if path.exists() else {}
        self.cache = {tuple(k.split("\x1f")): {int(i): np.asarray(v) for i, v in rows.items() if isinstance(v, list)} for k, rows in raw.items()}
        self.computed = 0

    def fill(self, task: TaskData, pairs: list[tuple[int, str]]) -> None:
        todo = [(i, p) for i, p in pairs if i not in self.cache.get((p, task.name), {})]
        if not todo:
            return
        preds = self.bank.predict([task.test_texts[i] for i, _ in todo], task=[p for _, p in todo], progress=True)
        for (i, p), pred in zip(todo, preds):
            self.cache.setdefault((p, task.name), {})[i] = np.fromiter(pred.scores.values(), float)
        self.computed += len(todo)

    def get(self, prompt: str, task: str, row: int) -> np.ndarray:
        return self.cache[(prompt, task)][row]


def own_confidence(bank: PromptBank, tasks: list[TaskData], signal: str) -> dict[str, tuple[float, float]]:
    """Mean and std of each prompt's confidence on its own task's validation inputs."""
    out = {}
    for t in tasks:
        preds = bank.predict(t.val_texts, task=t.name, progress=True)
        conf = np.array([SIGNALS[signal](np.fromiter(p.scores.values(), float)) for p in preds])
        out[t.name] = (float(conf.mean()), float(conf.std() + 1e-6))
    return out


def calibrated(answers: Answers, stats: dict[str, tuple[float, float]], signal: str):
    """Wrap cached answers so a confidence becomes a z-score against the prompt's own inputs."""

    def get(prompt: str, task: str, row: int) -> np.ndarray:
        mu, sd = stats[prompt]
        # max over (s - mu)/sd == (max s - mu)/sd for max_logprob; shift every score the same way
        return (answers.get(prompt, task, row) - mu) / sd
    return get


def replay(bank: PromptBank, tasks: list[TaskData], routings: dict[str, Any], answers: Answers, rescorer: Rescorer,
           scores_of=None) -> dict[str, Any]:
    """Final routed/oracle accuracy with ``rescorer``, from the same routing and answers."""
    names = {bank.task_info(t.name).task_id: t.name for t in tasks}
    scores_of = scores_of or answers.get
    per_task, routed_right, rescored, extra = {}, [], 0, 0
    for t in tasks:
        routing = routings[t.name]
        cands = rescorer.candidates(routing)
        answers.fill(t, [(i, names[c]) for i, cs in enumerate(cands) for c in cs] + [(i, t.name) for i in range(len(t.test_texts))])
        chosen = rescorer.choose(routing, cands, lambda i, c: scores_of(names[c], t.name, i))
        label = lambda p, i: bank.task_info(p).label_names[int(np.argmax(answers.get(p, t.name, i)))]
        truth = [t.label_names[y] for y in t.test_labels]  # an answer counts by its label name, as in the runner
        acc = np.mean([c >= 0 and label(names[int(c)], i) == y for i, (c, y) in enumerate(zip(chosen, truth))])
        oracle = np.mean([label(t.name, i) == y for i, y in enumerate(truth)])
        routed_right += [names.get(int(c)) == t.name for c in chosen]
        rescored += sum(len(c) > 1 for c in cands)
        extra += sum(max(len(c) - 1, 0) for c in cands)
        per_task[t.name] = {"acc": float(acc), "oracle_acc": float(oracle), "routing_acc": float(np.mean([names.get(int(c)) == t.name for c in chosen]))}
    n = len(routed_right)
    avg = float(np.mean([v["acc"] for v in per_task.values()]))
    oracle_avg = float(np.mean([v["oracle_acc"] for v in per_task.values()]))
    return {"rescore": rescorer.to_dict(), "routing_acc": float(np.mean(routed_right)), "avg_acc": avg, "oracle_avg_acc": oracle_avg,
            "gap_pts": 100 * (oracle_avg - avg), "share_rescored": rescored / n, "extra_passes_per_input": extra / n, "per_task": per_task}


def pairwise_check(bank: PromptBank, tasks: list[TaskData], routings: dict[str, Any], answers: Answers,
                   stats: dict[str, tuple[float, float]], sample: int) -> dict[str, Any]:
    """Can a prompt's confidence tell its own task's inputs from a neighbour's, whatever the posterior?

    On every misrouted input: how often the true task's prompt is more confident than the
    wrongly chosen one (what re-scoring could fix). On ``sample`` correctly routed inputs per
    task: how often the runner-up's prompt is more confident than the true one (what it would
    break). Also the router's posterior of its wrong picks.
    """
    names = {bank.task_info(t.name).task_id: t.name for t in tasks}
    signals = {"max_logprob": lambda sc, p: max_logprob(sc), "max_label_prob": lambda sc, p: max_label_prob(sc),
               "max_logprob z-scored": lambda sc, p: (max_logprob(sc) - stats[p][0]) / stats[p][1]}
    fixes = {k: 0 for k in signals}
    breaks = {k: 0 for k in signals}
    n_wrong = n_right = 0
    wrong_posteriors = []
    rng = np.random.default_rng(0)
    for t in tasks:
        r = routings[t.name]
        picked = [names.get(int(x)) for x in r.task_ids]
        wrong = [i for i, p in enumerate(picked) if p != t.name and p is not None]
        right = [i for i, p in enumerate(picked) if p == t.name and r.candidates[i, 1] >= 0]
        sample_right = sorted(rng.choice(right, size=min(sample, len(right)), replace=False).tolist()) if right else []
        answers.fill(t, [(i, t.name) for i in wrong] + [(i, picked[i]) for i in wrong]
                     + [(i, names[int(r.candidates[i, 1])]) for i in sample_right])
        for i in wrong:
            wrong_posteriors.append(float(r.scores[i]))
            for k, f in signals.items():
                fixes[k] += f(answers.get(t.name, t.name, i), t.name) > f(answers.get(picked[i], t.name, i), picked[i])
        for i in sample_right:
            other = names[int(r.candidates[i, 1])]
            for k, f in signals.items():
                breaks[k] += f(answers.get(other, t.name, i), other) > f(answers.get(t.name, t.name, i), t.name)
        n_wrong, n_right = n_wrong + len(wrong), n_right + len(sample_right)
    wp = np.asarray(wrong_posteriors)
    return {
        "misrouted": n_wrong, "correct_sampled": n_right,
        "share_true_prompt_more_confident_on_misrouted": {k: v / max(n_wrong, 1) for k, v in fixes.items()},
        "share_runner_up_more_confident_on_correct": {k: v / max(n_right, 1) for k, v in breaks.items()},
        "wrong_pick_posterior_median": float(np.median(wp)) if len(wp) else None,
        "wrong_pick_posterior_share_above_0.99": float(np.mean(wp > 0.99)) if len(wp) else None,
    }


def unknown_study(bank: PromptBank, tasks: list[TaskData], held_out: list[TaskData], frr: float, rescorer: Rescorer,
                  sample: int) -> dict[str, Any]:
    """Flag inputs unlike every bank task: keys' closeness, prompt confidence, or both.

    Test inputs are subsampled (``sample`` per task, fixed seed) to bound the prompt passes.
    """
    rng = np.random.default_rng(0)
    pick = lambda texts: [texts[i] for i in sorted(rng.choice(len(texts), size=min(sample, len(texts)), replace=False))]

    def scores(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        _, routing = bank.route(texts, top=1)
        preds = bank.predict(texts, progress=True)
        conf = np.array([SIGNALS[rescorer.signal](np.fromiter(p.scores.values(), float)) for p in preds])
        return routing.closeness.astype(float), conf

    val_texts = [x for t in tasks for x in t.val_texts]
    v_close, v_conf = scores(val_texts)
    mu, sd = np.array([v_close.mean(), v_conf.mean()]), np.array([v_close.std() + 1e-9, v_conf.std() + 1e-9])
    combine = lambda c, f: ((c - mu[0]) / sd[0] + (f - mu[1]) / sd[1])
    known = scores([x for t in tasks for x in pick(t.test_texts)])
    held_scores = {t.name: scores(pick(t.test_texts)) for t in held_out}
    out: dict[str, Any] = {"frr_target": frr, "n_val": len(val_texts), "test_sample_per_task": sample}
    for name, (val, fn) in {"keys_closeness": (v_close, lambda c, f: c), "prompt_confidence": (v_conf, lambda c, f: f),
                            "keys+prompt": (combine(v_close, v_conf), combine)}.items():
        threshold = float(np.quantile(val, frr))
        row = {"threshold": threshold, "false_reject_known_test": float(np.mean(fn(*known) < threshold)), "detection": {}}
        for t in held_out:
            row["detection"][t.name] = float(np.mean(fn(*held_scores[t.name]) < threshold))
        row["detection_mean"] = float(np.mean(list(row["detection"].values()))) if held_out else None
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="folder of a finished `promptbank run` (bank method)")
    parser.add_argument("--weights", default="0,0.25,0.5,1,2,4")
    parser.add_argument("--tops", default="2,3")
    parser.add_argument("--held-out", default="", help="comma-separated offline tasks not in the bank, for the unknown-task study")
    parser.add_argument("--frr", type=float, default=0.05)
    parser.add_argument("--unknown-sample", type=int, default=60, help="test inputs per task in the unknown-task study")
    parser.add_argument("--skip-grid", action="store_true", help="only the unknown-task study")
    parser.add_argument("--pairwise-sample", type=int, default=60, help="correctly routed inputs per task in the pairwise check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    set_threads(args.threads)
    run = Path(args.run)
    results = json.loads((run / "results.json").read_text())
    b = results["budgets"]
    load = lambda n: get_task(n, b["train_per_class"], b["val_per_class"], b["test_per_class"], seed=results["seed"])
    tasks = [load(n) for n in results["tasks"]]
    bank = PromptBank.load(run / "bank")
    answers = Answers(bank, run / "answers.json")
    started = time.perf_counter()
    keys = {t.name: bank.key_encoder.encode(t.test_texts) for t in tasks}
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    routings = {t.name: bank.router.route(keys[t.name], top=3) for t in tasks}
    route_s = time.perf_counter() - started
    n = sum(len(t.test_texts) for t in tasks)
    base = {"signal": "max_logprob", "min_posterior": bank.config.rescorer().min_posterior}
    grid = [Rescorer(top=1, weight=0.0, **base)]
    grid += [Rescorer(top=int(k), weight=float(w), signal=s, min_posterior=base["min_posterior"])
             for s in SIGNALS for k in args.tops.split(",") for w in args.weights.split(",") if float(w) > 0]
    rows, stats, pairwise = [replay(bank, tasks, routings, answers, grid[0])], {}, {}
    if not args.skip_grid:
        rows += [replay(bank, tasks, routings, answers, r) for r in grid[1:]]
        stats = own_confidence(bank, tasks, "max_logprob")
        for k in args.tops.split(","):
            for w in args.weights.split(","):
                if float(w) > 0:
                    r = replay(bank, tasks, routings, answers, Rescorer(top=int(k), weight=float(w), min_posterior=base["min_posterior"]),
                               scores_of=calibrated(answers, stats, "max_logprob"))
                    r["rescore"]["signal"] = "max_logprob z-scored per prompt"
                    rows.append(r)
        pairwise = pairwise_check(bank, tasks, routings, answers, stats, args.pairwise_sample)
    report = {
        "run": str(run), "stream": results["stream"], "tasks": results["tasks"], "budgets": b, "n_test": n,
        "key_encode_us_per_input": 1e6 * encode_s / n, "router_us_per_input": 1e6 * route_s / n,
        "routing_bytes_per_task": bank.bytes_per_task()["routing"], "pairs_computed_here": answers.computed, "grid": rows, "own_confidence": stats, "pairwise": pairwise,
        "machine": machine_info(),
    }
    if args.held_out:
        held = [load(x) for x in args.held_out.split(",")]
        bank.config.rescore = Rescorer().to_dict()  # unknown-task study: the library default (keys-only routing)
        report["unknown"] = unknown_study(bank, tasks, held, args.frr, bank.config.rescorer(), args.unknown_sample)
    write_json(Path(args.out), report)
    for r in rows:
        rs = r["rescore"]
        print(f"{rs['signal']:>15} top={rs['top']} w={rs['weight']:<5} routing {r['routing_acc']:.4f}  routed {r['avg_acc']:.4f}  "
              f"oracle {r['oracle_avg_acc']:.4f}  gap {r['gap_pts']:+.2f} pt  re-scored {r['share_rescored']:.1%}  extra/input {r['extra_passes_per_input']:.2f}")
    for k, v in pairwise.items():
        print(f"pairwise {k}: {v}")
    if "unknown" in report:
        for k in ("keys_closeness", "prompt_confidence", "keys+prompt"):
            u = report["unknown"][k]
            print(f"unknown via {k:>17}: FRR {u['false_reject_known_test']:.3f}  detection {u['detection_mean']:.3f}  {u['detection']}")


if __name__ == "__main__":
    main()
