"""The stream runner: feed a named stream's experiences to a strategy, evaluate after each.

After training task i every seen task j <= i is evaluated, giving R[i][j]. Progress is saved
after every task, so a run started again with the same arguments resumes after the last
finished one. Everything is tracked in one MLflow run with a nested run per task.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from promptbank.backbone import load_backbone
from promptbank.bank import PromptBank
from promptbank.errors import InvalidDataError
from promptbank.keys import make_key_encoder
from promptbank.storage import atomic_write

from . import plots
from .bank_strategy import BankStrategy, PromptCache
from .benchmark import build_benchmark
from .config import RunConfig
from .metrics import confusion_matrix, continual_metrics
from .named import STREAMS, stream_tasks
from .splits import TaskData, get_task, with_label_list
from .strategy import StreamStrategy, task_metric
from .tracking import Tracker, quiet_mlflow

RESULTS = "results.json"
PROGRESS = "progress.json"


def make_strategy(cfg: RunConfig, backbone, progress: bool) -> StreamStrategy:
    train = dataclasses.replace(cfg.train, progress=progress)
    if cfg.baseline:
        from .baselines import BASELINES

        BASELINES.get(cfg.baseline)  # one clear error for an unknown name
        if cfg.baseline == "linear-probe":
            return BASELINES[cfg.baseline](
                backbone, key_encoder=make_key_encoder(cfg.bank.key_encoder, backbone=backbone), progress=progress
            )
        b = cfg.bank
        return BASELINES[cfg.baseline](
            backbone,
            method=b.method,
            n_tokens=b.n_tokens,
            prompt_options=dict(b.prompt_options),
            steps=train.steps,
            batch_size=train.batch_size,
            lr=train.lr,
            seed=cfg.seed,
            max_input_tokens=b.max_input_tokens,
            progress=progress,
        )
    return BankStrategy(PromptBank(backbone, cfg.bank), train, PromptCache(), progress=progress)


def load_tasks(cfg: RunConfig) -> list[TaskData]:
    names = cfg.tasks or stream_tasks(cfg.stream, cfg.order)
    d = cfg.data
    tasks = [
        get_task(n, d.train_per_class, d.val_per_class, d.test_per_class, seed=cfg.seed, key_per_class=d.key_per_class)
        for n in names
    ]
    if d.list_labels:
        tasks = [
            dataclasses.replace(t, template=with_label_list(t.template, t.label_names)) if t.label_names else t
            for t in tasks
        ]
    return tasks


def run_stream(
    cfg: RunConfig,
    out: Path | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    fresh: bool = False,
    workers: int = 0,
) -> dict[str, Any]:
    """Run ``cfg`` end to end; returns the results dict also written to ``out/results.json``.

    With ``workers`` > 0 the bank's prompts first train in parallel on a local Ray instance of that
    many CPUs (``BankStrategy.pretrain``); the stream then adds, evaluates and checkpoints in order.
    """
    if cfg.tasks is None:
        STREAMS.get(cfg.stream)  # one clear error for an unknown name
    out = Path(out or cfg.default_out())
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    tasks = load_tasks(cfg)
    names = [t.name for t in tasks]
    generating = [t.name for t in tasks if t.generates]
    if cfg.baseline not in (None, "zero-shot") and generating:
        raise InvalidDataError(
            f"baseline {cfg.baseline!r} answers with label words, but {generating} are text-to-text tasks. "
            "Fix: run the bank (no --baseline) or --baseline zero-shot on this stream, or leave those tasks out (--tasks)"
        )
    if workers and cfg.baseline:
        raise InvalidDataError(
            f"--workers trains the bank's per-task prompts in parallel; baseline {cfg.baseline!r} trains one model "
            "in order. Fix: drop --workers for baselines"
        )
    benchmark, table = build_benchmark(tasks)
    backbone = load_backbone(cfg.backbone, bf16=cfg.bf16)
    strategy = make_strategy(cfg, backbone, progress)

    state = _load_progress(out, cfg)
    if state["done"] and isinstance(strategy, BankStrategy):
        strategy.restore(out, names[: state["done"]])
    elif state["done"]:  # a baseline's optimiser and plugin state lived in memory only: start over
        state = _empty_progress(cfg)
    if workers and isinstance(strategy, BankStrategy):
        strategy.pretrain(tasks[state["done"] :], workers)

    quiet_mlflow()
    tracker = Tracker(tracking_uri, root=out.parent if tracking_uri is None else "runs")
    params = {**dataclasses.asdict(cfg), "tasks": names, "strategy": cfg.strategy_name}
    with tracker.run(f"{cfg.stream}:{cfg.strategy_name}", params=params, run_id=state.get("run_id")) as active:
        state["run_id"] = active.info.run_id
        bar = tqdm(
            list(benchmark.train_stream), desc=f"{cfg.stream} [{cfg.strategy_name}]", unit="task", disable=not progress
        )
        for experience in bar:
            i = experience.current_experience
            if i < state["done"]:
                continue
            bar.set_postfix(task=names[i])
            with tracker.run(f"task {i}: {names[i]}", params={"task": names[i], **tasks[i].budgets}, nested=True):
                started = time.perf_counter()
                report = strategy.train(experience, tasks[i], table)
                train_seconds = time.perf_counter() - started
                started = time.perf_counter()
                row, oracle_row, module_row, routing_row, routed, key_routed = [], [], [], [], {}, {}
                for j in range(i + 1):
                    ev = strategy.evaluate(j, tasks[j], tasks[: i + 1])
                    row.append(ev.accuracy(tasks[j]))
                    oracle_row.append(ev.oracle_accuracy(tasks[j]))
                    module_row.append(ev.module_accuracy(tasks[j]))
                    if ev.routed_task is not None:
                        routing_row.append(float(np.mean(ev.routed_task == j)))
                        routed[names[j]] = ev.routed_task.tolist()
                    if ev.key_routed_task is not None:
                        key_routed[names[j]] = ev.key_routed_task.tolist()
                eval_seconds = time.perf_counter() - started
                tracker.metrics(
                    {
                        "train_seconds": train_seconds,
                        "eval_seconds": eval_seconds,
                        **{f"{_metric_key(tasks[j])}.{names[j]}": row[j] for j in range(i + 1)},
                    }
                )
            state["acc_matrix"].append(row)
            state["oracle_matrix"].append(oracle_row)
            state["module_alone"] = module_row
            state["routing_matrix"].append(routing_row)
            state["final_routing"] = routed
            state["final_key_routing"] = key_routed
            state["reports"].append(
                {
                    "task": names[i],
                    "train_seconds": round(train_seconds, 2),
                    "eval_seconds": round(eval_seconds, 2),
                    "trainable_params": report.trainable_params,
                    "bytes_per_task": report.bytes_per_task,
                    **report.extra,
                }
            )
            tracker.metrics(
                {
                    **{f"R.{names[j]}": row[j] for j in range(i + 1)},
                    "avg_acc_so_far": float(np.mean(row)),
                    **({"routing_acc_so_far": float(np.mean(routing_row))} if routing_row else {}),
                },
                step=i,
            )
            state["done"] = i + 1
            strategy.save(out)
            _save_progress(out, state)

        results = summarize(cfg, tasks, state)
        _write_outputs(out, cfg, tasks, results, tracker)
    results["mlflow"] = {
        "tracking_uri": tracker.tracking_uri,
        "run_id": state["run_id"],
        "model_uri": results.pop("mlflow_model", None),  # the bank as a pyfunc model (bank runs)
        "ui": tracker.ui_hint(),
    }
    atomic_write(out / RESULTS, json.dumps(results, indent=2).encode())
    return results


def _metric_key(task: TaskData) -> str:
    """The MLflow name of a task's score: ``acc`` or ``rouge_l``."""
    metric = task_metric(task)
    return "acc" if metric == "accuracy" else metric


