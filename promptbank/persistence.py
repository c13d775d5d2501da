"""Saving and loading a ``PromptBank``: what its manifest holds, and the checks that a loaded
bank's parts agree (config, backbone, key encoder, router, prompt tensors) before it answers.

The directory format and its atomic, locked writes are ``storage``'s; this module maps a bank
onto them. It is the bank's own persistence, so it reads the bank's private fields.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import storage
from .backbone import FrozenLM, load_backbone
from .errors import BackboneMismatchError, BankFormatError, InvalidDataError
from .keys import KeyEncoder, make_key_encoder
from .prompts import prompt_from_config
from .records import FIELDS_OF_OLDER_BANKS, BankConfig, TaskInfo
from .routing import router_from_state

if TYPE_CHECKING:
    from .bank import PromptBank


def save_bank(bank: PromptBank, path: Path) -> Path:
    """Write ``bank`` to ``path`` (``PromptBank.save``)."""
    return storage.write_bank(path, *_bank_parts(bank))


def saved_bytes(bank: PromptBank) -> dict[str, int]:
    """Bytes that saving ``bank`` writes, by part: ``prompts``, ``routing`` and ``manifest``.

    It encodes the whole bank as a save would (no disk writes), so it costs about what a save costs.
    """
    named, manifest = storage.encode_bank(*_bank_parts(bank))
    routing = sum(len(data) for role, (_, data, _) in named.items() if role != "prompts")
    return {"prompts": len(named["prompts"][1]), "routing": routing, "manifest": len(manifest)}


def _bank_parts(bank: PromptBank) -> tuple[dict, dict, dict]:
    """What a save stores: the manifest, the prompt tensors, the router's arrays."""
    router_config, router_arrays = bank.router.state()
    manifest = {
        "backbone": bank.backbone.identity(),
        "key_encoder": bank.key_encoder.identity(),
        "config": dataclasses.asdict(bank.config),
        "prompt_config": bank.new_prompt().config_state(),
        "router": router_config,
        "next_task_id": bank._next_id,
        "tasks": [dataclasses.asdict(t) for t in bank._tasks.values()],
    }
    tensors = {f"task{bank._tasks[n].task_id}.{k}": v for n, st in bank.modules.states.items() for k, v in st.items()}
    return manifest, tensors, router_arrays


def load_bank(
    cls: type[PromptBank],
    path: Path,
    backbone: FrozenLM | str | None,
    key_encoder: KeyEncoder | None,
    bf16: bool | None,
) -> PromptBank:
    """Read and check a bank directory (``PromptBank.load``)."""
    fields = {f.name for f in dataclasses.fields(BankConfig)}
    manifest, tensors, router_arrays = storage.read_bank(path, config_fields=fields)
    try:
        config = BankConfig(**{**FIELDS_OF_OLDER_BANKS, **manifest["config"]})
    except (TypeError, InvalidDataError) as exc:
        raise BankFormatError(f"{path}: the saved bank config is not valid ({exc}). Fix: rebuild the bank") from None
    recorded = manifest["backbone"]
    chosen = backbone is not None
    backbone = recorded.get("name") if backbone is None else backbone
    if not isinstance(backbone, (str, FrozenLM)):
        raise BankFormatError(f"{path}: the manifest records no backbone name. Fix: pass backbone= explicitly")
    backbone = load_backbone(backbone, bf16=bf16) if isinstance(backbone, str) else backbone
    storage.check_backbone(recorded, backbone.identity(), chosen)
    bank = cls.__new__(cls)
    bank.backbone, bank.config = backbone, config
    bank.key_encoder = key_encoder or make_key_encoder(config.key_encoder, backbone=backbone)
    if bank.key_encoder.identity() != manifest["key_encoder"]:
        raise BackboneMismatchError(
            f"bank keys were made by {manifest['key_encoder']} but the key encoder is {bank.key_encoder.identity()}. "
            "Fix: load without key_encoder= (the bank rebuilds its own) or pass the same encoder"
        )
    bank.router = router_from_state(manifest["router"], router_arrays)
    bank._next_id = int(manifest["next_task_id"])
    bank._init_storage()
    infos = [TaskInfo(**t) for t in manifest["tasks"]]
    expected = {}
    shapes_by_config: dict[str, dict[str, tuple[int, ...]]] = {}
    for info in infos:
        if not info.module:  # schema 1: every task has the bank's kind
            info.module = dict(manifest["prompt_config"])
        key = json.dumps({k: v for k, v in info.module.items() if k != "seed"}, sort_keys=True)
        if key not in shapes_by_config:
            try:
                module = prompt_from_config(info.module)
            except (BankFormatError, InvalidDataError) as exc:
                raise BankFormatError(
                    f"{path}: task {info.name!r} has a module config that is not valid ({exc})"
                ) from None
            shapes_by_config[key] = {k: tuple(v.shape) for k, v in module.trainable_state().items()}
        expected[info.task_id] = shapes_by_config[key]
    states = storage.task_states(tensors, {i.task_id: i.name for i in infos}, expected, path)
    for info in infos:
        bank._tasks[info.name] = info
        bank.modules.put(info.name, states[info.task_id])
    return bank
