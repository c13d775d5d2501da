"""Held-out routing: does the router hold on tasks it was never tuned on?

Protocol (docs/routing.md): every routing choice is made on the *tuning* tasks (the named
streams'); a bank holding the tuning tasks (``offline-9``) then gets the *held-out* tasks
(``streams.heldout_tasks.HELDOUT``) added through ``PromptBank.add_task`` with the runner's data
budgets (train, validation and key inputs per class), nothing re-tuned. Reported per held-out task
over ``--draws`` data draws: its routing accuracy on its test inputs, and where its misrouted
inputs go; per tuning task: its routing accuracy before and after the held-out tasks arrived
(what they steal). Routing only: the modules are untrained (``prompt_state``), since routing
reads keys alone. Keys are read from (or encoded once into) runs/keys_cache/, which the routing
studies share (``_bench.KeyParts``).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench/heldout_routing.py --threads 2 \
        --out runs/bench/heldout-routing.json
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import _bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(parser, "runs/bench/heldout-routing.json")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--tuning", default="offline-9", help="named stream whose tasks the bank holds first")
    parser.add_argument("--heldout", default=None, help="comma-separated held-out tasks (default: HELDOUT)")
    parser.add_argument("--draws", type=int, default=3, help="data draws (seeds 0..draws-1)")
    parser.add_argument("--key-encoder", default=None, help="default: the bank's")
    parser.add_argument(
        "--router", default=None, help='router options as JSON (default: the bank\'s), e.g. {"strategy": "knn"}'
    )
    parser.add_argument("--key-per-class", type=int, default=None, help="default: the runner's KEY_PER_CLASS")
    parser.add_argument("--test-per-class", type=int, default=None, help="default: the runner's")
    args = parser.parse_args()
    _bench.set_threads(args.threads)
    _bench.quiet_truncation()

    import dataclasses
    import json

    import numpy as np

    from promptbank.bank import BankConfig, PromptBank
    from promptbank.keys import make_key_encoder
    from streams.heldout_tasks import HELDOUT
    from streams.named import stream_tasks
    from streams.sources import load_raw
    from streams.splits import KEY_PER_CLASS, DataConfig, get_task

    machine = _bench.machine_info()
    backbone = _bench.load_frozen(args.backbone)
    config = BankConfig(**({"key_encoder": args.key_encoder} if args.key_encoder else {}))
    if args.router:
        config = dataclasses.replace(config, router=json.loads(args.router))
    keys = _bench.CachedKeys(make_key_encoder(config.key_encoder, backbone=backbone))
    parts = _bench.KeyParts(backbone)
    tuning = stream_tasks(args.tuning, 1)
    heldout = args.heldout.split(",") if args.heldout else list(HELDOUT)
    budgets = DataConfig()
    key_per_class = args.key_per_class or KEY_PER_CLASS
    test_per_class = args.test_per_class or budgets.test_per_class

    def routing(bank: PromptBank, tasks: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out = {}
        for name, task in tasks.items():
            routed, _ = bank.route(task.test_texts)
            out[name] = {
                "routing_acc": float(np.mean([r == name for r in routed])),
                "n": len(routed),
                "misrouted_to": dict(Counter(r for r in routed if r != name).most_common(5)),
            }
        return out

    bank_texts = {t for name in tuning for t in load_raw(name).texts}
    draws = []
    for draw in range(args.draws):
        bank = PromptBank(backbone, config, key_encoder=keys)
        untrained = bank.new_prompt().trainable_state()
        loaded: dict[str, Any] = {}
        for phase, names in (("tuning", tuning), ("heldout", heldout)):
            for name in names:
                task = get_task(
                    name,
                    budgets.train_per_class,
                    budgets.val_per_class,
                    test_per_class,
                    seed=draw,
                    key_per_class=key_per_class,
                )
                if phase == "heldout":  # a stock phrase that is also a bank task's text routes either way
                    keep = [i for i, t in enumerate(task.test_texts) if t not in bank_texts]
                    task.test_texts = [task.test_texts[i] for i in keep]
                    task.test_labels = [task.test_labels[i] for i in keep]
                for split, texts in (
                    ("train", task.train_texts),
                    ("val", task.val_texts),
                    ("key", task.key_texts),
                    ("test", task.test_texts),
                ):
                    if texts:  # from runs/keys_cache/ (shared with the routing studies), or encoded once there
                        keys.remember(texts, parts.keys(config.key_encoder, name, f"{split}-s{draw}", texts))
                bank.add_task(
                    name,
                    task.train_texts,
                    task.train_labels,
                    label_names=list(task.label_names),
                    template=task.template,
                    val_texts=task.val_texts,
                    val_labels=task.val_labels,
                    key_texts=task.key_texts or None,
                    key_labels=task.key_labels or None,
                    prompt_state=untrained,
                )
                loaded[name] = task
                _bench.log(f"draw {draw}: {phase} task {name} ({len(task.train_texts) + len(task.key_texts)} keys)")
            if phase == "tuning":
                before = routing(bank, {n: loaded[n] for n in tuning})
        after = routing(bank, loaded)
        draws.append({"seed": draw, "tuning_before": before, "after": after})
        held = [after[n]["routing_acc"] for n in heldout]
        _bench.log(f"draw {draw}: held-out routing mean {np.mean(held):.4f}, min {min(held):.4f}")

    def stats(values: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(values)), "std": float(np.std(values)), "min": float(np.min(values))}

    per_heldout = {n: stats([d["after"][n]["routing_acc"] for d in draws]) for n in heldout}
    per_tuning = {
        n: {
            "before": stats([d["tuning_before"][n]["routing_acc"] for d in draws]),
            "after": stats([d["after"][n]["routing_acc"] for d in draws]),
        }
        for n in tuning
    }
    means = [np.mean([d["after"][n]["routing_acc"] for n in heldout]) for d in draws]
    summary = {
        "heldout_mean": stats(means),
        "heldout_worst_task": min(per_heldout.items(), key=lambda kv: kv[1]["mean"])[0],
        "tuning_mean_before": float(np.mean([v["before"]["mean"] for v in per_tuning.values()])),
        "tuning_mean_after": float(np.mean([v["after"]["mean"] for v in per_tuning.values()])),
        "goal": {"heldout_mean": 0.97, "heldout_task_min": 0.93},
    }
    summary["meets_goal"] = bool(
        summary["heldout_mean"]["mean"] >= 0.97 and min(v["mean"] for v in per_heldout.values()) >= 0.93
    )
    for n, v in per_heldout.items():
        _bench.log(f"{n:18s} routing {v['mean']:.4f} ± {v['std']:.4f} (min {v['min']:.4f})")
    _bench.log(
        f"held-out mean {summary['heldout_mean']['mean']:.4f}; tuning tasks {summary['tuning_mean_before']:.4f} "
        f"-> {summary['tuning_mean_after']:.4f}"
    )
    _bench.write_json(
        args.out,
        {
            "bench": "heldout_routing",
            "args": vars(args),
            "machine": machine,
            "bank_config": {"key_encoder": config.key_encoder, "router": config.router},
            "budgets": {
                "train": budgets.train_per_class,
                "val": budgets.val_per_class,
                "key": key_per_class,
                "test": test_per_class,
            },  # fmt: skip
            "tuning": tuning,
            "heldout": heldout,
            "summary": summary,
            "per_heldout": per_heldout,
            "per_tuning": per_tuning,
            "draws": draws,
        },
    )
    _bench.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
