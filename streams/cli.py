"""The ``promptbank`` command: the library's commands plus ``run``, which needs the stream layer.

``promptbank.cli`` owns ``predict`` and ``info`` and knows nothing of streams; this module adds
``run`` to the same parser, so the installed ``promptbank`` command offers all three while the
library never imports the experiment layer.
"""

from __future__ import annotations

import argparse
import sys

from promptbank.backbone import PLACEMENTS
from promptbank.bank import BankConfig
from promptbank.cli import build_parser as build_library_parser
from promptbank.cli import json_options, run_command
from promptbank.prompts import PROMPTS
from promptbank.records import PROMPT_INITS
from promptbank.rescore import Rescorer
from promptbank.routing import ROUTERS
from promptbank.trainer import TrainConfig

from .config import RunConfig, add_config_flags, field_help, nested_values
from .splits import DataConfig


def _run(args: argparse.Namespace) -> int:
    from .runner import format_table, run_stream

    bank = nested_values(args, "bank")
    method_cls = PROMPTS.get(bank["method"])
    prompt_options = {**(json_options(args.options) or {}), **({"rank": args.rank} if args.rank is not None else {})}
    if "rank" in prompt_options and "rank" not in {f for f in method_cls.config_class.__dataclass_fields__}:
        print(f"promptbank: error: --rank does not apply to the '{bank['method']}' module", file=sys.stderr)
        return 2
    given = {"top": args.rescore_top, "weight": args.rescore_weight}
    rescore = {**Rescorer().to_dict(), **{k: v for k, v in given.items() if v is not None}}
    cfg = RunConfig(
        stream=args.stream or ("custom" if args.tasks else RunConfig.stream),
        order=args.order,
        tasks=args.tasks.split(",") if args.tasks else None,
        baseline=args.baseline,
        backbone=args.backbone,
        bf16=args.bf16,
        seed=args.seed,
        bank=BankConfig(**bank, prompt_options=prompt_options, router={"strategy": args.router}, rescore=rescore),
        train=TrainConfig(**nested_values(args, "train")),
        data=DataConfig(**nested_values(args, "data")),
    )
    out = args.out or cfg.default_out()
    results = run_stream(
        cfg, out=out, tracking_uri=args.tracking_uri, progress=not args.quiet, fresh=args.fresh, workers=args.workers
    )
    print(f"\n{cfg.stream} · {cfg.strategy_name} · {cfg.backbone}")
    print(format_table(results))
    print(f"\nresults:  {out}/results.json")
    print(
        f"plots:    {out}/acc_matrix.png"
        + (f", {out}/routing_confusion.png" if results.get("routing_confusion") else "")
    )
    print(f"mlflow:   run {results['mlflow']['run_id']} in {results['mlflow']['tracking_uri']}")
    print(f"          browse with: {results['mlflow']['ui']}")
    return 0


def add_run_command(sub: argparse._SubParsersAction) -> None:
    """The ``run`` subcommand; its bank, training and data flags come from the config fields."""
    run = sub.add_parser("run", help="run a named task stream end to end (tracked in MLflow)")
    helps = field_help(RunConfig)
    defaults = RunConfig()
    run.add_argument("--stream", default=None, help=f"{helps['stream']} (default: {defaults.stream})")
    run.add_argument("--order", type=int, default=None, help=helps["order"])
    run.add_argument("--tasks", default=None, help="comma-separated task names instead of a named stream")
    run.add_argument(
        "--baseline",
        default=None,
        help="zero-shot | naive | ewc | lwf | replay | joint | linear-probe (default: the prompt bank)",
    )
    run.add_argument("--backbone", default=defaults.backbone, help=helps["backbone"] + " (default: %(default)s)")
    run.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the LLM under bf16 autocast (default: on a bf16 GPU only; on a CPU with AMX it is "
        "faster, with slightly different answers: BENCHMARKS.md)",
    )
    run.add_argument("--seed", type=int, default=defaults.seed, help=helps["seed"] + " (default: %(default)s)")
    bank = run.add_argument_group("bank (promptbank.BankConfig)")
    add_config_flags(
        bank,
        BankConfig,
        "bank",
        skip=("prompt_options", "router", "rescore", "seed"),
        choices={"method": PROMPTS.names(), "placement": list(PLACEMENTS), "prompt_init": list(PROMPT_INITS)},
    )
    bank.add_argument("--rank", type=int, default=None, help="rank r of a low-rank module (default: the kind's)")
    bank.add_argument(
        "--options", default=None, help='the module kind\'s options as JSON, e.g. \'{"rank": 2, "targets": "all"}\''
    )
    bank.add_argument(
        "--router",
        default=defaults.bank.router["strategy"],
        choices=ROUTERS.names(),
        help="routing strategy (docs/routing.md; default: %(default)s)",
    )
    bank.add_argument(
        "--rescore-top",
        type=int,
        default=None,
        help=f"re-score this many router candidates with their prompts (default {Rescorer().top}: keys alone)",
    )
    bank.add_argument(
        "--rescore-weight", type=float, default=None, help="weight of the prompts' confidence against the router's"
    )
    add_config_flags(
        run.add_argument_group("training (promptbank.TrainConfig)"), TrainConfig, "train", skip=("seed", "progress")
    )
    add_config_flags(run.add_argument_group("data budgets (streams.splits.DataConfig)"), DataConfig, "data")
    run.add_argument("--out", default=None, help="output folder (default runs/<stream>-<strategy>)")
    run.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite store next to --out)")
    run.add_argument("--fresh", action="store_true", help="discard a previous run in --out instead of resuming it")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--workers",
        type=int,
        default=0,
        help="train the bank's prompts first in parallel on a local Ray instance of this many CPUs, 1 per task "
        "(pip install 'promptbank[distributed]'; default: in order, no Ray)",
    )
    run.set_defaults(func=_run)


def build_parser() -> argparse.ArgumentParser:
    """The library's parser with ``run`` added."""
    parser, sub = build_library_parser()
    add_run_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the installed ``promptbank`` command."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
