"""Markdown tables of the benchmark result files in docs/results/ (used by results_table.py render)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from results_table import RESULTS, bench_table, load, pct, sources, table


def _med(stat: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    return "–" if not stat else f"{stat['median'] * scale:.{digits}f}"


def footprint(r: dict[str, Any]) -> str:
    peft = r["peft"]["total"]
    rows = []
    for row in r["rows"]:
        marginal = row["disk_marginal_per_task"]
        at = row["disk_per_task_at"]
        same = row.get("peft", r["peft"] if row["method"] in ("ulpt", "pt", "lopt1", "lopt2") else None)
        rows.append(
            [
                row["variant"],
                f"{row['trainable_params']:,}",
                f"{marginal['prompts']:,.0f}",
                f"{marginal['routing']:,.0f}",
                f"{marginal['total']:,.0f}",
                f"{at.get('1000', float('nan')):,.0f}",
                "-" if same is None else f"{same['total']:,}",
                "-" if same is None else f"{same['total'] / marginal['total']:.1f}×",
            ]
        )
    return (
        table(
            [
                "prompt / router",
                "trainable params",
                "prompt B/task",
                "routing B/task",
                "marginal B/task",
                "B/task at 1,000 tasks",
                "PEFT file B",
                "vs PEFT file",
            ],
            rows,
        )
        + f"\n\n*PEFT file*: PEFT's checkpoint of the same module (prompt kinds: prompt tuning, n × d expanded, {peft:,} B; LoRA, (IA)3, VeRA with the same targets and rank). *Marginal*: what one more "
        "task adds on disk (prompt tensors + routing state + its manifest entry); *at 1,000 tasks*: everything, shared "
        "matrices included, divided by the tasks."
    )


def training_step(r: dict[str, Any]) -> str:
    stats, ratios = r["seconds_per_step"], r["ratios"]
    rows = [
        [case, _med(s, 1.0, 3), f"{r['trainable_params'].get(case, '–'):,}" if case in r["trainable_params"] else "–"]
        for case, s in stats.items()
    ]
    ratio_rows = [[k, f"{v['paired_median']:.3f}", f"{v['of_medians']:.3f}"] for k, v in ratios.items()]
    b = r["batch"]
    return (
        table(["case", "s/step (median)", "trainable params"], rows)
        + "\n\n"
        + table(["ratio", "paired median", "of medians"], ratio_rows)
        + f"\n\nBatch {b['size']}, {b['soft_tokens']} soft tokens, LLM in {'bf16' if r.get('llm_bf16') else 'float32'}. "
        "*limit*: a bare frozen forward + backward to the input embeddings."
    )


def mixed_inference(r: dict[str, Any]) -> str:
    rows = []
    for res in r["results"]:
        s = res["seconds"]
        single = s["single_task"]["median"]
        rows.append(
            [
                str(res["m"]),
                str(res["inputs"]),
                _med(s["mixed_routed"]),
                _med(s["mixed_oracle"]),
                _med(s["grouped"]),
                _med(s["single_task"]),
                _med(s["limit"]),
                _med(s.get("route_only")),
                f"{single / s['mixed_routed']['median']:.2f}×",
                f"{single / s['mixed_oracle']['median']:.2f}×",
                f"{s['grouped']['median'] / s['mixed_oracle']['median']:.2f}×",
            ]
        )
    return (
        table(
            [
                "m tasks",
                "inputs",
                "mixed, routed (s)",
                "mixed, task given (s)",
                "grouped by task (s)",
                "single task (s)",
                "bare model (s)",
                "routing only (s)",
                "routed vs single",
                "task given vs single",
                "mixed vs grouped",
            ],
            rows,
        )
        + "\n\nOne batch of inputs spanning m tasks, answered in one forward pass (mixed) or one pass per task (grouped, "
        "as PEFT must); *single task*: the same inputs all with one prompt; *bare model*: no bank, same tokens."
    )


def routing(r: dict[str, Any]) -> str:
    rows = []
    for res in r["results"]:
        for row in res["rows"]:
            rows.append(
                [
                    f"{res['n_tasks']:,}",
                    row["view"],
                    f"{row['agreement_with_exact']:.3f}",
                    f"{row['accuracy_true_task']:.3f}",
                    _med(row.get("route_batch_us_per_query"), 1.0, 1),
                    _med(row.get("route_single_us_per_query"), 1.0, 0),
                    f"{row['index_bytes_per_task']:,.0f}" if row.get("index_bytes_per_task") else "–",
                ]
            )
        lda = res.get("lda")
        if lda:
            rows.append(
                [
                    f"{res['n_tasks']:,}",
                    f"lda ({lda['index_in_use']})",
                    f"{lda['agreement_with_exact_lda']:.3f}",
                    f"{lda['accuracy_true_task']:.3f}",
                    _med(lda.get("route_batch_us_per_query"), 1.0, 1),
                    _med(lda.get("route_single_us_per_query"), 1.0, 0),
                    f"{lda['state_bytes_per_task']:,.0f}",
                ]
            )
    a = r["args"]
    return (
        table(
            [
                "tasks",
                "router / index",
                "agreement with exact",
                "true task",
                "µs/query, batch",
                "µs/query, single",
                "B/task (index or state)",
            ],
            rows,
        )
        + f"\n\nSynthetic keys: {a['keys_per_task']} per task, {a['dim']}-d, tasks in domains of {a['domain_size']}; "
        f"batches of {a['batch']} queries. Rows other than `lda` are the `knn` router's FAISS index; "
        "*agreement*: same task as the exact search of the same router."
    )


def faults(r: dict[str, Any]) -> str:
    k, c = r["kill_during_saves"], r["concurrent"]
    rows = [
        ["SIGKILL at a random moment of a save loop", f"{k['rounds']} kills", f"{k['banks_lost']} banks that no longer load"],
        [f"{c['writers']} writers and {c['readers']} readers for {c['seconds']:.0f} s", f"{c['saves']} saves, {c['reads']} reads",
         f"{c['save_failures']} failed saves, {c['read_failures']} failed reads; loads after: {c['bank_loads_after']}"],
    ]  # fmt: skip
    return table(["fault", "tried", "lost"], rows)


def heldout_routing(r: dict[str, Any]) -> str:
    n = len(r["draws"])
    rows = []
    for name, v in r["per_heldout"].items():
        lost: dict[str, int] = {}
        for d in r["draws"]:
            for dest, count in d["after"][name]["misrouted_to"].items():
                lost[dest] = lost.get(dest, 0) + count
        top = max(lost.items(), key=lambda kv: kv[1]) if lost else None
        rows.append(
            [
                f"`{name}`",
                f"{100 * v['mean']:.1f}" + (f" ± {100 * v['std']:.1f}" if n > 1 else ""),
                f"{100 * v['min']:.1f}",
                "–" if top is None else f"`{top[0]}` ({top[1] / n:.0f} per draw)",
            ]
        )
    s, t = r["summary"], r["per_tuning"]
    worst = min(t.items(), key=lambda kv: kv[1]["after"]["mean"] - kv[1]["before"]["mean"])
    return (
        table(["held-out task", "routing %", "worst draw", "most misrouted to"], rows)
        + f"\n\nHeld-out mean {100 * s['heldout_mean']['mean']:.1f}"
        + (f" ± {100 * s['heldout_mean']['std']:.1f} over {n} draws" if n > 1 else " (one data draw)")
        + f"; goal ≥ 97 on average and no task below 93: {'met' if s['meets_goal'] else 'not met'}. The "
        f"{len(t)} tuning tasks' routing went from {100 * s['tuning_mean_before']:.1f} to "
        f"{100 * s['tuning_mean_after']:.1f} as the held-out tasks arrived (most: `{worst[0]}`, "
        f"{100 * worst[1]['before']['mean']:.1f} → {100 * worst[1]['after']['mean']:.1f}). Keys: "
        f"`{r['bank_config']['key_encoder']}`, router `{r['bank_config']['router']['strategy']}`; per class "
        f"{r['budgets']['train']} train + {r['budgets']['val']} validation, up to {r['budgets']['key']} key "
        f"inputs, {r['budgets']['test']} test."
    )


HELDOUT_ROUTER_LABELS = {
    "lda": "`lda` (default)",
    "lda-shrinkage-0.2": "`lda`, shrinkage 0.2 (default: OAS)",
    "lda-2-per-class": "`lda`, 2 k-means components per class",
    "lda-4-per-class": "`lda`, 4 k-means components per class",
    "logreg-all-keys": "reference: logistic regression on every key",
}


def heldout_keys(r: dict[str, Any]) -> str:
    """Held-out routing per router (default key) and per key (``study-heldout-keys``)."""
    names = list(next(iter(r["routers"].values()))["per_heldout"])

    def row(label: str, v: dict[str, Any]) -> list[str]:
        spread = f" ± {100 * v['heldout_mean_std']:.1f}" if v["draws"] > 1 else ""
        return [label, f"{100 * v['heldout_mean']:.1f}{spread}", pct(v["heldout_min"]), pct(v["tuning_after"])] + [
            pct(v["per_heldout"][n]) for n in names
        ]

    head = ["", "held-out mean", "worst task", "tuning tasks after"] + [f"`{n}`" for n in names]
    routers = [row(HELDOUT_ROUTER_LABELS.get(k, k), v) for k, v in r["routers"].items()]
    speed = r["key_texts_per_s"]
    keys = [
        row(f"`{k}`", v)[:1] + [f"{1 / sum(1 / speed[p] for p in k.split('+')):.0f}"] + row(f"`{k}`", v)[1:]
        for k, v in r["keys"].items()
    ]
    draws = next(iter(r["routers"].values()))["draws"]
    over = "data draw 0" if draws == 1 else f"mean over {draws} data draws"
    return (
        f"Routers, on the default key `{r['default_key']}` (up to {r['budgets']['key_per_class']:,} key inputs "
        f"per class; {over}):\n\n"
        + table(head, routers)
        + "\n\nKeys, under `lda` (data draw 0; train and validation keys only, "
        f"{r['budgets']['train_per_class']} + {r['budgets']['val_per_class']} per class; `llm-layerL`: the masked "
        "mean of the frozen LLM's layer-L hidden state over the input; *texts/s*: the key's encoding speed on one "
        "CPU thread, its parts measured side by side on the same 256 training inputs):\n\n"
        + table(head[:1] + ["texts/s"] + head[1:], keys)
        + "\n\nRouting accuracy in %; *tuning tasks after*: offline-9's tasks once the held-out tasks joined."
    )


UNKNOWN_SCORE_LABELS = {
    "posterior": "task posterior at T=30",
    "nearest": "nearest class mean",
    "relative": "relative Mahalanobis",
    "mixture": "class-mixture likelihood",
    "class-confidence": "the chosen task's class confidence",
    "margin": "margin over the runner-up task",
    "posterior-or-nearest": "posterior or nearest",
    "relative-or-posterior": "relative or posterior",
    "relative-or-class-confidence": "relative or class confidence",
    "perplexity": "LLM perplexity of the input",
    "relative-or-perplexity": "relative or LLM perplexity",
}


def unknown_inputs(r: dict[str, Any], only: tuple[str, ...] | None = None) -> str:
    """Far out-of-distribution and leave-one-task-out detection per score (``study-unknown-inputs``),
    the scores in ``only`` if given."""
    far, loo = r["far_ood"], r["leave_one_out"]["mean"]
    sets = list(far["sets"])
    rows = []
    for score, label in UNKNOWN_SCORE_LABELS.items():
        if score not in far["mean_detected"] or (only is not None and score not in only):
            continue
        rows.append(
            [label, pct(far["false_reject_test"][score])]
            + [pct(far["sets"][s]["detected"][score]) for s in sets]
            + [pct(far["mean_detected"][score]), pct(loo["detected"][score]), pct(loo["false_reject_test"][score])]
        )
    head = ["score", "false rejects (known test)"] + [f"`{s}` ({far['sets'][s]['n']})" for s in sets]
    head += ["far mean", "held-out task (mean of 9)", "its false rejects"]
    return (
        table(head, rows)
        + f"\n\nPercent of inputs flagged unknown; each threshold rejects {r['reject_known_val']:.0%} of the known "
        "tasks' validation inputs (never seen by the router). Router `lda` on "
        f"`{r['key_encoder']}` keys holding offline-9 (far sets), or offline-9 less the held-out task. "
        '"A or B": unknown when either score is below its own 2.5% threshold.'
        + "".join(
            f" Without held-out texts, the threshold at the 5% quantile of the router's own training keys' "
            f"{UNKNOWN_SCORE_LABELS[k]} rejects {pct(v['false_reject_test'])}% of known test inputs and flags "
            f"{pct(v['mean_detected'])}% of far inputs on average."
            for k, v in far.get("threshold_from_training_keys", {}).items()
            if k == "relative"
        )
        + "".join(
            f" From the router's statistics alone (the 5% quantile of inputs drawn from its Gaussian model) it "
            f"rejects {pct(v['false_reject_test'])}%: the model's scores spread less than real inputs' "
            f"(sd {v['model_sd']:.3f} against {v['test_sd']:.3f})."
            for v in far.get("threshold_from_gaussian_model", {}).values()
        )
    )


def mixed_generation(r: dict[str, Any]) -> str:
    rows = []
    for row in r["results"]:
        tps = row["tokens_per_s"]
        rows.append([str(row["m"]), str(row["inputs"]), str(row["new_tokens"]), f"{tps['mixed']:.1f}", f"{tps['grouped']:.1f}",
                     f"{tps['mixed'] / tps['grouped']:.2f}×"])  # fmt: skip
    return (
        table(
            ["m tasks", "inputs", "tokens each", "mixed (tok/s)", "grouped by task (tok/s)", "mixed vs grouped"], rows
        )
        + "\n\nText-to-text tasks with untrained ULPT prompts; every answer is exactly that many tokens. *mixed*: "
        "one decode over the whole batch; *grouped*: one decode per task."
    )


def distributed(r: dict[str, Any]) -> str:
    s, rm, bm = r["scheduling"], r["router_merge"], r["bank_merge"]
    sched = table(
        ["tasks", "in order (ms/task)", f"Ray, {s['workers']} workers (ms/task)", "Ray overhead (CPU ms/task)",
         "prompts identical", "failed"],
        [[f"{s['tasks']:,}", f"{s['in_order_ms_per_task']:.1f}", f"{s['ray_ms_per_task']:.1f}",
          f"{s['overhead_cpu_ms_per_task']:.1f}", "yes" if s["prompts_identical_to_in_order"] else "NO", str(s["failed"])]],
    )  # fmt: skip
    merge = table(
        ["what is merged", "tasks", "key dim", "merge (s)", "save after (s)", "peak RSS added (MiB)"],
        [
            ["router alone (`lda`, 2 classes/task)", f"{rm['tasks']:,}", str(rm["key_dim"]), f"{rm['merge_s']:.2f}",
             "–", f"{rm['peak_rss_added_mib']:.0f}"],
            [f"whole banks ({bm['bank_mib_on_disk']:.1f} MiB saved)", f"{bm['tasks']:,}", str(bm["key_dim"]),
             f"{bm['merge_s']:.2f}", f"{bm['save_s']:.2f}", f"{bm['peak_rss_added_mib']:.0f}"],
        ],
    )  # fmt: skip
    return (
        sched + "\n\nTiny tasks (8 texts, 2 training steps on a 2-layer random Llama), so the time is the machinery: "
        "*overhead* = (Ray wall × workers − in-order wall) / tasks.\n\n"
        + merge
        + "\n\nTwo halves of the tasks built apart, then merged (the second half's tasks added to the first)."
    )


def serve_load(r: dict[str, Any]) -> str:
    rows = [
        [str(x["max_batch_size"]), f"{x['mean_batch']:.1f}", f"{x['requests_per_s']:.2f}", f"{x['p50_ms']:,.0f}",
         f"{x['p99_ms']:,.0f}", f"{100 * x['answers_equal_predict']:.1f}%", str(x["answered"])]
        for x in r["settings"]
    ]  # fmt: skip
    return (
        table(
            ["max_batch_size", "mean batch", "requests/s", "p50 (ms)", "p99 (ms)", "answers = predict", "requests"],
            rows,
        )
        + f"\n\n{r['tasks']} tasks in the bank; every request is routed; closed-loop HTTP clients on localhost. "
        f"Batching: **{r['speedup_requests_per_s']:.2f}×** the requests/s of one request per forward."
    )


def router_scale(r: dict[str, Any]) -> str:
    gib = 2**30
    loaded = r.get("rss_after_first_route_bytes")
    rows = [
        [f"{r['tasks']:,}", str(nprobe), f"{x['route_batch_us_per_query']['median']:.1f}",
         f"{x['agreement_with_exact']:.3f}", "–" if loaded is None else f"{loaded / gib:.2f}",
         f"{r['rss_bytes'] / gib:.2f}", f"{r['rss_peak_bytes'] / gib:.2f}",
         f"{r['rss_bytes_per_task']:,.0f}", f"{r['state_bytes_per_task']:,.0f}"]
        for nprobe, x in r["by_nprobe"].items()
    ]  # fmt: skip
    return (
        table(
            [
                "tasks",
                "nprobe",
                "µs/query, batch",
                "agreement with exact",
                "RSS loaded (GiB)",
                "RSS at the end (GiB)",
                "peak RSS (GiB)",
                "RSS B/task (end)",
                "state B/task",
            ],
            rows,
        )  # fmt: skip
        + f"\n\n`lda` defaults ({r['router']['mean_bits']}-bit means, {r['args']['dim']}-d keys, one mean per task, "
        f"index {r['index_in_use']}); batches of {r['args']['batch']} queries. RSS is what the process holds beyond "
        "its start: *loaded*, after the state is loaded and the first route has whitened and indexed every mean; "
        f"*at the end*, after the edits, the exact search and the timings. True task {r['accuracy_true_task']:.3f} "
        f"(exact LDA {r['exact_accuracy_true_task']:.3f}). At this size, adding a task took "
        f"{r['add_ms_per_task']:.2f} ms and removing one {r['remove_ms_per_task']:.2f} ms (index updates included); "
        f"the first route after loading (whitening, index training and filling) {r['first_route_s']:.0f} s."
    )


def routing_mean_bits(r: dict[str, Any]) -> str:
    rows = []
    for stream, x in r["streams"].items():
        by = {row["strategy"]: row for row in x["rows"]}
        labels = (
            ("lda", f"{r.get('default_mean_bits', 8)}-bit (default)"),
            ("lda-8bit", "8-bit"),
            ("lda-16bit", "float16"),
        )
        for name, label in labels:
            if name not in by:
                continue
            row = by[name]
            rows.append(
                [f"`{stream}`", label, f"{100 * row['accuracy']:.2f}", f"{row['marginal_bytes_per_task']:,.0f}"]
            )
    return (
        table(["stream", "class means", "routing %", "routing state B/task (marginal)"], rows)
        + "\n\nThe same cached keys, tasks added in stream order with the runner's budgets, every test input routed."
    )


def rescore_cost(r: dict[str, Any]) -> str:
    """Routed predictions against top-3 re-scored ones on a trained bank (``bench-rescore-cost``)."""
    labels = {
        "routed": "routed (default, `top=1`)",
        "rescored_top3": "re-scored, `top=3` (unsure inputs only)",
        "rescored_top3_all": "re-scored, `top=3`, `min_posterior=0` (every input)",
    }
    rows = []
    for name, row in r["rows"].items():
        rows.append(
            [
                labels.get(name, name),
                f"{100 * row['share_rescored']:.1f}",
                f"{row['module_passes_per_input']:.2f}",
                f"{row['seconds']['median']:.1f}",
                f"{row['cost_vs_routed']['paired_median']:.2f}×",
                f"{100 * row['accuracy']:.1f}",
                f"{100 * row['routing_accuracy']:.1f}",
            ]
        )
    head = ["prediction", "inputs re-scored %", "module passes / input", "seconds", "cost vs routed", "accuracy %",
            "routing %"]  # fmt: skip
    return (
        table(head, rows)
        + f"\n\n{r['inputs']} test inputs of the bank's tasks ({', '.join(f'`{t}`' for t in r['tasks'])}), evenly "
        f"spaced over each task's test split, one `bank.predict` call per case (keys and routing included), "
        f"batches of {r['args']['batch_size']}, medians of {r['args']['repeats']}; the bank: `{r['args']['bank']}`."
    )


def stream_workers(r: dict[str, Any]) -> str:
    arms, reference = r["arms"], r["reference"]
    base = arms[reference]["seconds"]
    rows = []
    for name, arm in sorted(arms.items(), key=lambda kv: -kv[1]["seconds"]):
        label = f"in order, {arm['threads']} thread{'s' if arm['threads'] > 1 else ''}" if "threads" in arm else (
            f"Ray, {arm['workers']} workers × 1 thread"
        )  # fmt: skip
        same = "(reference)" if name == reference else (
            "yes" if arm["prompts_identical_to_reference"] else f"no: max abs diff {arm['max_prompt_diff_vs_reference']:.4f}"
        )  # fmt: skip
        routed = "(reference)" if name == reference else ("yes" if arm["routes_identical_to_reference"] else "NO")
        rows.append([label, f"{arm['seconds'] / 60:.1f}", f"{base / arm['seconds']:.2f}×", same, routed,
                     str(len(arm.get("failed", [])))])  # fmt: skip
    t = r["train"]
    return (
        table(["arm", "wall (min)", "speed-up", "prompts bit-identical", "same routes", "failed"], rows)
        + f"\n\n`{r['stream']}` order {r['order']} ({len(r['tasks'])} tasks), the stream's data and seeds, "
        f"{t['steps']} training steps of batch {t['batch_size']} per task, validation every {t['eval_every']} "
        "(the stream's default is 80 steps: shortened so the arms fit one sitting), and each task's routing "
        "keys. The Ray arm's wall includes Ray's start, each worker loading the LLM and key encoder, and the merge. "
        "Speed-up and identity against the in-order reference."
    )


def key_classes(r: dict[str, Any]) -> str:
    """One seed of the key-classes study: the prompt, the router's classes and the probes."""
    columns = [c for c in ("prompt", "lda", "probe", "probe_keys") if c in r["average"]]
    names = {"prompt": "prompt alone", "lda": "router classes alone", "probe": "probe, 64/class",
             "probe_keys": "probe, all key inputs"}  # fmt: skip
    rows = [[f"`{task}`", *(f"{100 * x[c]:.1f}" for c in columns)] for task, x in r["tasks"].items()]
    rows.append(["**average**", *(f"**{100 * r['average'][c]:.1f}**" for c in columns)])
    return (
        table(["task", *(names[c] for c in columns)], rows)
        + f"\n\n`{r['stream']}` seed {r['seed']}, the task given (oracle), test inputs, in %; prompts before the "
        "input (`--placement prefix`). *router classes*: the "
        "`lda` router's class posterior within the task (its means and shared covariance, fitted on the "
        "train + validation + key inputs, up to 1,024 per class); *probe*: logistic regression on the same keys "
        "(the `linear-probe` baseline on the 64 training inputs per class, and on every key input)."
    )


