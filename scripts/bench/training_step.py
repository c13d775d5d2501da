"""Training step: seconds per step (forward + backward + AdamW step) for every module kind
through ``FrozenLM.label_scores`` + cross-entropy, versus PEFT's prompt tuning on the same
backbone and batch, versus the bare frozen forward + backward to the input embeddings.

Cases, timed side by side with alternating order on the same batch:

* a kind's name (``ulpt``, ``pt``, ``lopt1``, ``lopt2``, ``dept``, ``ssb``, ``ssl``, ``ia3``, ``vera``)
  and ``lora2_qv``, ``lora8_qv``, ``lora8_all``, ``lora8_qv_mpc``: ``applied()`` -> ``label_scores``
  -> CE (+ MPC) -> backward -> step (the inner loop of ``promptbank.trainer.train_prompt``,
  without clipping);
* ``ulpt_suffix``: ULPT placed after the input with the input's keys and values already held
  (``promptbank.input_cache``, bf16 storage): a step on inputs seen before;
* ``ulpt_suffix_cold``: the same with an empty cache, so the step also runs the no-grad pass over
  the inputs: a step on inputs seen for the first time;
* ``peft``: ``get_peft_model(model, PromptTuningConfig(n))``, right-padded ``input_ids``, full
  logits (every position x vocabulary, as the model returns them), CE over the label words'
  logits at the last real token;
* ``peft_last_logit``: the same PEFT model, left-padded, ``logits_to_keep=1`` (only the last
  position's logits): PEFT used as economically as it allows;
* ``limit_label_scores``: a leaf (B, n, d) prompt tensor straight into ``label_scores`` (the
  library path with zero prompt-parameterisation cost);
* ``limit_raw``: the bare frozen model on a leaf (B, n + L, d) input-embedding tensor, the last
  position's hidden state times the label words' output rows, CE, backward: the limit.

Labels must be single-token words for the PEFT cases to compute the same loss; the default
task (bbc) has single-token labels on SmolLM2 (checked at start).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python scripts/bench/training_step.py --threads 1 \
        --out runs/bench/training_step.json
"""

from __future__ import annotations

import argparse
from typing import Any

