"""A named stream's prompts trained in order and on Ray workers: wall time and identical prompts.

Three arms on the same tasks, seeds and budgets (the stream's own data draw; ``--steps`` may
shorten training so the three arms fit one sitting on a 2-core machine):

- ``in_order_1t``: ``add_task`` one task after another, 1 torch thread (what one Ray worker does);
- ``in_order_Nt``: the same with ``--threads`` torch threads (a sequential run using every core);
- ``ray_Nw``: ``promptbank.distributed.train_many`` on a local Ray instance of ``--workers`` CPUs,
  1 CPU and 1 thread per task; its wall time includes Ray's start, each worker loading the LLM and
  key encoder, and merging the parts into the bank.

Each arm's time covers the whole of each task's ``add_task``: prompt training (with its validation
checks) and the routing keys. Prompts are compared tensor by tensor with the 1-thread arm
(``torch.equal``), and the routers' answers on every task's test inputs with each other.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench/stream_workers.py --stream offline-9 --order 1 \
        --threads 2 --workers 2 --steps 16 --out runs/bench/stream_workers.json
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import _bench
import numpy as np


def in_order(strategy, tasks, threads: int) -> tuple[object, float]:
    """A fresh bank with every task added in order at ``threads`` torch threads; (bank, seconds)."""
    from promptbank.bank import PromptBank

    _bench.set_threads(threads)
    bank = PromptBank(strategy.bank.backbone, strategy.bank.config, key_encoder=strategy.bank.key_encoder)
    started = time.perf_counter()
    for task in tasks:
        spec = strategy.task_spec(task)
        bank.add_task(spec.name, spec.texts, spec.labels, **spec.options)
        print(f"  {task.name}: {time.perf_counter() - started:.0f} s", flush=True)
    return bank, time.perf_counter() - started


def on_ray(strategy, tasks, workers: int, folder: Path) -> tuple[object, float, list[str]]:
    """A fresh bank trained by ``train_many`` on a local Ray instance; (bank, seconds, failed)."""
    import ray

    from promptbank.bank import PromptBank
    from promptbank.distributed import train_many

    bank = PromptBank(strategy.bank.backbone, strategy.bank.config, key_encoder=strategy.bank.key_encoder)
    started = time.perf_counter()
    try:
        result = train_many(bank, [strategy.task_spec(t) for t in tasks], folder / "bank", workers=workers)
    finally:
        seconds = time.perf_counter() - started
        ray.shutdown()
    return bank, seconds, sorted(result.failed)


def same_prompts(a, b, names: list[str]) -> bool:
    return all(
        all(np.array_equal(v.numpy(), b.prompt_state(n)[k].numpy()) for k, v in a.prompt_state(n).items())
        for n in names
    )


def max_prompt_diff(a, b, names: list[str]) -> float:
    return max(
        float((v.float() - b.prompt_state(n)[k].float()).abs().max())
        for n in names
        for k, v in a.prompt_state(n).items()
    )


def routes(bank, tasks) -> list[str | None]:
    """The task chosen for every test input of every task."""
    return [name for t in tasks for name in bank.route(list(t.test_texts))[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _bench.add_common_args(parser, "runs/bench/stream_workers.json")
    parser.add_argument("--stream", default="offline-9")
    parser.add_argument("--order", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="training steps per task (default: the stream's)")
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--first", type=int, default=None, help="only the stream's first N tasks (a quick check)")
    args = parser.parse_args()
    _bench.quiet_truncation()

    from promptbank.backbone import load_backbone
    from streams.config import RunConfig
    from streams.runner import load_tasks, make_strategy

    cfg = RunConfig(stream=args.stream, order=args.order)
    changes = {k: v for k, v in (("steps", args.steps), ("eval_every", args.eval_every)) if v is not None}
    cfg.train = dataclasses.replace(cfg.train, **changes)
    tasks = load_tasks(cfg)[: args.first]
    strategy = make_strategy(cfg, load_backbone(cfg.backbone, bf16=cfg.bf16), progress=False)
    names = [t.name for t in tasks]
    result = {
        "machine": _bench.machine_info(),
        "command": "scripts/bench/stream_workers.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out" and v is not None),
        "stream": args.stream,
        "order": args.order,
        "tasks": names,
        "train": dataclasses.asdict(cfg.train),
    }
    with tempfile.TemporaryDirectory() as folder:
        print(f"Ray, {args.workers} workers", flush=True)
        ray_bank, ray_s, failed = on_ray(strategy, tasks, args.workers, Path(folder))
        print(f"in order, 1 thread ({ray_s:.0f} s on Ray)", flush=True)
        one, one_s = in_order(strategy, tasks, 1)
        print(f"in order, {args.threads} threads", flush=True)
        many, many_s = in_order(strategy, tasks, args.threads)
    _bench.set_threads(args.threads)
    reference = routes(one, tasks)
    result["arms"] = {
        "in_order_1t": {"threads": 1, "seconds": round(one_s, 1)},
        f"in_order_{args.threads}t": {
            "threads": args.threads,
            "seconds": round(many_s, 1),
            "prompts_identical_to_in_order_1t": same_prompts(many, one, names),
            "max_prompt_diff_vs_in_order_1t": max_prompt_diff(many, one, names),
            "routes_identical_to_in_order_1t": routes(many, tasks) == reference,
        },
        f"ray_{args.workers}w": {
            "workers": args.workers,
            "threads_per_task": 1,
            "seconds": round(ray_s, 1),
            "failed": failed,
            "prompts_identical_to_in_order_1t": same_prompts(ray_bank, one, names),
            "routes_identical_to_in_order_1t": routes(ray_bank, tasks) == reference,
        },
    }
    result["speedup_ray_vs_in_order_1t"] = round(one_s / ray_s, 3)
    result[f"speedup_ray_vs_in_order_{args.threads}t"] = round(many_s / ray_s, 3)
    print(result["arms"])
    print(_bench.write_json(args.out, result))


if __name__ == "__main__":
    main()