def _study_seeds(pattern: str) -> list[dict[str, Any]]:
    runs = [json.loads(p.read_text()) for p in RESULTS.glob(pattern)]
    return sorted(runs, key=lambda d: d["result"]["seed"])


def placement_seeds() -> str:
    """Prompt alone and fused answers per task, prompts before the input (``study-key-classes-s*``)
    against after it (``study-suffix-s*``), each seed its own data draw; the spread after the input
    as min / median / max. Every file picked its weights on the validation inputs alone."""
    prefix, suffix = _study_seeds("study-key-classes-s*.json"), _study_seeds("study-suffix-s*.json")
    if not suffix:
        return "(no `docs/results/study-suffix-s*.json` recorded yet)\n"
    tasks = list(suffix[0]["result"]["tasks"])
    same = suffix[: len(prefix)]
    rows = []
    for task in [*tasks, "average"]:
        name = f"`{task}`" if task != "average" else "**average**"
        rows.append(
            [
                name,
                f"{_mean(_values(prefix, task, 'prompt'))} → {_mean(_values(same, task, 'prompt'))}",
                f"{_mean(_values(prefix, task, 'fused'))} → {_mean(_values(same, task, 'fused'))}",
                _spread(_values(suffix, task, "prompt")),
                _spread(_values(suffix, task, "fused")),
            ]
        )
    n = len(suffix)
    head = [
        "task",
        f"prompt alone, before → after (means of {len(prefix)})",
        f"fused, before → after (means of {len(prefix)})",
        f"prompt alone, after: min / median / max of {n}",
        f"fused, after: min / median / max of {n}",
    ]
    seeds = ", ".join(str(d["result"]["seed"]) for d in suffix)
    sources_ = sources([(f"{d['name']}.json", d) for d in [*prefix, *suffix]])
    return (
        table(head, rows)
        + f"\n\n`offline-5`, the task given, test inputs, in %; seeds {seeds}, each its own data draw. "
        f"*before*: prompts before the input (`--placement prefix`, seeds "
        f"{', '.join(str(d['result']['seed']) for d in prefix)}); *after*: after it (the default); the "
        "means compare the same seeds. *fused*: the prompt's label scores + its weight × the router's class "
        "log-posterior, the weight picked on the validation inputs. "
        f"Command: `{suffix[0]['command']} --seed S`, and without `--placement suffix` for *before*. "
        f"Sources: {sources_}.\n"
    )


