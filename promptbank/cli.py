"""The library's commands: ``predict`` with a saved bank, ``info`` about one, ``export`` a task's prompt.

The installed ``promptbank`` command is ``streams.cli.main``, which adds ``run`` (the stream
layer) to this parser; the library itself never imports ``streams``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from .errors import InvalidDataError, PromptBankError


def _predict(args: argparse.Namespace) -> int:
    texts = list(args.text)
    if not texts:
        raw = sys.stdin.buffer.read()
        try:
            texts = [line for line in raw.decode("utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as exc:
            raise InvalidDataError(
                f"stdin is not valid UTF-8 (byte {exc.start}); Fix: re-encode the input as UTF-8"
            ) from None
    if not texts:
        raise InvalidDataError("no texts to answer; Fix: pass them as arguments or one per line on stdin")
    from .bank import PromptBank  # the model loads only once the input is known to be usable

    bank = PromptBank.load(args.bank, backbone=args.backbone, bf16=args.bf16)
    for text, p in zip(texts, bank.predict(texts, task=args.task)):
        score = None if p.route_score != p.route_score else round(p.route_score, 4)
        print(
            json.dumps(
                {
                    "text": text,
                    "task": p.task,
                    "label": p.label,
                    "route_score": score,
                    "scores": {k: round(v, 4) for k, v in p.scores.items()},
                }
            )
        )
    return 0


def _info(args: argparse.Namespace) -> int:
    from .storage import read_bank

    manifest, _, _ = read_bank(Path(args.bank))
    files = manifest["files"]
    total = sum(f["bytes"] for f in files.values()) + (Path(args.bank) / "manifest.json").stat().st_size
    n = max(1, len(manifest["tasks"]))
    backbone, cfg = manifest["backbone"], manifest["config"]
    print(f"bank: {args.bank}  (schema {manifest['schema_version']})")
    print(f"backbone: {backbone['name']} ({backbone['model_type']}, d={backbone['hidden_size']})")
    print(
        f"method: {cfg['method']} n={cfg['n_tokens']} {cfg['prompt_options']} · keys: {cfg['key_encoder']} · "
        f"router: {manifest['router'].get('strategy')}"
    )
    print(f"tasks ({len(manifest['tasks'])}):")
    for t in manifest["tasks"]:
        print(f"  {t['name']:<20} labels={t['label_names']}  best_val_acc={t['metadata'].get('best_val_acc')}")
    print(f"size: {total} bytes on disk, {total / n:.0f} bytes per task")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .bank import PromptBank

    bank = PromptBank.load(args.bank, backbone=args.backbone)
    out = bank.export_peft(args.task, args.out)
    print(
        f"wrote a PEFT prompt-tuning adapter for {args.task!r} to {out} (PeftModel.from_pretrained(model, {str(out)!r}))"
    )
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The ``promptbank`` parser with the library's commands, and its subparsers (for more)."""
    parser = argparse.ArgumentParser(
        prog="promptbank", description="Continual learning with a frozen LLM and a bank of tiny prompts."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    predict = sub.add_parser("predict", help="answer texts with a saved bank (routed unless --task)")
    predict.add_argument("--bank", required=True)
    predict.add_argument("--task", default=None)
    predict.add_argument("--backbone", default=None)
    predict.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the LLM under bf16 autocast (default: on a bf16 GPU only), e.g. to answer as a --bf16 run trained",
    )
    predict.add_argument("text", nargs="*", help="texts (default: one per line on stdin)")
    predict.set_defaults(func=_predict)

    info = sub.add_parser("info", help="describe a saved bank")
    info.add_argument("bank")
    info.set_defaults(func=_info)

    export = sub.add_parser("export", help="write one task's prompt in another tool's format")
    export.add_argument("--bank", required=True)
    export.add_argument("--task", required=True)
    export.add_argument("--format", choices=["peft"], default="peft", help="peft: a prompt-tuning adapter folder")
    export.add_argument("--backbone", default=None)
    export.add_argument("out", help="a new folder")
    export.set_defaults(func=_export)
    return parser, sub


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; bad input prints one line and exits 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message="no QP solver")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PromptBankError as exc:
        print(f"promptbank: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """``python -m promptbank.cli``: the library's commands only (``run`` is in ``streams.cli``)."""
    return run_command(build_parser()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
