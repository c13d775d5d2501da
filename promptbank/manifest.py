"""A bank's manifest is untrusted input: it is checked as a whole before any file it names is read.

The checks cover the schema (every field, its type), file names (plain names inside the bank
directory: no separators, no ``..``, nothing absolute) and the cross-references between tasks,
their ids and the router. Fields this version does not know mean a newer promptbank wrote the
bank, and say so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import BankFormatError

FORMAT = "promptbank"
#: 4: a Gaussian/LDA router may store its class means in 6 bits (``mean_bits``, the default);
#: 3: each task records its ``task_type`` (text-to-text tasks have no label names); 2: each task
#: records its own module (``module``: kind and options); 1: every task had ``prompt_config``.
SCHEMA_VERSION = 4
MANIFEST = "manifest.json"
TOP_KEYS = {"format", "schema_version", "backbone", "key_encoder", "config", "prompt_config", "router",
            "next_task_id", "tasks", "files"}  # fmt: skip
TASK_KEYS = {"name", "task_id", "label_names", "template", "metadata"}
#: task fields by the schema version that introduced them
OPTIONAL_TASK_KEYS = {2: {"module"}, 3: {"task_type"}}
#: What a task answers with: one of its label words, or generated text.
TASK_TYPES = ("classification", "text-to-text")
FILE_ROLES = {"prompts": ".safetensors", "router": ".safetensors", "index": ".faiss"}
FILE_KEYS = {"file", "sha256", "bytes"}
#: a data file's name: its role, a hex digest, its suffix (what ``write_bank`` writes)
PLAIN_NAME = re.compile(r"[a-z]+-[0-9a-f]{16}\.(safetensors|faiss)")
SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fail(where: Path, what: str) -> BankFormatError:
    return BankFormatError(f"{where / MANIFEST}: {what}. Fix: restore the bank from a copy or rebuild it")


def _newer(where: Path, what: str) -> BankFormatError:
    return BankFormatError(
        f"{where / MANIFEST} has {what}, so a newer promptbank wrote it. Fix: upgrade promptbank to load this bank"
    )


def _check_type(where: Path, value: Any, ok: Callable[[Any], bool], what: str) -> None:
    if not ok(value):
        raise _fail(where, f"{what} (got {value!r:.80})")


def check_version(manifest: Any, where: Path) -> None:
    """The format marker and schema version, checked first: a newer bank gets "upgrade"."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BankFormatError(
            f"{where / MANIFEST} is not a promptbank manifest. Fix: pass a directory written by bank.save()"
        )
    version = manifest.get("schema_version")
    if not _is_int(version):
        raise _fail(where, f"schema_version must be an integer, got {version!r:.40}")
    if version > SCHEMA_VERSION:
        raise _newer(where, f"schema version {version} (this promptbank reads up to {SCHEMA_VERSION})")
    if version < 1:
        raise _fail(where, f"schema version {version} does not exist")


