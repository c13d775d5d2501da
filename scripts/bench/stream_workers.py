"""A named stream's prompts trained in order and on Ray workers: wall time and identical prompts.

Arms on the same tasks, seeds and budgets (the stream's own data draw; ``--steps`` may shorten
training so the arms fit one sitting on a 2-core machine), chosen with ``--arms``:

- ``one`` (``in_order_1t``): ``add_task`` one task after another, 1 torch thread (what one Ray
  worker does);
- ``threads`` (``in_order_Nt``): the same with ``--threads`` torch threads (a sequential run
  using every core);
- ``ray`` (``ray_Nw``): ``promptbank.distributed.train_many`` on a local Ray instance of
  ``--workers`` CPUs, 1 CPU and 1 thread per task; its wall time includes Ray's start, each
  worker loading the LLM and key encoder, and merging the parts into the bank.

Each arm's time covers the whole of each task's ``add_task``: prompt training (with its validation
checks) and the routing keys. Prompts are compared tensor by tensor (``torch.equal``) with the
in-order arm of the fewest threads, and so are the routers' answers on every task's test inputs.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench/stream_workers.py --stream offline-9 --order 1 \
        --threads 2 --workers 2 --steps 8 --eval-every 8 --arms ray,threads \
        --out runs/bench/stream_workers.json
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
    parser.add_argument(
        "--arms",
        default="ray,threads,one",
        type=lambda v: v.split(","),
        help="ray: train_many on --workers; threads: in order at --threads; one: in order at 1 thread",
    )
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
        + " ".join(
            f"--{k.replace('_', '-')} {','.join(v) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k != "out" and v is not None
        ),
        "stream": args.stream,
        "order": args.order,
        "tasks": names,
        "train": dataclasses.asdict(cfg.train),
    }
    arms: dict[str, dict] = {}
    banks: dict[str | int, object] = {}  # "ray", or the in-order arm's threads
    with tempfile.TemporaryDirectory() as folder:
        if "ray" in args.arms:
            print(f"Ray, {args.workers} workers", flush=True)
            banks["ray"], seconds, failed = on_ray(strategy, tasks, args.workers, Path(folder))
            arms[f"ray_{args.workers}w"] = {
                "workers": args.workers,
                "threads_per_task": 1,
                "seconds": round(seconds, 1),
                "failed": failed,
            }
        for threads in sorted({args.threads if a == "threads" else 1 for a in args.arms if a in ("threads", "one")}):
            print(f"in order, {threads} threads", flush=True)
            banks[threads], seconds = in_order(strategy, tasks, threads)
            arms[f"in_order_{threads}t"] = {"threads": threads, "seconds": round(seconds, 1)}
    _bench.set_threads(args.threads)
    reference = min(k for k in banks if k != "ray")  # the fewest threads: what a Ray worker uses
    ref_routes = routes(banks[reference], tasks)
    for key, bank in banks.items():
        if key == reference:
            continue
        arm = arms[f"ray_{args.workers}w" if key == "ray" else f"in_order_{key}t"]
        arm["prompts_identical_to_reference"] = same_prompts(bank, banks[reference], names)
        arm["max_prompt_diff_vs_reference"] = max_prompt_diff(bank, banks[reference], names)
        arm["routes_identical_to_reference"] = routes(bank, tasks) == ref_routes
    result["reference"] = f"in_order_{reference}t"
    result["arms"] = arms
    print(result["arms"])
    print(_bench.write_json(args.out, result))


if __name__ == "__main__":
    main()
