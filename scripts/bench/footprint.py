"""Footprint benchmark: bytes per task of a bank, on disk and in RAM, per module kind and router,
versus the same module saved by PEFT where PEFT has it (prompt tuning expanded n x d float32 for
the prompt kinds; LoRA, (IA)3 and VeRA with the same targets and rank).

Banks are built with ``add_task(..., prompt_state=...)`` from freshly initialised prompts (no
training: the size does not depend on the values); keys come from real texts of offline tasks.
Disk bytes are split into prompt tensors / routing state / manifest share, both as the average
over the bank (total / tasks) and as the marginal cost of one more task (slope over 1..T tasks).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python scripts/bench/footprint.py --threads 1 \
        --out runs/bench/footprint.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import _bench

GOAL_BYTES = 4096  # the target: ULPT <= 4 KB per task including routing keys
GOAL_PEFT_FACTOR = 10.0  # ... and >= 10x smaller than PEFT's prompt-tuning checkpoint


# (label, method, prompt options, router options, storage dtype): the method x router grid
# at library defaults (the bank's default router is "lda"), then ULPT settings aimed at the
# 4 KB goal.
def variants(n_tokens: int) -> list[tuple[str, str, dict, dict, str]]:
    rank = {"rank": 2}
    grid = []
    for method in ("ulpt", "pt", "lopt1", "lopt2"):
        opts = {} if method == "pt" else dict(rank)
        for router in ({"strategy": "lda"}, {"strategy": "gaussian"}, {"strategy": "knn"}):
            grid.append((f"{method}/{router['strategy']}", method, opts, router, "float16"))
    grid += [
        ("ulpt/lda rank8 (a wider scatter)", "ulpt", rank, {"strategy": "lda", "scatter_rank": 8}, "float16"),
        ("ulpt/gaussian rank0", "ulpt", rank, {"strategy": "gaussian", "scatter_rank": 0}, "float16"),
        ("ulpt/lda one mean per task", "ulpt", rank, {"strategy": "lda", "per_class": False}, "float16"),
        ("ulpt/lda float16 means", "ulpt", rank, {"strategy": "lda", "mean_bits": 16}, "float16"),
        ("ulpt/knn 4 centroids", "ulpt", rank, {"strategy": "knn", "n_centroids": 4}, "float16"),
        (
            "ulpt/knn 2 centroids SQfp16",
            "ulpt",
            rank,
            {"strategy": "knn", "n_centroids": 2, "index": "SQfp16"},
            "float16",
        ),
        ("ulpt/knn mean", "ulpt", rank, {"strategy": "knn", "summary": "mean"}, "float16"),
        ("ulpt/knn mean SQfp16", "ulpt", rank, {"strategy": "knn", "summary": "mean", "index": "SQfp16"}, "float16"),
        ("ulpt/knn 8 centroids SQfp16", "ulpt", rank, {"strategy": "knn", "index": "SQfp16"}, "float16"),
    ]
    lda = {"strategy": "lda"}
    grid += [
        ("dept/lda", "dept", {}, lda, "float16"),
        ("ssb/lda", "ssb", {}, lda, "float16"),
        ("ssl/lda", "ssl", {}, lda, "float16"),
        ("ia3/lda", "ia3", {}, lda, "float16"),
        ("lora r2 qv/lda", "lora", {"rank": 2}, lda, "float16"),
        ("lora r8 qv/lda", "lora", {"rank": 8}, lda, "float16"),
        ("lora r8 all/lda", "lora", {"rank": 8, "targets": "all"}, lda, "float16"),
        ("vera r64 qv/lda", "vera", {"rank": 64}, lda, "float16"),
    ]
    return grid


def peft_config(method: str, opts: dict, n_tokens: int) -> Any:
    """PEFT's config for the same module (targets, rank), or None where PEFT has no such kind."""
    from peft import IA3Config, LoraConfig, PromptTuningConfig, TaskType, VeraConfig

    targets = opts.get("targets", ["q_proj", "v_proj"])
    targets = (
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] if targets == "all" else targets
    )
    if method in ("ulpt", "pt", "lopt1", "lopt2"):
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=n_tokens)
    if method == "lora":
        return LoraConfig(task_type=TaskType.CAUSAL_LM, r=opts.get("rank", 8), lora_alpha=16, target_modules=targets)
    if method == "ia3":  # output scales on k, v and up (up_proj not as a "feedforward" input scale)
        kv_up = ["k_proj", "v_proj", "up_proj"]
        return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=kv_up, feedforward_modules=[])
    if method == "vera":
        return VeraConfig(task_type=TaskType.CAUSAL_LM, r=opts.get("rank", 64), target_modules=targets)
    return None


