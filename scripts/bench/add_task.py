"""Memory and time of adding one task's router keys to a bank (``PromptBank.add_task``).

A task's router texts can far outnumber its prompt's training texts (the stream runner gives
the router up to 1,024 per class). This measures what adding them costs: the peak of traced
Python/numpy allocations inside ``add_task`` (tracemalloc: the keys and the token ids; torch's
own allocator is not traced), the process's peak RSS growth over the call, and its time.
The prompt is given (``prompt_state``), so no training is measured; the router is the
default one on the default key.

    .venv/bin/python scripts/bench/add_task.py --task 20newsgroups --key-per-class 1024 \
        --out runs/bench/add_task.json
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import _bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="20newsgroups", help="an offline task of streams.sources")
    parser.add_argument("--key-per-class", type=int, default=1024, help="router inputs per class")
    _bench.add_common_args(parser, "runs/bench/add_task.json")
    args = parser.parse_args()
    threads = _bench.set_threads(args.threads)
    _bench.quiet_truncation()

    from promptbank.bank import PromptBank
    from streams.splits import get_task

    bank = PromptBank(_bench.load_frozen())
    data = get_task(
        args.task, train_per_class=64, val_per_class=16, key_per_class=args.key_per_class
    )  # the runner's budgets
    texts = len(data.train_texts) + len(data.val_texts) + len(data.key_texts)
    # a first small task loads the key encoder and builds the router, outside the measurement
    bank.add_task(
        "warm-up", ["a", "b"], [0, 1], label_names=["x", "y"], prompt_state=bank.new_prompt().trainable_state()
    )
    prompt = bank.new_prompt().trainable_state()
    _bench.log(f"{args.task}: {texts} router texts ({len(data.key_texts)} beyond the prompt's), {threads} threads")

    rss_before = _bench.rss_bytes()
    _bench.reset_peak_rss()
    tracemalloc.start()
    started = time.perf_counter()
    bank.add_task(
        args.task,
        data.train_texts,
        data.train_labels,
        label_names=list(data.label_names),
        template=data.template,
        val_texts=data.val_texts,
        val_labels=data.val_labels,
        key_texts=data.key_texts,
        key_labels=data.key_labels,
        prompt_state=prompt,
    )
    seconds = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_growth = _bench.rss_bytes("VmHWM") - rss_before
    result = {
        "task": args.task,
        "router_texts": texts,
        "key_dim": bank.key_encoder.dim,
        "keys_float32_bytes": texts * bank.key_encoder.dim * 4,
        "traced_peak_bytes": traced_peak,
        "peak_rss_growth_bytes": rss_growth,
        "seconds": round(seconds, 2),
        "machine": _bench.machine_info(),
        "threads": threads,
    }
    _bench.log(
        f"traced peak {traced_peak / 2**20:.1f} MiB, peak RSS growth {rss_growth / 2**20:.1f} MiB, "
        f"{seconds:.1f} s (the keys alone: {result['keys_float32_bytes'] / 2**20:.1f} MiB)"
    )
    _bench.write_json(args.out, result)


if __name__ == "__main__":
    main()
