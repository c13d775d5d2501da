"""The ``promptbank`` command: run a stream, predict with a saved bank, inspect a bank."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from .errors import PromptBankError


def _run(args: argparse.Namespace) -> int:
    from promptbank.rescore import Rescorer
    from streams.runner import RunConfig, format_table, run_stream

    given = {"top": args.rescore_top, "weight": args.rescore_weight}
    rescore = {**Rescorer().to_dict(), **{k: v for k, v in given.items() if v is not None}}
    cfg = RunConfig(
        stream=args.stream, order=args.order, method=args.method, baseline=args.baseline, backbone=args.backbone,
        key_encoder=args.key_encoder, router={"strategy": args.router}, rescore=rescore, n_tokens=args.n_tokens, rank=args.rank,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every,
        max_input_tokens=args.max_input_tokens, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
        test_per_class=args.test_per_class, seed=args.seed, tasks=args.tasks.split(",") if args.tasks else None, bf16=args.bf16,
        key_per_class=args.key_per_class,
    )
    out = Path(args.out) if args.out else cfg.default_out()
    results = run_stream(cfg, out=out, tracking_uri=args.tracking_uri, progress=not args.quiet, fresh=args.fresh)
    print(f"\n{cfg.stream} · {cfg.strategy_name} · {cfg.backbone}")
    print(format_table(results))
    print(f"\nresults:  {out / 'results.json'}")
    print(f"plots:    {out / 'acc_matrix.png'}" + (f", {out / 'routing_confusion.png'}" if results.get("routing_confusion") else ""))
    print(f"mlflow:   run {results['mlflow']['run_id']} in {results['mlflow']['tracking_uri']}")
    print(f"          browse with: {results['mlflow']['ui']}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .bank import PromptBank

    bank = PromptBank.load(args.bank, backbone=args.backbone, bf16=args.bf16)
    texts = list(args.text) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text, p in zip(texts, bank.predict(texts, task=args.task)):
        print(json.dumps({"text": text, "task": p.task, "label": p.label, "route_score": None if p.route_score != p.route_score else round(p.route_score, 4),
                          "scores": {k: round(v, 4) for k, v in p.scores.items()}}))
    return 0


def _info(args: argparse.Namespace) -> int:
    from .storage import read_bank

    manifest, tensors, _ = read_bank(Path(args.bank))
    files = manifest["files"]
    total = sum(f["bytes"] for f in files.values()) + (Path(args.bank) / "manifest.json").stat().st_size
    n = max(1, len(manifest["tasks"]))
    print(f"bank: {args.bank}  (schema {manifest['schema_version']})")
    print(f"backbone: {manifest['backbone']['name']} ({manifest['backbone']['model_type']}, d={manifest['backbone']['hidden_size']})")
    cfg = manifest["config"]
    print(f"method: {cfg['method']} n={cfg['n_tokens']} {cfg['prompt_options']} · keys: {cfg['key_encoder']} · router: {manifest['router'].get('strategy')}")
    print(f"tasks ({len(manifest['tasks'])}):")
    for t in manifest["tasks"]:
        print(f"  {t['name']:<20} labels={t['label_names']}  best_val_acc={t['metadata'].get('best_val_acc')}")
    print(f"size: {total} bytes on disk, {total / n:.0f} bytes per task")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from streams.splits import KEY_PER_CLASS  # light: no datasets or Avalanche import

    parser = argparse.ArgumentParser(prog="promptbank", description="Continual learning with a frozen LLM and a bank of tiny prompts.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a named task stream end to end (tracked in MLflow)")
    run.add_argument("--stream", default="offline-5")
    run.add_argument("--order", type=int, default=None, help="task order of the stream (default: its first)")
    run.add_argument("--tasks", default=None, help="comma-separated task names instead of a named stream")
    run.add_argument("--method", default="ulpt", choices=["ulpt", "pt", "lopt1", "lopt2"])
    run.add_argument("--baseline", default=None, help="zero-shot | naive | ewc | lwf | replay | joint | linear-probe (default: the prompt bank)")
    run.add_argument("--backbone", default="smollm2-135m", help="offline asset name, local folder or hub id")
    run.add_argument("--key-encoder", default="minilm+embedding-set-mean",
                     help="minilm, backbone-mean, embedding-mean, embedding-set-mean, or several joined with '+' (default: %(default)s)")
    run.add_argument("--router", default="lda", choices=["lda", "gaussian", "knn"], help="routing strategy (lda: measured best, see docs/routing.md)")
    run.add_argument("--rescore-top", type=int, default=None,
                     help="re-score this many router candidates with their prompts (default 1: route on keys alone; see RESULTS.md)")
    run.add_argument("--rescore-weight", type=float, default=None, help="weight of the prompts' confidence against the router's")
    run.add_argument("--n-tokens", type=int, default=20)
    run.add_argument("--rank", type=int, default=2)
    run.add_argument("--steps", type=int, default=80)
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--lr", type=float, default=None)
    run.add_argument("--eval-every", type=int, default=20)
    run.add_argument("--max-input-tokens", type=int, default=64)
    run.add_argument("--train-per-class", type=int, default=64)
    run.add_argument("--val-per-class", type=int, default=16)
    run.add_argument("--key-per-class", type=int, default=KEY_PER_CLASS,
                     help="labelled training inputs per class the router learns from (default %(default)s); the prompt "
                          "trains on the first --train-per-class of them. More keys route better at no routing-state cost")
    run.add_argument("--test-per-class", type=int, default=100)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                     help="run the LLM under bf16 autocast (default: on a bf16 GPU only; on a CPU with AMX "
                          "--bf16 ran the main job 1.5x faster, with slightly different answers: BENCHMARKS.md)")
    run.add_argument("--out", default=None, help="output folder (default runs/<stream>-<strategy>)")
    run.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite store next to --out)")
    run.add_argument("--fresh", action="store_true", help="discard a previous run in --out instead of resuming it")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)

    predict = sub.add_parser("predict", help="answer texts with a saved bank (routed unless --task)")
    predict.add_argument("--bank", required=True)
    predict.add_argument("--task", default=None)
    predict.add_argument("--backbone", default=None)
    predict.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                         help="the LLM under bf16 autocast (default: on a bf16 GPU only), e.g. to answer as a --bf16 run trained")
    predict.add_argument("text", nargs="*", help="texts (default: one per line on stdin)")
    predict.set_defaults(func=_predict)

    info = sub.add_parser("info", help="describe a saved bank")
    info.add_argument("bank")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message="no QP solver")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PromptBankError as exc:
        print(f"promptbank: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
