"""Combining banks: the tasks of one bank added to another without training or keys again.

A task's module depends only on that task and its router statistics are sums, so banks built
apart (on other machines, by parallel workers) combine exactly: the merged bank holds the same
module tensors bit for bit and routes like one bank that had every task added in turn (up to
float32 rounding of the summed routing statistics, ``Router.merge``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .errors import BackboneMismatchError, InvalidDataError, TaskExistsError

if TYPE_CHECKING:
    from .bank import PromptBank

#: BankConfig fields that change how a stored module answers or how an input is routed: two
#: banks merge only when these agree (the default kind, options and seed only shape new tasks).
ANSWERING_FIELDS = ("n_tokens", "key_encoder", "router", "storage_dtype", "max_input_tokens", "placement")


def check_mergeable(bank: PromptBank, other: PromptBank) -> None:
    """Refuse, before anything changes, two banks whose tasks cannot live in one bank.

    Raises:
        BackboneMismatchError: another LLM (architecture or embedding weights).
        InvalidDataError: a setting in ``ANSWERING_FIELDS`` differs.
        TaskExistsError: a task name is in both banks.
    """
    a, b = bank.backbone.identity(), other.backbone.identity()
    if {k: v for k, v in a.items() if k != "name"} != {k: v for k, v in b.items() if k != "name"}:
        raise BackboneMismatchError(
            f"the banks are built on different LLMs ({a['name']!r} vs {b['name']!r}: architecture or weights differ); "
            "a module only works with the LLM it was trained against. Fix: merge banks of the same backbone"
        )
    mine, theirs = dataclasses.asdict(bank.config), dataclasses.asdict(other.config)
    mine["router"], theirs["router"] = bank.router.config_state(), other.router.config_state()
    for state in (mine["router"], theirs["router"]):
        state.pop("unknown_threshold", None)  # one bank's calibration, refitted with calibrate_unknown
    diffs = [f"{k}: {mine[k]!r} vs {theirs[k]!r}" for k in ANSWERING_FIELDS if mine[k] != theirs[k]]
    if diffs:
        raise InvalidDataError(
            "cannot merge banks built with different settings (" + "; ".join(diffs) + "). "
            "Fix: build both banks with the same BankConfig for these fields"
        )
    clashes = sorted(set(bank.tasks) & set(other.tasks))
    if clashes:
        raise TaskExistsError(
            f"both banks hold tasks named {clashes}. Fix: remove or rename them in one bank before merging"
        )


def merge_into(bank: PromptBank, other: PromptBank) -> list[str]:
    """Add every task of ``other`` to ``bank`` (``PromptBank.merge``); ``other`` is not changed.

    Returns:
        The names of the added tasks, in ``other``'s order.
    """
    check_mergeable(bank, other)
    infos = [other.task_info(n) for n in other.tasks]
    id_map = {info.task_id: bank._next_id + i for i, info in enumerate(infos)}
    bank.router.merge(other.router, id_map)  # checks the ids before changing anything
    for info in infos:
        bank._tasks[info.name] = dataclasses.replace(info, task_id=id_map[info.task_id], metadata=dict(info.metadata))
        bank.modules.put(info.name, other.modules.states[info.name])
    bank._next_id += len(infos)
    return [info.name for info in infos]
