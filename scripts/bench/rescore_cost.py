"""What re-scoring the router's top candidates costs, on a trained bank and its own test inputs.

``BankConfig.rescore`` (off by default) answers an input with each of the router's top
candidates whose posterior reaches ``min_posterior`` and keeps the most confident. Issue 26
asks that a top-3 re-scored prediction cost at most 1.3x a single routed one. Here a saved
bank (the main job's by default) answers the same test inputs of its tasks three ways, timed
side by side in alternating order:

* ``routed``: ``bank.predict(texts)`` with ``rescore.top = 1`` (the default);
* ``rescored_top3``: ``top = 3`` at the default ``min_posterior`` (only unsure inputs pay);
* ``rescored_top3_all``: ``top = 3``, ``min_posterior = 0``: every input runs three modules.

Also reported: the share of inputs re-scored, forward passes per input, and accuracy each way.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/rescore_cost.py --threads 1 \\
        --bank runs/main-job-cold/bank --out runs/bench/rescore-cost.json
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import _bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(parser, "runs/bench/rescore-cost.json")
    parser.add_argument("--bank", default="runs/main-job-cold/bank", help="a saved bank (promptbank run's bank/)")
    parser.add_argument(
        "--per-task", type=int, default=40, help="test inputs per task, evenly spaced over its test split"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    _bench.set_threads(args.threads)
    _bench.quiet_truncation()

    import numpy as np

    from promptbank import PromptBank
    from streams.splits import get_task

    machine = _bench.machine_info()
    bank = PromptBank.load(args.bank)
    texts, truth, labels = [], [], []
    for name in bank.tasks:
        budgets = bank.task_info(name).metadata["budgets"]  # the draw the stream runner trained on
        data = get_task(name, **{k: budgets[k] for k in ("train_per_class", "val_per_class", "test_per_class", "seed")})
        picks = np.linspace(0, len(data.test_texts) - 1, min(args.per_task, len(data.test_texts))).astype(int)
        texts += [data.test_texts[i] for i in picks]
        truth += [name] * len(picks)
        labels += [data.label_names[data.test_labels[i]] for i in picks]
    default = bank.config
    configs = {
        "routed": dataclasses.replace(default, rescore={**default.rescore, "top": 1}),
        "rescored_top3": dataclasses.replace(default, rescore={**default.rescore, "top": 3}),
        "rescored_top3_all": dataclasses.replace(default, rescore={**default.rescore, "top": 3, "min_posterior": 0.0}),
    }

    def predict(name: str) -> list[Any]:
        bank.config = configs[name]
        try:
            return bank.predict(texts, batch_size=args.batch_size)
        finally:
            bank.config = default

    rows: dict[str, Any] = {}
    _, routing = bank._keys_and_routing(texts, 3)  # the candidates every case chooses from
    for name in configs:
        preds = predict(name)
        candidates = configs[name].rescorer().candidates(routing)
        rows[name] = {
            "accuracy": float(np.mean([p.label == y for p, y in zip(preds, labels)])),
            "routing_accuracy": float(np.mean([p.task == t for p, t in zip(preds, truth)])),
            "module_passes_per_input": sum(map(len, candidates)) / len(texts),
            "share_rescored": float(np.mean([len(c) > 1 for c in candidates])),
        }
        _bench.log(f"{name}: {rows[name]}")
    # the accuracy pass above warmed every case up
    times = _bench.interleaved(
        {n: (lambda n=n: predict(n)) for n in configs}, repeats=args.repeats, warmup=0, log=_bench.log
    )
    for name in configs:
        rows[name]["seconds"] = _bench.summary(times[name])
        rows[name]["cost_vs_routed"] = _bench.ratio(times[name], times["routed"])
    _bench.log(
        "cost vs routed: "
        + ", ".join(f"{n} {rows[n]['cost_vs_routed']['paired_median']:.2f}x" for n in configs if n != "routed")
    )
    _bench.write_json(
        args.out,
        {
            "bench": "rescore_cost",
            "args": vars(args),
            "machine": machine,
            "tasks": bank.tasks,
            "inputs": len(texts),
            "goal": {"top3_cost_vs_routed": 1.3},
            "rows": rows,
        },
    )
    _bench.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