def _footprint_row(method: str, trainable_params: int) -> dict[str, Any] | None:
    """The footprint benchmark's row for a module kind of this size (``lda`` router), if measured.
    Matched on the trainable parameter count, which the options decide (LoRA with MPC stores what
    LoRA of its rank does)."""
    if not (RESULTS / "bench-footprint.json").exists():
        return None
    for row in load("bench-footprint")["result"]["rows"]:
        if row["method"] == method and row["variant"].endswith("/lda") and row["trainable_params"] == trainable_params:
            return row
    return None


KIND_ORDER = ("ulpt", "pt", "lopt1", "lopt2", "dept", "ssb", "ssl", "ia3", "lora", "vera")


DEFAULT_N_TOKENS = 20  # BankConfig.n_tokens: rows at another length name it


def _kind_runs() -> list[dict[str, Any]]:
    return [load(p.stem) for p in RESULTS.glob("kind-*.json")]


def _kind_label(run: dict[str, Any]) -> str:
    """A kind run's name: its method, and its options where it has any."""
    bank = run["result"]["config"]["bank"]
    options = dict(bank.get("prompt_options") or {})
    if bank.get("n_tokens", DEFAULT_N_TOKENS) != DEFAULT_N_TOKENS:
        options = {"n_tokens": bank["n_tokens"], **options}
    shown = ", ".join(f"{k}={v}" for k, v in options.items())
    return f"`{bank['method']}`" + (f" ({shown})" if shown else "")