def check_file_name(where: Path, name: Any) -> None:
    """A data file named in the manifest must be a plain file name inside the bank directory."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        raise _fail(where, f"file name {name!r:.80} is not a bank data file name (role-<hex>.safetensors|.faiss); "
                           "names may not contain separators or point outside the bank")  # fmt: skip


def validate(manifest: Any, where: Path, config_fields: set[str]) -> None:
    """Check a parsed manifest as a whole; raise one :class:`BankFormatError` naming the first problem.

    Args:
        manifest: the parsed ``manifest.json``.
        where: the bank directory (for messages).
        config_fields: the field names of ``BankConfig`` this version knows.
    """
    check_version(manifest, where)
    unknown = set(manifest) - TOP_KEYS
    if unknown:
        raise _newer(where, f"fields {sorted(unknown)} this version does not know")
    missing = TOP_KEYS - set(manifest)
    if missing:
        raise _fail(where, f"fields {sorted(missing)} are missing")
    for key in ("backbone", "key_encoder", "config", "prompt_config", "router", "files"):
        _check_type(where, manifest[key], lambda v: isinstance(v, dict), f"{key} must be an object")
    unknown = set(manifest["config"]) - config_fields
    if unknown:
        raise _newer(where, f"config fields {sorted(unknown)} this version does not know")
    _check_type(
        where,
        manifest["prompt_config"].get("method"),
        lambda v: isinstance(v, str),
        "prompt_config.method must be a string",
    )
    _check_type(
        where, manifest["router"].get("strategy"), lambda v: isinstance(v, str), "router.strategy must be a string"
    )
    _check_type(
        where, manifest["next_task_id"], lambda v: _is_int(v) and v >= 0, "next_task_id must be an integer >= 0"
    )
    _check_files(manifest["files"], where)
    _check_tasks(manifest, where)


def _check_files(files: dict[str, Any], where: Path) -> None:
    unknown = set(files) - set(FILE_ROLES)
    if unknown:
        raise _newer(where, f"file roles {sorted(unknown)} this version does not know")
    for role in ("prompts", "router"):
        if role not in files:
            raise _fail(where, f"no {role} file is listed")
    for role, entry in files.items():
        _check_type(
            where,
            entry,
            lambda v: isinstance(v, dict) and set(v) == FILE_KEYS,
            f"files.{role} must have {sorted(FILE_KEYS)}",
        )
        check_file_name(where, entry["file"])
        if not entry["file"].endswith(FILE_ROLES[role]):
            raise _fail(where, f"files.{role} names {entry['file']!r}, not a {FILE_ROLES[role]} file")
        _check_type(
            where,
            entry["sha256"],
            lambda v: isinstance(v, str) and SHA256.fullmatch(v),
            f"files.{role}.sha256 must be a hex digest",
        )
        _check_type(where, entry["bytes"], lambda v: _is_int(v) and v >= 0, f"files.{role}.bytes must be an integer")


def _check_tasks(manifest: dict[str, Any], where: Path) -> None:
    tasks = manifest["tasks"]
    _check_type(where, tasks, lambda v: isinstance(v, list), "tasks must be a list")
    names, ids = set(), set()
    for i, task in enumerate(tasks):
        _check_type(where, task, lambda v: isinstance(v, dict), f"tasks[{i}] must be an object")
        optional = {k for v, keys in OPTIONAL_TASK_KEYS.items() if manifest["schema_version"] >= v for k in keys}
        unknown = set(task) - TASK_KEYS - optional
        if unknown:
            raise _newer(where, f"task fields {sorted(unknown)} this version does not know")
        if TASK_KEYS - set(task):
            raise _fail(where, f"tasks[{i}] lacks {sorted(TASK_KEYS - set(task))}")
        _check_type(
            where,
            task["name"],
            lambda v: isinstance(v, str) and v.strip(),
            f"tasks[{i}].name must be a non-empty string",
        )
        _check_type(where, task["task_id"], lambda v: _is_int(v) and 0 <= v < manifest["next_task_id"],
                    f"tasks[{i}].task_id must be an integer below next_task_id")  # fmt: skip
        _check_type(where, task.get("task_type", TASK_TYPES[0]), lambda v: v in TASK_TYPES,
                    f"tasks[{i}].task_type must be one of {TASK_TYPES}")  # fmt: skip
        if task.get("task_type", TASK_TYPES[0]) == "classification":
            _check_type(where, task["label_names"], lambda v: isinstance(v, list) and len(v) >= 2 and all(isinstance(x, str) for x in v),
                        f"tasks[{i}].label_names must be a list of at least 2 strings")  # fmt: skip
        else:
            _check_type(where, task["label_names"], lambda v: v == [],
                        f"tasks[{i}].label_names must be empty for a text-to-text task")  # fmt: skip
        _check_type(where, task["template"], lambda v: isinstance(v, str), f"tasks[{i}].template must be a string")
        _check_type(where, task["metadata"], lambda v: isinstance(v, dict), f"tasks[{i}].metadata must be an object")
        _check_type(where, task.get("module", {}), lambda v: isinstance(v, dict) and isinstance(v.get("method", ""), str),
                    f"tasks[{i}].module must be an object with a method name")  # fmt: skip
        if task["name"] in names or task["task_id"] in ids:
            raise _fail(where, f"task {task['name']!r} (id {task['task_id']}) appears twice")
        names.add(task["name"])
        ids.add(task["task_id"])
    routed = manifest["router"].get("tasks")
    _check_type(where, routed, lambda v: isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 and all(map(_is_int, p)) for p in v),
                "router.tasks must be a list of [task id, count] pairs")  # fmt: skip
    if {int(p[0]) for p in routed} != ids or len(routed) != len(ids):
        raise _fail(
            where, f"the router holds tasks {sorted(int(p[0]) for p in routed)} but the bank lists {sorted(ids)}"
        )
