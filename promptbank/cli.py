"""The library's commands: ``add`` and ``remove`` a task, ``train-many`` tasks in parallel, ``predict``
with a saved bank or ``serve`` it, ``info`` about one, ``export`` a task's prompt, ``merge`` banks.

The installed ``promptbank`` command is ``streams.cli.main``, which adds ``run`` (the stream
layer) to this parser; the library itself never imports ``streams``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from .backbone import PLACEMENTS
from .errors import InvalidDataError, PromptBankError
from .prompts import PROMPTS
from .records import DEFAULT_TEMPLATE, BankConfig
from .storage import atomic_write
from .trainer import TrainConfig


def _predict(args: argparse.Namespace) -> int:
    texts = list(args.text)
    if args.file:
        from .datafiles import load_examples

        texts = load_examples(args.file, args.text_column or ["text"], label_column=None).texts
    elif not texts:
        raw = sys.stdin.buffer.read()
        try:
            texts = [line for line in raw.decode("utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as exc:
            raise InvalidDataError(
                f"stdin is not valid UTF-8 (byte {exc.start}); Fix: re-encode the input as UTF-8"
            ) from None
    if not texts:
        raise InvalidDataError("no texts to answer; Fix: pass them as arguments, --file, or one per line on stdin")
    if args.out and Path(args.out).suffix.lower() not in (".jsonl", ".csv"):
        raise InvalidDataError(f"--out {args.out}: write .jsonl or .csv")
    from .bank import PromptBank  # the model loads only once the input is known to be usable

    bank = PromptBank.load(args.bank, backbone=args.backbone, bf16=args.bf16)
    rows = []
    generation = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else None
    for text, p in zip(texts, bank.predict(texts, task=args.task, generation=generation)):
        score = None if p.route_score != p.route_score else round(p.route_score, 4)
        scores = {k: round(v, 4) for k, v in p.scores.items()}
        confidence = None if p.confidence != p.confidence else round(p.confidence, 4)
        rows.append({"text": text, "task": p.task, "label": p.label, "generated": p.text, "confidence": confidence,
                     "route_score": score, "scores": scores})  # fmt: skip
    if not args.out:
        for row in rows:
            print(json.dumps(row))
        return 0
    out = Path(args.out)
    if out.suffix.lower() == ".jsonl":
        payload = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "scores": json.dumps(row["scores"])} for row in rows)
        payload = buffer.getvalue()
    atomic_write(out, payload.encode("utf-8"))
    print(f"wrote {len(rows)} answers to {out}")
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
    stored = _stored_bytes(Path(args.bank) / files["prompts"]["file"])
    by_kind: dict[str, list[int]] = {}
    print(f"tasks ({len(manifest['tasks'])}):")
    for t in manifest["tasks"]:
        kind = t.get("module", manifest["prompt_config"]).get("method")
        size = stored.get(t["task_id"], 0)
        by_kind.setdefault(kind, []).append(size)
        if t.get("task_type") == "text-to-text":
            answers = f"text-to-text  best_val_logp={t['metadata'].get('best_val_logp')}"
        else:
            answers = f"labels={t['label_names']}  best_val_acc={t['metadata'].get('best_val_acc')}"
        print(f"  {t['name']:<20} {kind:<6} {size:>9} B  {answers}")
    print(f"size: {total} bytes on disk, {total / n:.0f} bytes per task")
    if by_kind:
        print("module bytes per task: " + ", ".join(f"{k} {sum(v) / len(v):.0f}" for k, v in sorted(by_kind.items())))
    return 0


def _stored_bytes(prompts_file: Path) -> dict[int, int]:
    """Bytes of each task's module tensors, read from the safetensors header alone."""
    from safetensors import safe_open

    sizes: dict[int, int] = {}
    with safe_open(prompts_file, framework="pt") as f:
        for key in f.keys():
            part = f.get_slice(key)
            numel = int(np.prod(part.get_shape())) if part.get_shape() else 1
            width = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}.get(part.get_dtype(), 4)
            task = int(key.split(".", 1)[0][4:])
            sizes[task] = sizes.get(task, 0) + numel * width
    return sizes


