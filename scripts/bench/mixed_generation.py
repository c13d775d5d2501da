"""Mixed-task generation: tokens per second of one ``bank.predict`` call that decodes a batch
spanning m text-to-text tasks together, versus the same inputs grouped by task (one call per task,
as a PEFT user with one adapter loaded at a time must do).

The bank holds m text-to-text tasks with random module states (speed does not depend on their
values); every answer is exactly ``--new-tokens`` long (``min_new_tokens = max_new_tokens``), so
both cases generate the same number of tokens. Cases, timed side by side with alternating order:

* ``mixed``    ``bank.predict(texts, task=[name per input])``: one decode over the whole batch;
* ``grouped``  one ``bank.predict(texts_of_t, task=t)`` per task t.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/mixed_generation.py --threads 1 --tasks 1 8 \
        --out docs/results/bench-mixed-generation.json
"""

from __future__ import annotations

import argparse
from typing import Any

import _bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(parser, "runs/bench/mixed_generation.json")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--random-init", action="store_true", help="random weights with the backbone's real config")
    parser.add_argument("--device", default=None)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 8], help="m: text-to-text tasks in the batch")
    parser.add_argument("--inputs", type=int, default=16, help="inputs per batch; it spans min(m, inputs) tasks")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated per input")
    parser.add_argument("--source", default="bbc_headline", help="the text-to-text task whose texts are the inputs")
    parser.add_argument("--max-input-tokens", type=int, default=48)
    parser.add_argument("--kinds", default="ulpt", help="comma-separated module kinds cycled over the tasks")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    _bench.set_threads(args.threads)
    _bench.quiet_truncation()

    from promptbank.bank import PromptBank
    from streams.splits import get_task

    machine = _bench.machine_info()
    backbone = _bench.load_frozen(args.backbone, args.random_init, args.device, None)
    source = get_task(args.source, train_per_class=16, test_per_class=args.inputs)
    kinds = args.kinds.split(",")
    decode = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}
    results = []
    for m in args.tasks:
        bank = PromptBank(backbone, key_encoder="embedding-mean", max_input_tokens=args.max_input_tokens)
        names = [f"t{j}" for j in range(m)]
        for j, name in enumerate(names):
            kind = kinds[j % len(kinds)]
            bank.add_task(
                name,
                source.train_texts,
                targets=source.train_targets,
                template=source.template,
                prompt_state=bank.new_prompt(seed=j, method=kind).trainable_state(),
                method=kind,
            )
        texts = source.test_texts[: args.inputs]
        assigned = [names[i % m] for i in range(len(texts))]
        groups = {t: [x for x, a in zip(texts, assigned) if a == t] for t in names}

        def grouped() -> None:
            for t, xs in groups.items():
                bank.predict(xs, task=t, batch_size=len(texts), generation=decode)

        cases: dict[str, Any] = {
            "mixed": lambda: bank.predict(texts, task=assigned, batch_size=len(texts), generation=decode),
            "grouped": grouped,
        }
        times = _bench.interleaved(cases, repeats=args.repeats, warmup=args.warmup, log=_bench.log)
        tokens = len(texts) * args.new_tokens
        results.append(
            {
                "m": m,
                "kinds": sorted({kinds[j % len(kinds)] for j in range(m)}),
                "inputs": len(texts),
                "new_tokens": args.new_tokens,
                "seconds": {k: _bench.summary(v) for k, v in times.items()},
                "tokens_per_s": {k: tokens / _bench.summary(v)["median"] for k, v in times.items()},
                "mixed_vs_grouped_throughput": {
                    k: 1.0 / v for k, v in _bench.ratio(times["mixed"], times["grouped"]).items()
                },
            }
        )
        _bench.log(f"m={m}: " + ", ".join(f"{k} {v:.1f} tok/s" for k, v in results[-1]["tokens_per_s"].items()))
    _bench.write_json(
        args.out,
        {
            "bench": "mixed_generation",
            "args": vars(args),
            "machine": machine,
            "backbone": backbone.identity(),
            "results": results,
        },
    )
    _bench.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
