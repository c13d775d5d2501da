"""Markdown table of finished stream runs, straight from their results.json (no hand copying).

    .venv/bin/python scripts/results_table.py runs/offline-5-*/results.json

One row per run: average accuracy after the last task (routed, and with the oracle task id),
routing accuracy (after re-scoring, and from keys alone), BWT and forgetting in points,
trainable parameters and bank bytes per task, total wall time, and the command that
reproduces the row. A second table gives each task's accuracy after the last task (routed,
and the oracle's where it differs), one column per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from promptbank.keys import DEFAULT_KEY_ENCODER
from streams.splits import KEY_PER_CLASS

DEFAULTS = {"steps": 80, "train_per_class": 64, "val_per_class": 16, "test_per_class": 100, "max_input_tokens": 64,
            "key_per_class": KEY_PER_CLASS}
BEFORE = {"key_per_class": 0}  # what runs from before a setting existed did


def command(r: dict[str, Any]) -> str:
    cfg = r["config"]
    parts = [f"promptbank run --stream {r['stream']}"]
    if cfg.get("order"):
        parts.append(f"--order {cfg['order']}")
    parts.append(f"--baseline {r['baseline']}" if r.get("baseline") else (f"--method {r['method']}" if r["method"] != "ulpt" else ""))
    given = {k: cfg.get(k, BEFORE.get(k)) for k in DEFAULTS}
    parts += [f"--{k.replace('_', '-')} {given[k]}" for k, v in DEFAULTS.items() if given[k] != v]
    if not r.get("baseline") and r.get("key_encoder", DEFAULT_KEY_ENCODER) != DEFAULT_KEY_ENCODER:
        parts.append(f"--key-encoder {r['key_encoder']}")
    rescore = cfg.get("rescore") or {}
    if not r.get("baseline") and rescore.get("top", 1) != 1:
        parts.append(f"--rescore-top {rescore['top']} --rescore-weight {rescore['weight']}")
    return " ".join(p for p in parts if p)


def pct(v: float | None, signed: bool = False) -> str:
    return "–" if v is None else (f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}")


def label(r: dict[str, Any]) -> str:
    if r["baseline"]:
        return r["baseline"]
    keys = r.get("key_encoder")
    return f"bank · {r['method']}" + (f" · {keys} keys" if keys and keys != DEFAULT_KEY_ENCODER else "")


def row(r: dict[str, Any]) -> str:
    name = label(r)
    keys_only = r.get("routing_acc_keys_only")
    routing = pct(r["routing_acc"]) + (f" ({pct(keys_only)})" if keys_only is not None else "")
    params = r["trainable_params_per_task"]
    nbytes = r["bank_bytes_per_task"]
    return (f"| {name} | {pct(r['avg_acc'])} | {pct(r['oracle_avg_acc'])} | {routing} | {pct(r['bwt'], True)} | {pct(r['forgetting'])} | "
            f"{params:,} | {f'{nbytes / 1024:.1f} KB' if nbytes else '–'} | {sum(r['seconds_per_task']) / 60:.0f} min ({r.get('torch_threads', '?')} thr) | `{command(r)}` |")


def per_task_table(runs: list[dict[str, Any]]) -> list[str]:
    """Accuracy on each task after the whole stream, R[T][j] (oracle in brackets when it differs)."""
    lines = ["| task | " + " | ".join(label(r) for r in runs) + " |", "|---|" + "---|" * len(runs)]
    for j, task in enumerate(runs[0]["tasks"]):
        cells = []
        for r in runs:
            routed, oracle = r["acc_matrix"][-1][j], (r.get("oracle_matrix") or r["acc_matrix"])[-1][j]
            cells.append(pct(routed) + ("" if abs(routed - oracle) < 5e-4 else f" ({pct(oracle)})"))
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args()
    print("| method | avg acc (routed) | avg acc (oracle) | routing acc (keys only) | BWT (pt) | forgetting (pt) | params/task | bytes/task | wall time | command |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    runs = [json.loads(path.read_text()) for path in args.results]
    for r in runs:
        print(row(r))
    if len({tuple(r["tasks"]) for r in runs}) == 1:
        print()
        print("\n".join(per_task_table(runs)))


if __name__ == "__main__":
    main()