import _bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(parser, "runs/bench/training_step.json")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--random-init", action="store_true", help="random weights with the backbone's real config")
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the LLM under bf16 autocast (default: on a bf16 GPU only)",
    )
    parser.add_argument("--task", default="bbc", help="offline task giving texts, template and (single-token) labels")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64, help="target input length (template + text) in tokens")
    parser.add_argument("--n-tokens", type=int, default=20)
    parser.add_argument("--rank", type=int, default=2)
    parser.add_argument(
        "--cases",
        default="ulpt,ulpt_suffix,ulpt_suffix_cold,pt,lopt1,lopt2,dept,ssb,ssl,ia3,lora2_qv,lora8_qv,lora8_all,"
        "lora8_qv_mpc,vera,peft,peft_last_logit,limit_label_scores,limit_raw",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    _bench.set_threads(args.threads)
    _bench.quiet_truncation()

    import torch
    import torch.nn.functional as F

    from promptbank.backbone import PROMPT_SLOT
    from promptbank.input_cache import InputCache
    from promptbank.module_batch import ModuleBatch
    from promptbank.prompts import build_prompt
    from promptbank.trainer import DEFAULT_LR
    from streams.splits import get_task

    machine = _bench.machine_info()
    backbone = _bench.load_frozen(args.backbone, args.random_init, args.device, args.bf16)
    dev, n, B = backbone.device, args.n_tokens, args.batch
    task = get_task(args.task)
    label_ids = backbone.label_token_ids(list(task.label_names))
    if any(len(t) != 1 for t in label_ids):
        raise SystemExit(f"{args.task} has multi-token labels {label_ids}; pick a task with single-token labels")
    first = torch.tensor([t[0] for t in label_ids], device=dev)
    template_len = len(backbone.encode(["x"], task.template, 1).input_ids[0]) - 2  # less "x" and the prompt slot
    text_tokens = max(1, args.tokens - template_len)
    ids = backbone.encode(task.train_texts[:B], task.template, text_tokens).input_ids
    suffix_ids = backbone.encode(task.train_texts[:B], task.template, text_tokens, placement="suffix").input_ids
    plain = [[t for t in seq if t != PROMPT_SLOT] for seq in ids]  # the token ids alone, for the PEFT cases
    y = torch.as_tensor(task.train_labels[:B], device=dev)
    lengths = [len(x) for x in plain]
    labels = [label_ids] * B
    _bench.log(f"batch {B}, input tokens {min(lengths)}-{max(lengths)} (+{n} soft), labels {task.label_names}")

    def padded(left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(lengths)
        pad = backbone.tokenizer.pad_token_id
        t = torch.full((B, width), pad, dtype=torch.long)
        mask = torch.zeros(B, width, dtype=torch.long)
        for b, seq in enumerate(plain):
            s = width - len(seq) if left else 0
            t[b, s : s + len(seq)] = torch.tensor(seq)
            mask[b, s : s + len(seq)] = 1
        return t.to(dev), mask.to(dev)

    cases: dict[str, Any] = {}
    params: dict[str, int] = {}
    wanted = args.cases.split(",")

    low_rank = {"rank": args.rank}
    kinds = {
        "ulpt": ("ulpt", low_rank),
        "pt": ("pt", {}),
        "lopt1": ("lopt1", low_rank),
        "lopt2": ("lopt2", low_rank),
        "dept": ("dept", {}),
        "ssb": ("ssb", {}),
        "ssl": ("ssl", {}),
        "ia3": ("ia3", {}),
        "lora2_qv": ("lora", {"rank": 2}),
        "lora8_qv": ("lora", {"rank": 8}),
        "lora8_all": ("lora", {"rank": 8, "targets": "all"}),
        "lora8_qv_mpc": ("lora", {"rank": 8, "mpc": "orthogonal"}),
        "vera": ("vera", {}),
    }
    for case, (method, options) in kinds.items():
        if case not in wanted:
            continue
        prompt = build_prompt(method, n, backbone.hidden_size, shapes=backbone.linear_shapes(), **options).to(dev)
        opt = torch.optim.AdamW(prompt.param_groups(DEFAULT_LR[method]))
        params[case] = prompt.num_trainable()

        def step(prompt=prompt, opt=opt) -> None:
            scores = backbone.label_scores(ModuleBatch.shared(prompt.applied(), B), ids, labels)
            loss = F.cross_entropy(scores.float(), y)
            penalty = prompt.regularization()
            if penalty is not None:
                loss = loss + penalty
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        cases[case] = step

    for case in ("ulpt_suffix", "ulpt_suffix_cold"):
        if case not in wanted:
            continue
        prompt = build_prompt("ulpt", n, backbone.hidden_size, rank=args.rank).to(dev)
        opt = torch.optim.AdamW(prompt.param_groups(DEFAULT_LR["ulpt"]))
        held = InputCache(backbone, suffix_ids, dtype=torch.bfloat16)
        cold = case.endswith("cold")

        def step(prompt=prompt, opt=opt, held=held, cold=cold) -> None:
            cache = InputCache(backbone, suffix_ids, dtype=torch.bfloat16) if cold else held
            scores = cache.label_scores(list(range(B)), prompt().unsqueeze(0).expand(B, -1, -1), labels)
            loss = F.cross_entropy(scores.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        cases[case] = step

    if "limit_label_scores" in wanted:

        def limit_label_scores() -> None:
            leaf = torch.zeros(B, n, backbone.hidden_size, device=dev, requires_grad=True)
            F.cross_entropy(backbone.label_scores(leaf, ids, labels).float(), y).backward()

        cases["limit_label_scores"] = limit_label_scores

    if "limit_raw" in wanted:
        left_ids, left_mask = padded(left=True)
        with torch.no_grad():
            tok = backbone.model.get_input_embeddings()(left_ids)
        base_embeds = torch.cat([torch.zeros(B, n, tok.shape[-1], device=dev), tok], dim=1)
        full_mask = torch.cat([torch.ones(B, n, dtype=torch.long, device=dev), left_mask], dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        out_rows = backbone.model.get_output_embeddings().weight[first]

        def limit_raw() -> None:
            leaf = base_embeds.clone().requires_grad_(True)
            with backbone.autocast():
                h = backbone.model.base_model(
                    inputs_embeds=leaf, attention_mask=full_mask, position_ids=positions, use_cache=False
                ).last_hidden_state[:, -1]
                logits = h @ out_rows.T
            F.cross_entropy(logits.float(), y).backward()

        cases["limit_raw"] = limit_raw

    if "peft" in wanted or "peft_last_logit" in wanted:  # last: it wraps the backbone's model
        from peft import PromptTuningConfig, TaskType, get_peft_model

        peft_model = get_peft_model(
            backbone.model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=n)
        )
        peft_opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=DEFAULT_LR["pt"])
        params["peft"] = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        right_ids, right_mask = padded(left=False)
        last = torch.tensor([n + L - 1 for L in lengths], device=dev)
        left_ids, left_mask = padded(left=True)

        def peft_full() -> None:
            with backbone.autocast():
                logits = peft_model(input_ids=right_ids, attention_mask=right_mask).logits  # (B, n + L, V)
            loss = F.cross_entropy(logits[torch.arange(B, device=dev), last][:, first].float(), y)
            peft_opt.zero_grad(set_to_none=True)
            loss.backward()
            peft_opt.step()

        def peft_last() -> None:
            with backbone.autocast():
                logits = peft_model(input_ids=left_ids, attention_mask=left_mask, logits_to_keep=1).logits  # (B, 1, V)
            loss = F.cross_entropy(logits[:, -1, first].float(), y)
            peft_opt.zero_grad(set_to_none=True)
            loss.backward()
            peft_opt.step()

        if "peft" in wanted:
            cases["peft"] = peft_full
        if "peft_last_logit" in wanted:
            cases["peft_last_logit"] = peft_last

    times = _bench.interleaved(cases, repeats=args.repeats, warmup=args.warmup, log=_bench.log)
    stats = {k: _bench.summary(v) for k, v in times.items()}
    ratios: dict[str, Any] = {}
    for a, b in (
        ("ulpt", "pt"),
        ("ulpt", "ulpt_suffix"),
        ("ulpt", "ulpt_suffix_cold"),
        ("ulpt_suffix", "peft"),
        ("ulpt_suffix", "limit_raw"),
        ("ulpt", "peft"),
        ("ulpt", "peft_last_logit"),
        ("ulpt", "limit_raw"),
        ("ulpt", "limit_label_scores"),
        ("pt", "peft"),
        ("limit_label_scores", "limit_raw"),
        ("lopt1", "pt"),
        ("lopt2", "pt"),
        ("dept", "pt"),
        ("ssb", "ulpt"),
        ("ssl", "ulpt"),
        ("ia3", "ulpt"),
        ("lora2_qv", "ulpt"),
        ("lora8_qv", "ulpt"),
        ("lora8_all", "ulpt"),
        ("lora8_qv_mpc", "lora8_qv"),
        ("vera", "ulpt"),
        ("peft", "limit_raw"),
        ("peft_last_logit", "limit_raw"),
    ):
        if a in times and b in times:
            ratios[f"{a}/{b}"] = _bench.ratio(times[a], times[b])
    for k, s in stats.items():
        _bench.log(f"{k:20s} median {s['median']:.3f}s  (min {s['min']:.3f}, max {s['max']:.3f})")
    for k, r in ratios.items():
        _bench.log(f"{k:32s} {r['paired_median']:.3f} (paired)  {r['of_medians']:.3f} (of medians)")
    _bench.write_json(
        args.out,
        {
            "bench": "training_step",
            "args": vars(args),
            "machine": machine,
            "backbone": backbone.identity(),
            "llm_bf16": backbone.bf16,
            "batch": {"size": B, "input_tokens": lengths, "soft_tokens": n},
            "trainable_params": params,
            "goal": {"ulpt/pt": 1.05, "ulpt/peft": 1.0, "ulpt/limit": 1.15},
            "seconds_per_step": stats,
            "ratios": ratios,
        },
    )
    _bench.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