def _export(args: argparse.Namespace) -> int:
    from .bank import PromptBank

    bank = PromptBank.load(args.bank, backbone=args.backbone)
    out = bank.export_peft(args.task, args.out)
    print(
        f"wrote a PEFT prompt-tuning adapter for {args.task!r} to {out} (PeftModel.from_pretrained(model, {str(out)!r}))"
    )
    return 0


def json_options(text: str | None) -> dict | None:
    """A module kind's options from a JSON object on the command line (None when not given)."""
    if text is None:
        return None
    try:
        options = json.loads(text)
    except ValueError as exc:
        raise InvalidDataError(f"--options must be a JSON object, e.g. '{{\"rank\": 2}}' ({exc})") from None
    if not isinstance(options, dict):
        raise InvalidDataError(f"--options must be a JSON object, e.g. '{{\"rank\": 2}}', got {text!r}")
    return options


def _open_bank(args: argparse.Namespace, folder: Path):
    """The bank in ``folder``, or a new one with the command's bank options when there is none."""
    from .bank import PromptBank

    if (folder / "manifest.json").exists():
        return PromptBank.load(folder, backbone=args.backbone)
    return PromptBank(
        args.backbone,
        method=args.method or BankConfig.method,
        n_tokens=args.n_tokens,
        placement=args.placement,
        key_encoder=args.key_encoder,
        key_classes=args.key_classes,
    )


def _task_from_data(args: argparse.Namespace, source: str) -> tuple[dict, str]:
    """``add_task``'s keywords for one data file or hub dataset, split into training and validation
    examples at random (``--val-fraction``, ``--seed``), and a phrase saying what was read."""
    from .datafiles import load_examples
    from .trainer import TrainConfig

    answer_column = args.target_column or args.label_column
    examples = load_examples(source, args.text_column or ["text"], answer_column, args.split)
    options = json_options(args.options)
    n_val = int(len(examples.texts) * args.val_fraction)
    order = np.random.default_rng(args.seed).permutation(len(examples.texts))
    val, train = order[:n_val].tolist(), order[n_val:].tolist()
    answers = "targets" if args.target_column else "labels"
    kwargs = {
        "texts": [examples.texts[i] for i in train],
        "template": args.template,
        "val_texts": [examples.texts[i] for i in val] or None,
        answers: [examples.labels[i] for i in train],
        f"val_{answers}": [examples.labels[i] for i in val] or None,
        "train_config": TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed),
        **({"method": args.method, "module_options": options} if args.method or options else {}),
    }
    return kwargs, f"{len(train)} training and {len(val)} validation examples of {examples.source}"


def _add(args: argparse.Namespace) -> int:
    folder = Path(args.bank)
    task, read = _task_from_data(args, args.data)
    bank = _open_bank(args, folder)
    info = bank.add_task(args.name, **task)
    bank.save(folder)
    if info.generates:
        answered = f"text-to-text; best validation log-prob per token {info.metadata.get('best_val_logp')}"
    else:
        answered = f"labels {info.label_names}; best validation accuracy {info.metadata.get('best_val_acc')}"
    print(f"added {args.name!r} ({read}; {answered}) to {folder}")
    return 0


def _data_sources(args: argparse.Namespace) -> dict[str, str]:
    """Task name -> data source, from ``--task NAME=SOURCE`` and the files of ``--data-dir`` (named by stem)."""
    from .datafiles import FORMATS

    sources: dict[str, str] = {}
    for item in args.task or []:
        name, sep, source = item.partition("=")
        if not sep or not name or not source:
            raise InvalidDataError(f"--task {item!r}: write NAME=FILE or NAME=HUB_DATASET")
        sources[name] = source
    if args.data_dir:
        folder = Path(args.data_dir)
        if not folder.is_dir():
            raise InvalidDataError(f"--data-dir {folder}: not a folder")
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in FORMATS and path.stem not in sources:
                sources[path.stem] = str(path)
    if not sources:
        raise InvalidDataError(
            f"no tasks to train; Fix: --task NAME=FILE (repeat it) or --data-dir holding {'/'.join(sorted(FORMATS))} files"
        )
    return sources