def summarize(cfg: RunConfig, tasks: list[TaskData], state: dict[str, Any]) -> dict[str, Any]:
    names = [t.name for t in tasks]
    acc = state["acc_matrix"]
    summary = continual_metrics(acc)
    oracle_final = state["oracle_matrix"][-1]
    module_alone = state.get("module_alone")
    routed = state.get("final_routing") or {}
    key_routed = state.get("final_key_routing") or {}
    routing_per_task = {n: float(np.mean(np.asarray(routed[n]) == j)) for j, n in enumerate(names) if n in routed}
    counts = None
    if routed:
        true = [j for j, n in enumerate(names) for _ in routed[n]]
        pred = [k for n in names for k in routed[n]]
        counts = confusion_matrix(true, pred, len(names))
    reports = state["reports"]
    return {
        "stream": cfg.stream if cfg.tasks is None else "custom",
        "order": cfg.order or 1,
        "method": cfg.bank.method,
        "strategy": cfg.strategy_name,
        "baseline": cfg.baseline,
        "backbone": cfg.backbone,
        "key_encoder": cfg.bank.key_encoder,
        "router": cfg.bank.router,
        "tasks": names,
        # each task's own score in the matrices: accuracy, or ROUGE-L F of generated answers
        "metrics": {t.name: task_metric(t) for t in tasks},
        "acc_matrix": acc,
        "oracle_matrix": state["oracle_matrix"],
        "avg_acc": summary["avg_acc"],
        "oracle_avg_acc": float(np.mean(oracle_final)) if None not in oracle_final else None,
        # the task given, each module's own answers (no router classes; = oracle without key_classes)
        "module_alone_acc": module_alone,
        "module_alone_avg_acc": float(np.mean(module_alone)) if module_alone and None not in module_alone else None,
        "routing_acc": float(np.mean([k == j for j, n in enumerate(names) for k in routed.get(n, [])]))
        if routed
        else None,
        "routing_acc_per_task": routing_per_task,
        "routing_acc_keys_only": float(np.mean([k == j for j, n in enumerate(names) for k in key_routed.get(n, [])]))
        if key_routed
        else None,
        "routing_confusion": counts.tolist() if counts is not None else None,
        "bwt": summary["bwt"],
        "forgetting": summary["forgetting"],
        "forgetting_per_task": summary["forgetting_per_task"],
        "trainable_params_per_task": reports[-1]["trainable_params"],
        "bank_bytes_per_task": reports[-1]["bytes_per_task"],
        "seconds_per_task": [r["train_seconds"] + r["eval_seconds"] for r in reports],
        "reports": reports,
        "budgets": {**cfg.budgets(), "per_task": {t.name: t.budgets for t in tasks}},
        "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "torch_threads": torch.get_num_threads(),
    }