def _min_median_max(xs: list[float]) -> str:
    return " / ".join(f"{100 * v:.1f}" for v in (min(xs), float(np.median(xs)), max(xs)))


def module_kind_seeds() -> str:
    """Kinds run on several seeds (``kind-*.json`` with ``--seed``): the spread of their answers,
    next to ULPT's on the same seeds (``study-suffix-s*``: the main job's settings)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in _kind_runs():
        groups.setdefault(_kind_label(run), []).append(run)
    groups = {k: sorted(v, key=lambda d: d["result"]["seed"]) for k, v in groups.items() if len(v) > 1}
    if not groups:
        return "(no module kind recorded on more than one seed yet)\n"
    rows = []
    seeds_used = sorted({run["result"]["seed"] for runs in groups.values() for run in runs})
    ulpt = [d for d in _study_seeds("study-suffix-s*.json") if d["result"]["seed"] in seeds_used]
    if ulpt:
        rows.append(
            [
                "`ulpt` (the default)",
                ", ".join(str(d["result"]["seed"]) for d in ulpt),
                _min_median_max([d["result"]["average"]["prompt"] for d in ulpt]),
                _min_median_max([d["result"]["average"]["fused"] for d in ulpt]),
                "–",
            ]
        )
    for label, runs in sorted(groups.items(), key=lambda kv: KIND_ORDER.index(kv[1][0]["result"]["method"])):
        rs = [run["result"] for run in runs]
        rows.append(
            [
                label,
                ", ".join(str(r["seed"]) for r in rs),
                _min_median_max([r["module_alone_avg_acc"] for r in rs]),
                _min_median_max([r["oracle_avg_acc"] for r in rs]),
                _min_median_max([r["avg_acc"] for r in rs]),
            ]
        )
    sources_ = sources([(f"{run['name']}.json", run) for runs in groups.values() for run in runs])
    return (
        table(["kind", "seeds", "module alone", "oracle", "routed"], rows)
        + "\n\n`offline-5` average over its tasks, in %, min / median / max over the seeds, each seed its own "
        "data draw, initialisation and training; commands as in the table above with `--seed S`. ULPT's row "
        "comes from the placement study on the same seeds (`study-suffix-s*.json`: *module alone* is its prompt "
        f"alone, *oracle* its fused answers). Sources: {sources_}.\n"
    )


def module_kinds() -> str:
    """Every module kind on offline-5 at the same budgets, data draw and seed (``kind-*.json``):
    the bank's answers (routed, and oracle: fused with the router's classes) next to the module's
    own answers (the task given, no router classes), its size and PEFT's file for the same module."""
    runs = [run for run in _kind_runs() if run["result"]["seed"] == 0]
    if not runs:
        return "(no `docs/results/kind-*.json` recorded yet)\n"
    runs.sort(key=lambda d: (KIND_ORDER.index(d["result"]["method"]), d["result"]["trainable_params_per_task"]))
    tasks = runs[0]["result"]["tasks"]
    rows, per_task = [], []
    for run in runs:
        r = run["result"]
        bank = r["config"]["bank"]
        label = _kind_label(run)
        foot = _footprint_row(bank["method"], r["trainable_params_per_task"])
        train_s = sum(rep.get("prompt_train_seconds") or 0.0 for rep in r["reports"])
        rows.append(
            [
                label,
                f"{r['trainable_params_per_task']:,}",
                f"{foot['disk_marginal_per_task']['prompts'] / 1024:.1f} KB" if foot else "–",
                f"{foot['peft']['total'] / 1024:.0f} KB" if foot and foot.get("peft") else "–",
                pct(r["avg_acc"]),
                pct(r["oracle_avg_acc"]),
                f"**{pct(r.get('module_alone_avg_acc'))}**",
                pct(r["bwt"], True),
                f"{train_s / 60:.1f}",
                f"`{run['command']}`",
            ]
        )
        per_task.append([label, *(pct(a) for a in r.get("module_alone_acc") or [None] * len(tasks))])
    head = ["kind", "params/task", "module/task", "PEFT's file", "routed", "oracle", "module alone", "BWT",
            "train min", "command"]  # fmt: skip
    sources_ = sources([(f"{run['name']}.json", run) for run in runs])
    return (
        table(head, rows)
        + "\n\n*Module alone*, task by task:\n\n"
        + table(["kind", *tasks], per_task)
        + "\n\n`offline-5`, seed 0 (one data draw: one seed is an anecdote), test inputs, after the last task, "
        "in %. *routed* and *oracle*: the bank's answers (the module's label scores fused with the router's "
        "class posterior, `key_classes`); *module alone*: the module's own label scores, the task given; "
        "*module/task*: its stored tensors (`bench-footprint.json`); *PEFT's file*: PEFT's own checkpoint of "
        "the same module, where PEFT has the kind; *train min*: the modules' training summed over the tasks, "
        "in the conditions each source names (BENCHMARKS.md's training-step table compares step times side "
        "by side). "
        f"Sources: {sources_}.\n"
    )


