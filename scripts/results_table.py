"""Results are data: record a run or benchmark as a small JSON file in docs/results/, and
regenerate every table in README.md, RESULTS.md, BENCHMARKS.md and docs/routing.md from those files.

    # after `promptbank run ...` (and optionally `/usr/bin/time -v ... 2> time.log`):
    .venv/bin/python scripts/results_table.py add-run runs/offline-5-bank-ulpt --name main-job \\
        --command "promptbank run --stream offline-5" [--time-log time.log]
    # after a benchmark script wrote its JSON:
    .venv/bin/python scripts/results_table.py add-bench runs/bench/footprint.json --name bench-footprint \\
        --command ".venv/bin/python scripts/bench/footprint.py ..."
    # rewrite the generated tables (between <!-- generated:NAME --> and <!-- /generated --> markers):
    .venv/bin/python scripts/results_table.py render [--check]

Each result file names the machine (CPU model, threads, memory) and the commit that produced it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
DOCS = [
    REPO / "README.md",
    REPO / "RESULTS.md",
    REPO / "BENCHMARKS.md",
    REPO / "docs" / "routing.md",
    REPO / "docs" / "format.md",
]
BLOCK = re.compile(r"(<!-- generated:([\w-]+) -->\n)(.*?)(<!-- /generated -->)", re.S)
# what a results.json holds that only the local run can use (its MLflow store)
DROP = ("mlflow",)


# -- recording -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, logical CPUs, torch threads, memory: what a reader needs to compare times."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kb = 0
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "gpu": None}


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def time_log(path: Path | None) -> dict[str, Any]:
    """Wall time and peak RSS from a `/usr/bin/time -v` log."""
    if path is None:
        return {}
    text = path.read_text(errors="replace")
    out: dict[str, Any] = {}
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if m:
        parts = [float(p) for p in m.group(1).split(":")]
        out["wall_s"] = round(sum(p * 60**i for i, p in enumerate(reversed(parts))), 1)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        out["peak_rss_gib"] = round(int(m.group(1)) / 2**20, 2)
    return out


def write(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def add_run(args: argparse.Namespace) -> None:
    results = json.loads((Path(args.run) / "results.json").read_text())
    threads = results.get("torch_threads")
    payload = {
        "name": args.name,
        "kind": "stream",
        "command": args.command,
        "commit": args.commit or commit(),
        "machine": {**machine(), "torch_threads": threads},
        **time_log(args.time_log),
        **({"note": args.note} if args.note else {}),
        **({"lever": args.lever} if args.lever else {}),
        "result": {k: v for k, v in results.items() if k not in DROP},
    }
    print(write(args.name, payload))


def add_bench(args: argparse.Namespace) -> None:
    """Record a benchmark JSON; the machine and commit are the ones the benchmark itself recorded."""
    data = json.loads(Path(args.json).read_text())
    ran_on = data.get("machine", {})
    recorded = (ran_on.get("git") or {}).get("commit")
    payload = {
        "name": args.name,
        "kind": "bench",
        "command": args.command,
        "commit": args.commit or (recorded[:7] if recorded else commit()),
        "machine": {
            "cpu": ran_on.get("cpu_model") or machine()["cpu"],
            "logical_cpus": ran_on.get("cpu_count") or os.cpu_count(),
            "memory_gib": ran_on.get("mem_total_gib"),
            "torch_threads": ran_on.get("torch_threads"),
            "date_utc": ran_on.get("date_utc"),
            "gpu": None if ran_on.get("device", "cpu") == "cpu" else ran_on.get("device"),
        },
        "result": data,
    }
    print(write(args.name, payload))


# -- rendering -------------------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def pct(v: float | None, signed: bool = False) -> str:
    return "–" if v is None else (f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}")


def where(d: dict[str, Any]) -> str:
    m = d["machine"]
    threads = m.get("torch_threads") or m.get("threads")
    return (
        f"{m['cpu']}, {m['logical_cpus']} CPUs"
        + (f", {threads} threads" if threads else "")
        + f"; commit `{d['commit']}`"
        + (f"; {d['note']}" if d.get("note") else "")
    )


def sources(named: list[tuple[str, dict[str, Any]]]) -> str:
    """A table's result files, grouped by machine, each with its commit; what ran beside each
    run (its ``note``) stays in the file."""
    groups: dict[str, list[str]] = {}
    for name, d in named:
        m = d["machine"]
        threads = m.get("torch_threads") or m.get("threads")
        machine = f"{m['cpu']}, {m['logical_cpus']} CPUs" + (f", {threads} threads" if threads else "")
        groups.setdefault(machine, []).append(f"`{name}` (`{d['commit']}`)")
    notes = any(d.get("note") for _, d in named)
    return "; ".join(f"{', '.join(files)} on {machine}" for machine, files in groups.items()) + (
        " (each file notes what ran beside it)" if notes else ""
    )


def minutes(d: dict[str, Any]) -> str:
    if "wall_s" in d:
        return f"{d['wall_s'] / 60:.1f} min"
    return f"{sum(d['result']['seconds_per_task']) / 60:.1f} min*"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


STREAM_RUNS = ["main-job", "offline-9-o1", "vader-4", "split-20ng"]


def settings_off_default(config: dict[str, Any]) -> str:
    """The flags that reproduce a recorded run on today's defaults; a run recorded before a setting
    existed had the value ``FIELDS_OF_OLDER_BANKS`` gives a bank saved then."""
    from promptbank import BankConfig  # noqa: PLC0415
    from promptbank.records import FIELDS_OF_OLDER_BANKS  # noqa: PLC0415

    recorded = {**FIELDS_OF_OLDER_BANKS, **config.get("bank", {})}
    flags = []
    for name in FIELDS_OF_OLDER_BANKS:
        value, today = recorded[name], getattr(BankConfig, name)
        if value != today:
            option = name.replace("_", "-")
            flags.append(
                f"`--{option if value else 'no-' + option}`" if isinstance(value, bool) else f"`--{option} {value}`"
            )
    return ", ".join(flags) or "defaults"


def streams_table() -> str:
    rows = []
    for name in STREAM_RUNS:
        if not (RESULTS / f"{name}.json").exists():
            continue
        d = load(name)
        r = d["result"]
        rows.append(
            [
                f"`{r['stream']}`" + (f" o{r['order']}" if r.get("order", 1) != 1 else ""),
                str(len(r["tasks"])),
                pct(r["avg_acc"]),
                pct(r["oracle_avg_acc"]),
                pct(r["routing_acc"]),
                settings_off_default(r["config"]),
                pct(r["bwt"], True),
                pct(r["forgetting"]),
                f"{r['trainable_params_per_task']:,}",
                f"{r['bank_bytes_per_task'] / 1024:.1f} KB",
                minutes(d),
                f"`{d['command']}`",
            ]
        )
    note = (
        "Accuracy in %, after the last task. *routed*: every test input routed to a task by its key alone; "
        "*oracle*: the task given; *run with*: the settings that differ from today's defaults (its command gives "
        "these numbers with them added): `--placement prefix` puts the prompt before the input, "
        "`--no-key-classes` answers with the prompts alone; BWT and forgetting in points. Time: the whole command, "
        "or (*) the sum of per-task train + eval time."
    )
    sources_ = sources([(f"docs/results/{n}.json", load(n)) for n in STREAM_RUNS if (RESULTS / f"{n}.json").exists()])
    return (
        table(
            [
                "stream",
                "tasks",
                "routed",
                "oracle",
                "routing",
                "run with",
                "BWT",
                "forgetting",
                "params/task",
                "bank/task",
                "time",
                "command",
            ],
            rows,
        )
        + f"\n\n{note} Sources: {sources_}.\n"
    )


def per_task_table(name: str) -> str:
    d = load(name)
    r = d["result"]
    final, oracle = r["acc_matrix"][-1], r["oracle_matrix"][-1]
    rows = []
    for j, task in enumerate(r["tasks"]):
        rows.append(
            [
                task,
                pct(final[j]),
                pct(oracle[j]),
                pct(r["routing_acc_per_task"].get(task)),
                str(
                    r["budgets"]["per_task"][task].get("test_counts", ["?"])
                    and sum(r["budgets"]["per_task"][task]["test_counts"])
                ),
            ]
        )
    rows.append(
        [
            "**average**",
            f"**{pct(r['avg_acc'])}**",
            f"**{pct(r['oracle_avg_acc'])}**",
            f"**{pct(r['routing_acc'])}**",
            "",
        ]
    )
    return (
        table(["task", "routed", "oracle", "routing", "test inputs"], rows)
        + f"\n\n`docs/results/{name}.json` ({where(d)}){recorded_with(r['config'])}.\n"
    )


def recorded_with(config: dict[str, Any]) -> str:
    """`` (its numbers need FLAGS ...)`` where a recorded run's settings differ from today's defaults."""
    flags = settings_off_default(config)
    return "" if flags == "defaults" else f" (its numbers need {flags} on today's defaults)"


def main_job_line() -> str:
    d = load("main-job")
    r = d["result"]
    rss = f", peak RSS {d['peak_rss_gib']:.2f} GiB" if "peak_rss_gib" in d else ""
    return (
        f"On {d['machine']['cpu']} ({d['machine']['logical_cpus']} CPUs) the main job took {minutes(d)}{rss}: "
        f"routed accuracy **{pct(r['avg_acc'])}**, oracle {pct(r['oracle_avg_acc'])}, routing {pct(r['routing_acc'])}%, "
        f"BWT {pct(r['bwt'], True)} pt, {r['trainable_params_per_task']:,} trainable parameters and "
        f"{r['bank_bytes_per_task'] / 1024:.1f} KB of bank per task, shared matrices included "
        f"(`docs/results/main-job.json`" + (f"; {d['note']}" if d.get("note") else "") + ").\n"
    )


#: what each stream strategy is, in the baselines table (``--baseline NAME``; the bank has none)
BASELINE_ORDER = ("zero-shot", "linear-probe", "naive", "ewc", "lwf", "replay", "joint")


def baselines_table() -> str:
    """The main job next to the baselines run with the same command and budgets (``baseline-*.json``)."""
    runs = [load(p.stem) for p in RESULTS.glob("baseline-*.json")]
    runs.sort(key=lambda d: BASELINE_ORDER.index(d["result"]["baseline"]))
    if (RESULTS / "main-job.json").exists():
        runs.insert(0, load("main-job"))
    rows = []
    for d in runs:
        r = d["result"]
        name = r.get("baseline") or f"the bank ({r['method']})"
        given = r.get("routing_acc") is None  # the baselines are told each input's task
        rows.append(
            [
                name,
                "–" if given else pct(r["avg_acc"]),
                pct(r["oracle_avg_acc"]),
                pct(r["bwt"], True),
                f"{r['trainable_params_per_task']:,}",
                minutes(d),
                f"`{d['command']}`",
            ]
        )
    sources_ = sources([(f"{p.stem}.json", load(p.stem)) for p in sorted(RESULTS.glob("baseline-*.json"))])
    return (
        table(["strategy", "routed", "task given", "BWT", "params/task", "time", "command"], rows)
        + "\n\n`offline-5`, seed 0, test inputs after the last task, in %. The baselines are told each "
        "input's task (no routing). *zero-shot*: the bare LLM with the task's template; *linear-probe*: "
        "logistic regression per task on the bank's routing keys, the 64 training inputs per class. "
        f"Sources: {sources_}.\n"
    )


def routing_confusion(name: str) -> str:
    d = load(name)
    r = d["result"]
    names = r["tasks"]
    rows = []
    for i, row in enumerate(r["routing_confusion"]):
        rows.append([names[i]] + [str(v) if v else "·" for v in row])
    return table(["true \\ routed"] + names + ["unknown"], rows) + f"\n\n`docs/results/{name}.json`.\n"


def mixed_table() -> str:
    """offline-mixed: each task by its own metric, the bank next to the bare LLM (zero-shot floor)."""
    d = load("offline-mixed")
    r = d["result"]
    floor = load("offline-mixed-zero-shot") if (RESULTS / "offline-mixed-zero-shot.json").exists() else None
    zero = dict(zip(r["tasks"], floor["result"]["acc_matrix"][-1])) if floor else {}
    rows = []
    for j, task in enumerate(r["tasks"]):
        rows.append(
            [
                task,
                "ROUGE-L F" if r["metrics"][task] == "rouge_l" else "accuracy",
                pct(r["acc_matrix"][-1][j]),
                pct(r["oracle_matrix"][-1][j]),
                pct(zero.get(task)),
                pct(r["routing_acc_per_task"].get(task)),
                str(sum(r["budgets"]["per_task"][task]["test_counts"])),
            ]
        )
    source = f"`docs/results/offline-mixed.json` ({where(d)})" + (
        f", zero-shot `docs/results/offline-mixed-zero-shot.json` (`{floor['command']}`; {where(floor)})"
        if floor
        else ""
    )
    return (
        table(["task", "metric", "routed", "oracle", "zero-shot", "routing", "test inputs"], rows)
        + f"\n\nAfter the last task, in %. The whole stream took {minutes(d)}; BWT {pct(r['bwt'], True)} pt, "
        + f"routing {pct(r['routing_acc'])}%. Command: `{d['command']}`{recorded_with(r['config'])}. "
        + f"Sources: {source}.\n"
    )


def levers_table() -> str:
    """One row per recorded answer-quality lever run (``docs/results/lever-*.json``, offline-5)."""
    runs = sorted(p for p in RESULTS.glob("lever-*.json") if p.stem != "lever-default")
    if not runs:
        return "(no `docs/results/lever-*.json` recorded yet)\n"
    # the default settings first: recorded beside the levers if they were, else the main job
    default = RESULTS / "lever-default.json"
    runs = [default if default.exists() else RESULTS / "main-job.json", *runs]
    data = [json.loads(p.read_text()) for p in runs]
    data[0]["lever"] = "default (the main job's settings)"
    tasks = data[0]["result"]["tasks"]
    rows = []
    for d in data:
        r = d["result"]
        oracle = dict(zip(r["tasks"], r["oracle_matrix"][-1]))
        train_s = sum(rep.get("prompt_train_seconds", 0.0) for rep in r["reports"])
        rows.append(
            [d.get("lever", d["name"])]
            + [pct(oracle.get(t)) for t in tasks]
            + [f"**{pct(r['oracle_avg_acc'])}**", pct(r["avg_acc"]), f"{train_s / 60:.1f}", f"`{d['command']}`"]
        )
    sources_ = sources([(p.name, d) for p, d in zip(runs, data)])
    return (
        table(["lever", *tasks, "oracle", "routed", "train min", "command"], rows)
        + "\n\nOracle accuracy per task and on average, routed average, in %; *train min*: the prompts' training "
        + f"time summed over the tasks. One seed each. Sources: {sources_}.\n"
    )


def bench_table(name: str, render: Callable[[dict[str, Any]], str]) -> str:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return f"(no `docs/results/{name}.json` yet)\n"
    d = load(name)
    return render(d["result"]) + f"\n\nCommand: `{d['command']}` ({where(d)}).\n"


def _missing_ok(name: str, fn: Callable[[], str]) -> Callable[[], str]:
    """A generator that says so instead of failing while its result file is not recorded yet."""
    return lambda: (
        fn() if (RESULTS / f"{name}.json").exists() else f"(`docs/results/{name}.json` is not recorded yet)\n"
    )


GENERATED: dict[str, Callable[[], str]] = {
    "streams": streams_table,
    "main-job-line": _missing_ok("main-job", main_job_line),
    "main-job-tasks": _missing_ok("main-job", lambda: per_task_table("main-job")),
    "offline-9-tasks": _missing_ok("offline-9-o1", lambda: per_task_table("offline-9-o1")),
    "offline-9-confusion": _missing_ok("offline-9-o1", lambda: routing_confusion("offline-9-o1")),
    "split-20ng-confusion": _missing_ok("split-20ng", lambda: routing_confusion("split-20ng")),
    "vader-4-confusion": _missing_ok("vader-4", lambda: routing_confusion("vader-4")),
    "levers": levers_table,
    "baselines": baselines_table,
    "offline-mixed": _missing_ok("offline-mixed", mixed_table),
}


def render(args: argparse.Namespace) -> int:
    from bench_tables import BENCH_TABLES  # noqa: PLC0415  (the benchmark renderers, next to this file)

    generated = {**GENERATED, **BENCH_TABLES}
    stale = []
    for doc in DOCS:
        if not doc.exists():
            continue
        text = doc.read_text()

        def fill(m: re.Match, doc: Path = doc) -> str:
            name = m.group(2)
            if name not in generated:
                raise SystemExit(f"{doc.name}: no generator for block {name!r}; known: {', '.join(generated)}")
            return m.group(1) + generated[name]() + m.group(4)

        new = BLOCK.sub(fill, text)
        if new != text:
            stale.append(doc.name)
            if not args.check:
                doc.write_text(new)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run: python scripts/results_table.py render", file=sys.stderr)
        return 1
    print(("up to date" if not stale else f"rewrote {', '.join(stale)}") if not args.check else "up to date")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("add-run", help="record a stream run's results.json")
    run.add_argument("run", help="the run's output folder (holds results.json)")
    bench = sub.add_parser("add-bench", help="record a benchmark script's JSON")
    bench.add_argument("json")
    for p in (run, bench):
        p.add_argument("--name", required=True, help="file name under docs/results/ (no .json)")
        p.add_argument("--command", required=True, help="the exact command that produced it")
        p.add_argument("--commit", default=None, help="the commit that ran it (default: HEAD)")
    run.add_argument("--time-log", type=Path, default=None, help="a `/usr/bin/time -v` log of the command")
    run.add_argument("--note", default=None, help="what a reader must know about the run (e.g. a shared machine)")
    run.add_argument("--lever", default=None, help="the row label of an answer-quality lever run (lever-*.json)")
    rend = sub.add_parser("render", help="rewrite the generated tables in the docs")
    rend.add_argument("--check", action="store_true", help="only report whether they are up to date")
    args = parser.parse_args()
    if args.what == "add-run":
        add_run(args)
    elif args.what == "add-bench":
        add_bench(args)
    else:
        return render(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
