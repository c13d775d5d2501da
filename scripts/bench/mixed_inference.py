"""Mixed-task inference: throughput of one ``bank.predict`` call on a batch whose inputs span m
tasks, versus the same inputs grouped by task (one call per task, as PEFT must do), versus the
same inputs all answered with one task's prompt, versus the bare frozen model on the same
token ids with n extra (zero) prompt vectors: the limit.

The bank holds m modules with random states (speed does not depend on their values) built
from the offline tasks' label sets and templates; keys come from real texts of those tasks. All
are ``--method`` (ULPT by default), or with ``--kinds ulpt,dept,ssb,...`` task j has kind
j mod len(kinds): a batch mixing kinds (the bank's default kind answers ``single_task``).
Cases, timed side by side with alternating order:

* ``mixed_routed``  ``bank.predict(texts)``: keys + routing + one mixed forward;
* ``mixed_oracle``  ``bank.predict(texts, task=[name per input])``: one mixed forward;
* ``grouped``       one ``bank.predict(texts_of_t, task=t)`` per task t (what PEFT must do);
* ``mixed_oracle_bucketed`` the same with ``batch_size=--bucket-batch``: length-sorted chunks;
* ``single_task``   ``bank.predict(texts, task=<first task>)``: every input with one prompt;
* ``limit``         ``predict_scores`` with one zero prompt on pre-tokenised inputs (no bank);
* ``route_only``    ``bank.route(texts)``: the routing share of ``mixed_routed``.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python scripts/bench/mixed_inference.py --threads 1 \
        --tasks 8 --out runs/bench/mixed-m8.json
"""

from __future__ import annotations

import argparse
from typing import Any

import _bench