def kind_lr(r: dict[str, Any]) -> str:
    """Each module kind trained at multiples of its default learning rate (``study-kind-lr``)."""
    tasks = r["rows"][0]["tasks"]
    rows = []
    from promptbank.trainer import DEFAULT_LR  # noqa: PLC0415

    for row in sorted(r["rows"], key=lambda row: (row["kind"], row["lr"])):
        default = " (default)" if row["lr"] == DEFAULT_LR[row["kind"]] else ""
        val, test = row["best_val_acc"], row["module_alone_acc"]
        rows.append(
            [f"`{row['kind']}`", f"{row['lr']:g}{default}", *(pct(v) for v in val), _mean(val),
             *(pct(t) for t in test), _mean(test)]
        )  # fmt: skip
    head = ["kind", "lr", *(f"val {t}" for t in tasks), "val mean", *(f"test {t}" for t in tasks), "test mean"]
    return (
        table(head, rows)
        + f"\n\n`offline-5` tasks {', '.join(tasks)}, seed {r['args']['seed']}, the runner's budgets (80 steps of batch 8, "
        "64 training inputs per class); the module alone, the task given, in %. *val*: the best validation "
        "accuracy of the training run (16 inputs per class, what picks the checkpoint and should pick a default); "
        "*test*: the kept checkpoint on the test inputs."
    )