def _train_many(args: argparse.Namespace) -> int:
    from .distributed import TaskSpec, train_many

    folder = Path(args.bank)
    sources = _data_sources(args)
    specs = []
    for name, source in sources.items():  # every file is read and checked before any training
        task, _ = _task_from_data(args, source)
        specs.append(TaskSpec(name, task.pop("texts"), task.pop("labels", None), options=task))
    bank = _open_bank(args, folder)
    result = train_many(
        bank,
        specs,
        folder,
        workers=args.workers,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        retries=args.retries,
        address=args.address,
    )
    print(f"added {len(result.added)} tasks to {folder} ({len(bank.tasks)} in all)")
    for name, reason in result.failed.items():
        print(f"failed {name}: {reason}", file=sys.stderr)
    return 1 if result.failed else 0


def _serve(args: argparse.Namespace) -> int:
    from .serving.ray_serve import bank_app

    app = bank_app(
        args.bank,
        backbone=args.backbone,
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_ms / 1000,
        num_replicas=args.replicas,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
    )
    from ray import serve

    serve.start(http_options={"host": args.host, "port": args.port})
    print(
        f'serving {args.bank} at http://{args.host}:{args.port}/ (POST {{"text": ..., "task": optional}}); Ctrl-C stops'
    )
    serve.run(app, blocking=True)
    return 0