def bank_files(path: Path) -> dict[str, int]:
    """Apparent bytes of a saved bank by role."""
    manifest = json.loads((path / "manifest.json").read_text())
    out = {"manifest": (path / "manifest.json").stat().st_size, "prompts": 0, "routing": 0}
    for role, entry in manifest["files"].items():
        size = (path / entry["file"]).stat().st_size
        out["prompts" if role == "prompts" else "routing"] += size
    out["total"] = out["prompts"] + out["routing"] + out["manifest"]
    out["manifest_if_compact_json"] = len(json.dumps(manifest, separators=(",", ":")).encode())
    out["allocated"] = sum(f.stat().st_blocks * 512 for f in path.iterdir() if f.is_file())
    return out


def ram_bytes(bank: Any) -> dict[str, float]:
    """Bytes the bank holds in memory per task, counted from its containers."""
    import numpy as np

    T = max(len(bank.tasks), 1)
    states = sum(v.numel() * v.element_size() for st in bank.modules.states.values() for v in st.values())
    matrices = bank.matrix_cache.nbytes()  # cached ones only
    _, arrays = bank.router.state()  # FAISS index as serialised bytes ~ its in-memory size
    router = sum(np.asarray(a).nbytes for a in arrays.values())
    scatter = getattr(bank.router, "_scatter", None)  # held as a full d x d matrix, saved packed
    if scatter is not None and "scatter_packed" in arrays:
        router += scatter.nbytes - arrays["scatter_packed"].nbytes
    cache = getattr(bank.router, "_cache", None) or {}
    router_cache = sum(np.asarray(v).nbytes for v in cache.values() if isinstance(v, np.ndarray))
    if "index" in cache:
        router_cache += len(__import__("faiss").serialize_index(cache["index"]))
    meta = sum(len(json.dumps(dataclasses.asdict(t))) for t in bank._tasks.values())
    out = {
        "prompt_states": states / T,
        "prompt_matrices_cache": matrices / T,
        "router_state": router / T,
        "router_route_cache": router_cache / T,
        "task_metadata_json": meta / T,
    }
    out["total"] = sum(out.values())
    return out