def ivf_lists(r: dict[str, Any]) -> str:
    """The LDA router's batched route by IVF list size at 100k tasks (``study-ivf-lists``)."""
    cases = list(r["cases"].values())
    base = next(k for k in cases[0] if k.startswith("paired_ratio_to_"))
    rows = [
        [f"{c['means_per_list']}{' (default)' if c['means_per_list'] == 24 else ''}", f"{c['nlist']:,}",
         str(c["nprobe"]), f"{c['route_batch_us_per_query']['median']:.0f}", f"{c[base]:.2f}",
         *(f"{c['parts_us_per_query'][p]:.0f}" for p in ("whiten", "choose lists", "scan lists")),
         f"{c['agreement_with_exact']:.3f}", f"{c['accuracy_true_task']:.3f}"]
        for c in cases
    ]  # fmt: skip
    head = ["means per list", "lists", "nprobe", "µs/query, batch", "× the default", "whiten", "choose lists",
            "scan lists", "agreement with exact", "true task"]  # fmt: skip
    return (
        table(head, rows)
        + f"\n\n{r['args']['tasks']:,} synthetic tasks (`router_scale.py`'s, {r['args']['dim']}-d keys, one mean per "
        f"task), `lda` defaults but the list size (`faiss_index.LDA_MEANS_PER_LIST`); batches of {r['args']['batch']} "
        "queries, medians of interleaved repeats; *× the default*: the paired ratio to 24 means per list at nprobe 8; "
        "*whiten*, *choose lists*, *scan lists*: the route's three products timed apart (µs per query; the rest is "
        f"the candidates' exact scores). Exact LDA finds the true task for {r['exact_accuracy_true_task']:.3f}."
    )