def _remove(args: argparse.Namespace) -> int:
    from .bank import PromptBank

    bank = PromptBank.load(args.bank, backbone=args.backbone)
    bank.remove_task(args.name)
    bank.save(args.bank)
    print(f"removed {args.name!r} from {args.bank}; {len(bank.tasks)} tasks left")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from .bank import PromptBank
    from .errors import BackboneMismatchError

    merged = PromptBank.load(args.banks[0], backbone=args.backbone)
    for path in args.banks[1:]:
        try:  # one LLM and key encoder in memory for every bank
            other = PromptBank.load(path, backbone=merged.backbone, key_encoder=merged.key_encoder)
        except BackboneMismatchError as exc:
            raise BackboneMismatchError(f"cannot merge {path} into {args.banks[0]}: {exc}") from None
        added = merged.merge(other)
        print(f"{path}: {len(added)} tasks added")
    merged.save(args.out)
    print(f"wrote {args.out}: {len(merged.tasks)} tasks")
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
    predict.add_argument("--file", default=None, help="read the texts from a .csv/.tsv/.jsonl/.parquet file")
    predict.add_argument("--text-column", action="append", help="the file's text column(s) (default: text)")
    predict.add_argument("--out", default=None, help="write the answers to a .jsonl or .csv file")
    predict.add_argument(
        "--max-new-tokens", type=int, default=None, help="longest generated answer of a text-to-text task"
    )
    predict.add_argument("text", nargs="*", help="texts (default: one per line on stdin)")
    predict.set_defaults(func=_predict)

    info = sub.add_parser("info", help="describe a saved bank")
    info.add_argument("bank")
    info.set_defaults(func=_info)

    add = sub.add_parser("add", help="train a task from a data file or hub dataset into a bank (created if missing)")
    add.add_argument("--bank", required=True, help="the bank folder; created with the options below if missing")
    add.add_argument("--name", required=True, help="the task's name")
    add.add_argument("--data", required=True, help="a .csv/.tsv/.jsonl/.parquet file or a hub dataset name")
    _task_options(add)
    add.set_defaults(func=_add)

    many = sub.add_parser(
        "train-many", help="train many tasks in parallel on Ray and merge them into a bank (created if missing)"
    )
    many.add_argument("--bank", required=True, help="the bank folder; tasks already in it are skipped")
    many.add_argument("--task", action="append", metavar="NAME=SOURCE", help="a task and its data file or hub dataset")
    many.add_argument("--data-dir", default=None, help="a folder of data files: one task per file, named by its stem")
    many.add_argument("--workers", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    many.add_argument("--num-cpus", type=float, default=1.0, help="CPUs (and torch threads) per task")
    many.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per task; a fraction shares one GPU")
    many.add_argument("--retries", type=int, default=2, help="retries of a task whose worker died")
    many.add_argument("--address", default=None, help="an existing Ray cluster (default: start a local one)")
    _task_options(many)
    many.set_defaults(func=_train_many)

    serve = sub.add_parser("serve", help="serve a saved bank over HTTP on Ray Serve, batching requests across tasks")
    serve.add_argument("--bank", required=True)
    serve.add_argument("--backbone", default=None)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--replicas", type=int, default=1, help="replicas, each with its own copy of the LLM")
    serve.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help="most requests per forward (default: 16 with --num-gpus, 1 on CPUs, where batching measured slower)",
    )
    serve.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long a batch waits to fill")
    serve.add_argument("--num-cpus", type=float, default=1.0, help="CPUs (torch threads) per replica")
    serve.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica; a fraction shares one GPU")
    serve.set_defaults(func=_serve)

    remove = sub.add_parser("remove", help="remove a task from a bank")
    remove.add_argument("--bank", required=True)
    remove.add_argument("--backbone", default=None)
    remove.add_argument("name")
    remove.set_defaults(func=_remove)

    export = sub.add_parser("export", help="write one task's prompt in another tool's format")
    export.add_argument("--bank", required=True)
    export.add_argument("--task", required=True)
    export.add_argument("--format", choices=["peft"], default="peft", help="peft: a prompt-tuning adapter folder")
    export.add_argument("--backbone", default=None)
    export.add_argument("out", help="a new folder")
    export.set_defaults(func=_export)

    merge = sub.add_parser("merge", help="combine saved banks into one (no retraining; routing statistics summed)")
    merge.add_argument("banks", nargs="+", help="bank folders; the first one's tasks come first")
    merge.add_argument("--out", required=True, help="where the merged bank is written (may be the first bank)")
    merge.add_argument("--backbone", default=None)
    merge.set_defaults(func=_merge)
    return parser, sub


def _task_options(parser: argparse.ArgumentParser) -> None:
    """How a task is read from its data and trained, and a new bank's settings (``add`` and ``train-many``)."""
    parser.add_argument("--text-column", action="append", help="input column (repeat to join several; default: text)")
    parser.add_argument("--label-column", default="label")
    parser.add_argument(
        "--target-column", default=None, help="the answer column of a text-to-text task (instead of --label-column)"
    )
    parser.add_argument("--split", default="train", help="split of a hub dataset (default: %(default)s)")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="how an input is shown; {text} marks it")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share kept for checkpoint choice")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default=None, help="a new bank's LLM (default: SmolLM2-135M, offline)")
    parser.add_argument(
        "--method",
        default=None,
        help=f"the task's module kind ({', '.join(PROMPTS.names())}); default: the bank's "
        f"(a new bank's: {BankConfig.method})",
    )
    parser.add_argument(
        "--options", default=None, help='the kind\'s options as JSON, e.g. \'{"rank": 2, "targets": "all"}\''
    )
    parser.add_argument("--n-tokens", type=int, default=BankConfig.n_tokens, help="a new bank's prompt length")
    parser.add_argument("--key-encoder", default=BankConfig.key_encoder, help="a new bank's key encoder")
    parser.add_argument("--placement", default=BankConfig.placement, choices=PLACEMENTS, help="a new bank's placement")
    parser.add_argument(
        "--key-classes",
        action=argparse.BooleanOptionalAction,
        default=BankConfig.key_classes,
        help="a new bank's answers also weigh the router's class posterior (BankConfig.key_classes)",
    )


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
