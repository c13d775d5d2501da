"""What defines a stream run: the library's own configs nested, plus what picks the tasks.

Every default lives once: the bank's in :class:`promptbank.BankConfig`, the training's in
:class:`promptbank.TrainConfig`, the splits' in :class:`streams.splits.DataConfig`. The
``promptbank run`` flags are generated from those fields (:func:`add_config_flags`), so a
new field is a new flag with the same default and help.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptbank.backbone import DEFAULT_BACKBONE
from promptbank.bank import BankConfig
from promptbank.trainer import TrainConfig

from .splits import DataConfig


@dataclass
class RunConfig:
    """Everything that defines a stream run (and so its resume identity).

    Args:
        stream: a named stream (``streams.named.STREAMS``), or a label for ``tasks``.
        order: the stream's task order (default: its first).
        tasks: task names to run instead of the named stream's order.
        baseline: a baseline strategy instead of the prompt bank (``streams.baselines``).
        backbone: offline asset name, local folder or hub id of the frozen LLM.
        bf16: the LLM under bf16 autocast; None: on a bf16 GPU only.
        seed: seed of the data draw, the prompts' initialisation and their training.
        bank: the bank's configuration (method, prompt length, keys, router, ...).
        train: how each task's prompt trains (its ``seed`` follows ``seed``).
        data: per-class budgets of the splits.
    """

    stream: str = "offline-5"
    order: int | None = None
    tasks: list[str] | None = None
    baseline: str | None = None
    backbone: str = DEFAULT_BACKBONE
    bf16: bool | None = None
    seed: int = 0
    bank: BankConfig = field(default_factory=BankConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        for name, cls in (("bank", BankConfig), ("train", TrainConfig), ("data", DataConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):  # read back from JSON
                setattr(self, name, cls(**value))
        # one seed for the whole run, so the nested configs cannot disagree with it
        self.bank = dataclasses.replace(self.bank, seed=self.seed)
        self.train = dataclasses.replace(self.train, seed=self.seed)

    @property
    def strategy_name(self) -> str:
        return self.baseline or f"bank-{self.bank.method}"

    def budgets(self) -> dict[str, int]:
        """The budgets every result records."""
        return {
            **dataclasses.asdict(self.data),
            "steps": self.train.steps,
            "batch_size": self.train.batch_size,
            "max_input_tokens": self.bank.max_input_tokens,
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def default_out(self) -> Path:
        order = f"-o{self.order}" if self.order else ""
        return Path("runs") / f"{self.stream}{order}-{self.strategy_name}"


# -- command-line flags generated from the config fields -------------------------------------


def field_help(cls: type) -> dict[str, str]:
    """Each field's description from the "Args:" section of ``cls``'s docstring."""
    doc = cls.__doc__ or ""
    found: dict[str, str] = {}
    name = None
    for line in doc.split("Args:", 1)[-1].splitlines():
        m = re.match(r"\s{8}(\w+): (.*)", line)
        if m:
            name, found[m.group(1)] = m.group(1), m.group(2).strip()
        elif name and line.startswith(" " * 12) and line.strip():
            found[name] += " " + line.strip()
    return found


def add_config_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    prefix: str,
    skip: tuple[str, ...] = (),
    choices: dict[str, list[str]] | None = None,
) -> None:
    """One ``--flag`` per scalar field of dataclass ``cls``, stored as ``<prefix>.<field>``.

    Args:
        parser: where the flags go.
        cls: a dataclass whose defaults are the flags' defaults.
        prefix: the nested config's name in :class:`RunConfig` ("bank", "train", "data").
        skip: fields set another way (dicts, or run-level settings such as ``seed``).
        choices: allowed values of some fields (e.g. registered names).
    """
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        base = args[0] if args else kind
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        text = (helps.get(f.name, "") + " (default: %(default)s)").strip()
        if base is bool:
            parser.add_argument(
                flag, dest=f"{prefix}.{f.name}", action=argparse.BooleanOptionalAction, default=default, help=text
            )
        elif base in (int, float, str):
            parser.add_argument(
                flag,
                dest=f"{prefix}.{f.name}",
                type=base,
                default=default,
                help=text,
                metavar=None if f.name in (choices or {}) else f.name.upper(),
                choices=(choices or {}).get(f.name),
            )
        else:
            raise TypeError(f"{cls.__name__}.{f.name} ({kind}) has no flag; list it in skip and add one by hand")


def nested_values(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """The values of the flags :func:`add_config_flags` made for ``prefix``."""
    head = prefix + "."
    return {k[len(head) :]: v for k, v in vars(args).items() if k.startswith(head)}