def _write_outputs(out: Path, cfg: RunConfig, tasks: list[TaskData], results: dict[str, Any], tracker: Tracker) -> None:
    names = [t.name for t in tasks]
    heat = plots.accuracy_matrix_png(
        results["acc_matrix"], names, out / "acc_matrix.png", title=f"{cfg.stream} · {cfg.strategy_name}: R[i][j]"
    )
    tracker.artifact(heat)
    if results["routing_confusion"] is not None:
        tracker.artifact(
            plots.confusion_png(np.asarray(results["routing_confusion"]), names, out / "routing_confusion.png")
        )
    tracker.metrics(
        {
            k: results[k]
            for k in (
                "avg_acc",
                "oracle_avg_acc",
                "routing_acc",
                "bwt",
                "forgetting",
                "bank_bytes_per_task",
                "trainable_params_per_task",
            )
        }
    )
    atomic_write(out / RESULTS, json.dumps(results, indent=2).encode())
    tracker.artifact(out / RESULTS)
    if (out / "bank").exists():
        tracker.artifact(out / "bank", folder="bank")
        results["mlflow_model"] = tracker.bank_model(out / "bank", backbone=cfg.backbone)


def _empty_progress(cfg: RunConfig) -> dict[str, Any]:
    return {
        "fingerprint": cfg.fingerprint(),
        "done": 0,
        "acc_matrix": [],
        "oracle_matrix": [],
        "routing_matrix": [],
        "reports": [],
        "final_routing": {},
    }


def _load_progress(out: Path, cfg: RunConfig) -> dict[str, Any]:
    path = out / PROGRESS
    if path.exists():
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidDataError(f"{path} is unreadable ({exc}). Fix: rerun with --fresh") from None
        if state.get("fingerprint") == cfg.fingerprint():
            return state
        raise InvalidDataError(
            f"{out} holds a run with other arguments; pass --fresh to overwrite it or choose another --out"
        )
    return _empty_progress(cfg)


def _save_progress(out: Path, state: dict[str, Any]) -> None:
    """The commit point of a finished task: written last, atomically."""
    atomic_write(out / PROGRESS, json.dumps(state).encode())


def format_table(results: dict[str, Any]) -> str:
    """A plain-text results table for the console."""
    names = results["tasks"]
    width = max(len(n) for n in names) + 2
    lines = [f"{'task':<{width}} {'score':>6} {'oracle':>7} {'routing':>8}  metric"]
    final, oracle = results["acc_matrix"][-1], results["oracle_matrix"][-1]
    for j, n in enumerate(names):
        r = results["routing_acc_per_task"].get(n)
        o = oracle[j]
        lines.append(
            f"{n:<{width}} {final[j]:>6.3f} {'-' if o is None else f'{o:.3f}':>7} {'-' if r is None else f'{r:.3f}':>8}"
            f"  {results.get('metrics', {}).get(n, 'accuracy')}"
        )
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    lines.append(
        f"{'average':<{width}} {results['avg_acc']:>6.3f} {fmt(results['oracle_avg_acc']):>7} {fmt(results['routing_acc']):>8}"
    )
    lines.append(
        f"BWT {results['bwt']:+.4f} · forgetting {results['forgetting']:.4f} · {results['trainable_params_per_task']} trainable params/task · "
        f"{results['bank_bytes_per_task']:.0f} bytes/task · {sum(results['seconds_per_task']):.0f} s"
    )
    return "\n".join(lines)