def padded_tokens(lengths: list[int], batch_size: int, n_soft: int) -> int:
    """Positions computed when ``predict_scores`` sorts by length and pads each chunk to its longest."""
    ordered = sorted(lengths)
    return sum(
        len(ordered[i : i + batch_size]) * (max(ordered[i : i + batch_size]) + n_soft)
        for i in range(0, len(ordered), batch_size)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(parser, "runs/bench/mixed_inference.json")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--random-init", action="store_true", help="random weights with the backbone's real config")
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the LLM under bf16 autocast (default: on a bf16 GPU only)",
    )
    parser.add_argument(
        "--tasks", type=int, nargs="+", default=[1, 8, 64], help="m: tasks in the bank and in the batch"
    )
    parser.add_argument("--inputs", type=int, default=32, help="inputs per batch; it spans min(m, inputs) tasks")
    parser.add_argument(
        "--bucket-batch",
        type=int,
        default=8,
        help="batch_size of the extra case mixed_oracle_bucketed (predict sorts by length, then chunks)",
    )
    parser.add_argument("--source-tasks", default="bbc,rotten_tomatoes,trec,sms_spam,reuters_r8")
    parser.add_argument("--key-texts", type=int, default=16, help="texts per task for its routing keys")
    parser.add_argument("--max-input-tokens", type=int, default=48)
    parser.add_argument("--n-tokens", type=int, default=20)
    parser.add_argument("--method", default="ulpt")
    parser.add_argument("--kinds", default=None, help="comma-separated module kinds cycled over the tasks")
    parser.add_argument("--router", default=None, help="router strategy (default: the bank's, BankConfig().router)")
    parser.add_argument(
        "--key-class-weight",
        type=float,
        default=1.0,
        help="each task's weight on the router's class posterior (what add_task validates; 0: prompts alone)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    _bench.set_threads(args.threads)
    _bench.quiet_truncation()

    import numpy as np
    import torch

    from promptbank.bank import BankConfig, PromptBank
    from promptbank.keys import DEFAULT_KEY_ENCODER, make_key_encoder
    from promptbank.trainer import TrainConfig, predict_scores
    from streams.splits import get_task

    machine = _bench.machine_info()
    backbone = _bench.load_frozen(args.backbone, args.random_init, args.device, args.bf16)
    keys = make_key_encoder(DEFAULT_KEY_ENCODER, backbone=backbone, device=args.device)
    sources = [get_task(name) for name in args.source_tasks.split(",")]
    kinds = args.kinds.split(",") if args.kinds else [args.method]
    results = []
    for m in args.tasks:
        n_inputs = args.inputs
        opts = {} if args.method == "pt" else {"rank": 2}
        bank = PromptBank(
            backbone,
            key_encoder=keys,
            method=args.method,
            n_tokens=args.n_tokens,
            prompt_options=opts,
            router={"strategy": args.router} if args.router else BankConfig().router,
            max_input_tokens=args.max_input_tokens,
        )
        names = []
        for j in range(m):
            src = sources[j % len(sources)]
            start = (j // len(sources)) * args.key_texts % max(1, len(src.train_texts) - args.key_texts)
            texts = src.train_texts[start : start + args.key_texts]
            labels = src.train_labels[start : start + args.key_texts]
            if len(set(labels)) < 2:
                texts, labels = src.train_texts[: args.key_texts], src.train_labels[: args.key_texts]
            kind = kinds[j % len(kinds)]
            state = bank.new_prompt(seed=j, method=kind).trainable_state()
            bank.add_task(
                f"t{j}",
                texts,
                labels,
                label_names=list(src.label_names),
                template=src.template,
                prompt_state=state,
                train_config=TrainConfig(progress=False),
                method=kind,
            )
            names.append(f"t{j}")
            bank.task_info(f"t{j}").metadata["key_class_weight"] = args.key_class_weight
        # the batch: input i belongs to task i % m, its text from that task's source test split
        texts, assigned = [], []
        for i in range(n_inputs):
            j = i % m
            src = sources[j % len(sources)]
            texts.append(src.test_texts[i // len(sources) % len(src.test_texts)])
            assigned.append(names[j])
        groups = {t: [x for x, a in zip(texts, assigned) if a == t] for t in dict.fromkeys(assigned)}
        # the limit: same token ids and label sets, one zero prompt, no bank on the way
        ids, label_ids = [], []
        for x, t in zip(texts, assigned):
            info = bank.task_info(t)
            ids.append(backbone.encode([x], info.template, args.max_input_tokens).input_ids[0])
            label_ids.append(backbone.label_token_ids(info.label_names))
        zero = torch.zeros(1, args.n_tokens, backbone.hidden_size, device=backbone.device)
        B = n_inputs

        def grouped() -> None:
            for t, xs in groups.items():
                bank.predict(xs, task=t, batch_size=B)

        cases: dict[str, Any] = {
            "mixed_routed": lambda: bank.predict(texts, batch_size=B),
            "mixed_oracle": lambda: bank.predict(texts, task=assigned, batch_size=B),
            "mixed_oracle_bucketed": lambda: bank.predict(texts, task=assigned, batch_size=args.bucket_batch),
            "grouped": grouped,
            "single_task": lambda: bank.predict(texts, task=names[0], batch_size=B),
            "limit": lambda: predict_scores(backbone, zero, [0] * len(ids), ids, label_ids, B),
            "route_only": lambda: bank.route(texts),
        }
        routed = [p.task for p in bank.predict(texts, batch_size=B)]
        single_ids = backbone.encode(texts, bank.task_info(names[0]).template, args.max_input_tokens).input_ids
        padded = {  # token positions the forward passes compute (soft prompt included)
            "mixed": padded_tokens([len(x) for x in ids], B, args.n_tokens),
            "mixed_bucketed": padded_tokens([len(x) for x in ids], args.bucket_batch, args.n_tokens),
            "grouped": sum(
                padded_tokens([len(x) for x, a in zip(ids, assigned) if a == t], B, args.n_tokens) for t in groups
            ),
            "single_task": padded_tokens([len(x) for x in single_ids], B, args.n_tokens),
            "real": sum(len(x) + args.n_tokens for x in ids),
        }
        _bench.log(
            f"m={m}: {n_inputs} inputs over {len(groups)} tasks ({sum(map(len, ids))} tokens + {args.n_tokens} soft "
            f"each); routed to {len(set(routed))} tasks, {np.mean([r == a for r, a in zip(routed, assigned)]):.2f} as assigned"
        )
        times = _bench.interleaved(cases, repeats=args.repeats, warmup=args.warmup, log=_bench.log)
        row: dict[str, Any] = {
            "m": m,
            "kinds": sorted({kinds[j % len(kinds)] for j in range(m)}),
            "inputs": n_inputs,
            "tasks_in_batch": len(groups),
            "tokens_per_input": float(np.mean([len(x) for x in ids])),
            "padded_tokens": padded,
            "routed_distinct_tasks": len(set(routed)),
            "routed_as_assigned": float(np.mean([r == a for r, a in zip(routed, assigned)])),
            "seconds": {k: _bench.summary(v) for k, v in times.items()},
            "inputs_per_s": {
                k: n_inputs / _bench.summary(v)["median"] for k, v in times.items() if not k.startswith("route_only")
            },
        }
        # throughput ratios = inverse time ratios, both as ratio of medians and paired per repetition
        inv = lambda r: {k: 1.0 / v for k, v in r.items()}
        row["throughput_ratios"] = {
            "mixed_oracle_vs_single_task": inv(_bench.ratio(times["mixed_oracle"], times["single_task"])),
            "mixed_routed_vs_single_task": inv(_bench.ratio(times["mixed_routed"], times["single_task"])),
            "mixed_oracle_vs_limit": inv(_bench.ratio(times["mixed_oracle"], times["limit"])),
            "mixed_routed_vs_limit": inv(_bench.ratio(times["mixed_routed"], times["limit"])),
            "mixed_oracle_vs_grouped": inv(_bench.ratio(times["mixed_oracle"], times["grouped"])),
            "mixed_oracle_bucketed_vs_grouped": inv(_bench.ratio(times["mixed_oracle_bucketed"], times["grouped"])),
            "mixed_oracle_bucketed_vs_single_task": inv(
                _bench.ratio(times["mixed_oracle_bucketed"], times["single_task"])
            ),
            "mixed_routed_vs_grouped": inv(_bench.ratio(times["mixed_routed"], times["grouped"])),
        }
        row["routing_share_of_mixed_routed"] = (
            _bench.summary(times["route_only"])["median"] / _bench.summary(times["mixed_routed"])["median"]
        )
        results.append(row)
        r = row["throughput_ratios"]
        _bench.log(
            f"m={m}: inputs/s "
            + ", ".join(f"{k} {v:.2f}" for k, v in row["inputs_per_s"].items())
            + f" | mixed/single {r['mixed_oracle_vs_single_task']['paired_median']:.3f}, mixed/limit "
            f"{r['mixed_oracle_vs_limit']['paired_median']:.3f}, mixed/grouped {r['mixed_oracle_vs_grouped']['paired_median']:.2f}"
            f" | padded tokens {padded}"
        )
        bank = None  # free the bank before the next size

    _bench.write_json(
        args.out,
        {
            "bench": "mixed_inference",
            "args": vars(args),
            "machine": machine,
            "backbone": backbone.identity(),
            "llm_bf16": backbone.bf16,
            "goal": {"mixed_vs_single_task": 0.95, "mixed_vs_grouped_at_m8": 3.0},
            "results": results,
        },
    )
    _bench.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