def _values(runs: list[dict[str, Any]], task: str, column: str) -> list[float]:
    pick = (lambda r: r["average"]) if task == "average" else (lambda r: r["tasks"][task])
    return [pick(d["result"])[column] for d in runs]


def _mean(xs: list[float]) -> str:
    return f"{100 * float(np.mean(xs)):.1f}" if xs else "–"


def _spread(xs: list[float]) -> str:
    return f"{100 * min(xs):.1f} / {100 * float(np.median(xs)):.1f} / {100 * max(xs):.1f}"


BENCH_TABLES: dict[str, Callable[[], str]] = {
    "placement-seeds": placement_seeds,
    "module-kinds": module_kinds,
    "module-kind-seeds": module_kind_seeds,
    "study-kind-lr": lambda: bench_table("study-kind-lr", kind_lr),
    "study-kind-lr-ssb": lambda: bench_table("study-kind-lr-ssb", kind_lr),
    "study-kind-lr-lora": lambda: bench_table("study-kind-lr-lora", kind_lr),
    "study-key-probes": lambda: bench_table("study-key-probes-s0", key_classes),
    "bench-stream-workers": lambda: bench_table("bench-stream-workers", stream_workers),
    "bench-stream-workers-identity": lambda: bench_table("bench-stream-workers-identity", stream_workers),
    "bench-routing-mean-bits": lambda: bench_table("bench-routing-mean-bits", routing_mean_bits),
    "bench-rescore-cost": lambda: bench_table("bench-rescore-cost", rescore_cost),
    "bench-router-scale-100k": lambda: bench_table("bench-router-scale-100k", router_scale),
    "bench-router-scale-1m": lambda: bench_table("bench-router-scale-1m", router_scale),
    "study-ivf-lists": lambda: bench_table("study-ivf-lists", ivf_lists),
    "bench-distributed": lambda: bench_table("bench-distributed", distributed),
    "bench-serve-load": lambda: bench_table("bench-serve-load", serve_load),
    "bench-mixed-generation": lambda: bench_table("bench-mixed-generation", mixed_generation),
    "bench-heldout-routing": lambda: bench_table("bench-heldout-routing", heldout_routing),
    "bench-faults": lambda: bench_table("bench-faults", faults),
    "bench-footprint": lambda: bench_table("bench-footprint", footprint),
    "bench-training-step": lambda: bench_table("bench-training-step", training_step),
    "bench-mixed-inference": lambda: bench_table("bench-mixed-inference", mixed_inference),
    "bench-mixed-inference-kinds": lambda: bench_table("bench-mixed-inference-kinds", mixed_inference),
    "bench-routing": lambda: bench_table("bench-routing", routing),
    "study-unknown-inputs": lambda: bench_table("study-unknown-inputs", unknown_inputs),
    "study-unknown-inputs-keys": lambda: bench_table(
        "study-unknown-inputs-keys",
        lambda r: unknown_inputs(r, only=("relative", "margin", "class-confidence", "relative-or-class-confidence")),
    ),
    "study-heldout-keys": lambda: bench_table("study-heldout-keys", heldout_keys),
}