def peft_footprint(backbone: Any, config: Any, workdir: Path) -> dict[str, Any]:
    """Size of PEFT's checkpoint (save_pretrained) for ``config`` on a copy of the backbone."""
    import copy

    from peft import get_peft_model

    model = get_peft_model(copy.deepcopy(backbone.model), config)
    out_dir = workdir / f"peft-{type(config).__name__}"
    model.save_pretrained(out_dir)
    files = {name: (out_dir / name).stat().st_size for name in ("adapter_model.safetensors", "adapter_config.json")}
    return {
        "config": type(config).__name__,
        "files": files,
        "total": sum(files.values()),
        "allocated": sum((out_dir / n).stat().st_blocks * 512 for n in files),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(parser, "runs/bench/footprint.json")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument(
        "--tasks", default="bbc,rotten_tomatoes,trec,sms_spam,reuters_r8", help="offline tasks giving key texts"
    )
    parser.add_argument("--key-texts", type=int, default=48, help="training texts per task used to build its keys")
    parser.add_argument(
        "--test-texts", type=int, default=40, help="test texts per task for the routing accuracy column"
    )
    parser.add_argument("--n-tokens", type=int, default=20)
    parser.add_argument(
        "--keys", default=None, help="key encoder (default: the bank's, promptbank.keys.DEFAULT_KEY_ENCODER)"
    )
    parser.add_argument("--variants", default=None, help="comma-separated row labels to run (default: all)")
    args = parser.parse_args()
    grid = variants(args.n_tokens)
    if args.variants:
        wanted = [v.strip() for v in args.variants.split(",")]
        unknown = sorted(set(wanted) - {g[0] for g in grid})
        if unknown:
            parser.error(f"unknown variants {unknown}; choose from {[g[0] for g in grid]}")
        grid = [g for g in grid if g[0] in wanted]
    _bench.set_threads(args.threads)
    _bench.quiet_truncation()

    import numpy as np

    from promptbank.bank import PromptBank
    from promptbank.keys import DEFAULT_KEY_ENCODER, make_key_encoder
    from streams.splits import get_task

    machine = _bench.machine_info()
    backbone = _bench.load_frozen(args.backbone)
    keys = _bench.CachedKeys(make_key_encoder(args.keys or DEFAULT_KEY_ENCODER, backbone=backbone))
    tasks = [get_task(name) for name in args.tasks.split(",")]
    T = len(tasks)
    _bench.log(f"{T} tasks, {args.key_texts} key texts each, d={backbone.hidden_size}, n={args.n_tokens}")
    test_texts = [t for task in tasks for t in task.test_texts[: args.test_texts]]
    test_truth = np.repeat(np.arange(T), [len(task.test_texts[: args.test_texts]) for task in tasks])
    test_keys = keys.encode(test_texts)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, method, opts, router, dtype in grid:
            bank = PromptBank(
                backbone,
                key_encoder=keys,
                method=method,
                n_tokens=args.n_tokens,
                prompt_options=opts,
                router=router,
                storage_dtype=dtype,
            )
            sizes = []  # saved bank after 1..T tasks: the slope is the marginal cost per task
            for i, task in enumerate(tasks):
                state = bank.new_prompt(seed=i).trainable_state()
                bank.add_task(
                    task.name,
                    task.train_texts[: args.key_texts],
                    task.train_labels[: args.key_texts],
                    label_names=list(task.label_names),
                    template=task.template,
                    prompt_state=state,
                )
                sizes.append(bank_files(bank.save(tmp / label.replace("/", "_").replace(" ", "_"))))
            routed = bank.router.route(test_keys).task_ids
            full = sizes[-1]
            per_task = {k: full[k] / T for k in ("prompts", "routing", "manifest", "total", "allocated")}
            marginal = (
                {k: (full[k] - sizes[0][k]) / (T - 1) for k in ("prompts", "routing", "manifest", "total")}
                if T > 1
                else per_task
            )
            fixed = full["total"] - T * marginal["total"]
            row = {
                "variant": label,
                "method": method,
                "prompt_options": opts,
                "router": router,
                "storage_dtype": dtype,
                "trainable_params": bank.new_prompt().num_trainable(),
                "disk_per_task": per_task,
                "disk_marginal_per_task": marginal,
                "disk_fixed": fixed,
                "disk_per_task_at": {str(n): fixed / n + marginal["total"] for n in (10, 100, 1000)},
                "disk_bank_total": full,
                "library_bytes_per_task": bank.bytes_per_task(),
                "ram_per_task": ram_bytes(bank),
                "routing_accuracy": float(np.mean(routed == test_truth)),
            }
            rows.append(row)
            _bench.log(
                f"{label:30s} disk/task {per_task['total']:9.0f} B (prompt {per_task['prompts']:.0f}, routing "
                f"{per_task['routing']:.0f}, manifest {per_task['manifest']:.0f}); marginal {marginal['total']:.0f} B; "
                f"RAM/task {row['ram_per_task']['total']:.0f} B; routing acc {row['routing_accuracy']:.3f}"
            )
        peft_by_row = {}
        for row in rows:
            config = peft_config(row["method"], row["prompt_options"], args.n_tokens)
            if config is not None:
                peft_by_row[row["variant"]] = peft_footprint(backbone, config, tmp / row["variant"].replace("/", "_"))
    for row in rows:
        if row["variant"] not in peft_by_row:
            continue
        peft = peft_by_row[row["variant"]]
        row["peft"] = peft
        _bench.log(f"{row['variant']:30s} PEFT {peft['config']}: {peft['total']} B on disk")
        row["vs_peft"] = {
            "peft_over_bank_per_task": peft["total"] / row["disk_per_task"]["total"],
            "peft_over_bank_marginal": peft["total"] / row["disk_marginal_per_task"]["total"],
            "peft_over_bank_prompt_only": peft["total"] / row["disk_per_task"]["prompts"],
        }
        row["meets_goal"] = {
            "le_4KB_per_task_avg": row["disk_per_task"]["total"] <= GOAL_BYTES,
            "le_4KB_per_task_marginal": row["disk_marginal_per_task"]["total"] <= GOAL_BYTES,
            "ge_10x_smaller_than_peft": row["vs_peft"]["peft_over_bank_per_task"] >= GOAL_PEFT_FACTOR,
        }
    _bench.write_json(
        args.out,
        {
            "bench": "footprint",
            "args": vars(args),
            "machine": machine,
            "backbone": backbone.identity(),
            "n_tasks": T,
            "goal": {"bytes_per_task": GOAL_BYTES, "peft_factor": GOAL_PEFT_FACTOR},
            "peft": peft_by_row.get("ulpt/lda"),
            "rows": rows,
        },
    )
    _bench.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
