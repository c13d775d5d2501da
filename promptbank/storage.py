"""On-disk bank format: a directory with a JSON manifest, safetensors and a FAISS index file.

Atomicity: data files are content-addressed (``prompts-<sha>.safetensors``) and written via
temp file + fsync + rename; the manifest, which names them, is replaced last. Until that
rename the old manifest still points at the old, untouched files, so a crash at any moment
leaves the previous bank loadable. Nothing is ever unpickled.

Concurrency: writers to one directory are serialised by an OS file lock (``.lock``, via
``filelock``), so a save never deletes a file another save's manifest names; the last
complete save wins. Readers take no lock: if a file vanishes or changes under them because a
save replaced the manifest meanwhile, they read the new manifest and try again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from . import manifest as schema
from .errors import BackboneMismatchError, BankFormatError, InvalidDataError
from .manifest import FORMAT, MANIFEST, SCHEMA_VERSION

INDEX_ARRAY = "index"  # router array written as its own .faiss file (faiss.write_index format)
LOCK = ".lock"
#: seconds a save waits for another save of the same bank before giving up
LOCK_TIMEOUT_S = 600.0
#: times a reader re-reads a manifest that a concurrent save replaced while it read
READ_ATTEMPTS = 5


def _umask() -> int:
    """The process umask, read without changing it (Linux), else by the set-and-restore idiom."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and rename: a kill leaves the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; bank files follow the umask like any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blobs(tensors: dict[str, torch.Tensor], router_arrays: dict[str, np.ndarray]) -> dict[str, tuple[str, bytes]]:
    empty = save_safetensors({"_empty": torch.zeros(0)})
    arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in router_arrays.items() if k != INDEX_ARRAY}
    blobs = {
        "prompts": ("prompts-{}.safetensors", save_safetensors(tensors) if tensors else empty),
        "router": ("router-{}.safetensors", save_safetensors(arrays) if arrays else empty),
    }
    if INDEX_ARRAY in router_arrays:
        blobs["index"] = ("keys-{}.faiss", np.ascontiguousarray(router_arrays[INDEX_ARRAY], dtype=np.uint8).tobytes())
    return blobs


def encode_bank(
    manifest: dict[str, Any], tensors: dict[str, torch.Tensor], router_arrays: dict[str, np.ndarray]
) -> tuple[dict[str, tuple[str, bytes, str]], bytes]:
    """The exact bytes a save writes: each data file by role (file name, content, SHA-256), then
    the manifest.

    Files are named by a prefix of their SHA-256, so an unchanged part keeps its file across saves.
    """
    named: dict[str, tuple[str, bytes, str]] = {}
    files: dict[str, dict[str, Any]] = {}
    for role, (pattern, data) in _blobs(tensors, router_arrays).items():
        digest = _sha(data)
        named[role] = (pattern.format(digest[:16]), data, digest)
        files[role] = {"file": named[role][0], "sha256": digest, "bytes": len(data)}
    full = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **manifest, "files": files}
    return named, json.dumps(full, indent=2).encode()


def write_bank(
    path: Path, manifest: dict[str, Any], tensors: dict[str, torch.Tensor], router_arrays: dict[str, np.ndarray]
) -> Path:
    """Write a bank directory atomically, holding the directory's writer lock.

    Raises:
        InvalidDataError: ``path`` is an existing file, or another save held the lock too long.
    """
    if path.exists() and not path.is_dir():
        raise InvalidDataError(f"cannot save a bank to {path}: it is a file. Fix: pass a directory path")
    path.mkdir(parents=True, exist_ok=True)
    named, manifest_bytes = encode_bank(manifest, tensors, router_arrays)
    try:
        with FileLock(str(path / LOCK), timeout=LOCK_TIMEOUT_S):
            _remove_stale_temp_files(path)
            for name, data, digest in named.values():
                if not _holds(path / name, digest):
                    atomic_write(path / name, data)
            atomic_write(path / MANIFEST, manifest_bytes)
            _fsync_dir(path)
            keep = {name for name, _, _ in named.values()}
            for stale in path.iterdir():  # older generations, only once the new manifest is in place
                if stale.is_file() and stale.name not in keep and stale.suffix in (".safetensors", ".faiss"):
                    stale.unlink(missing_ok=True)
    except Timeout:
        raise InvalidDataError(
            f"another process has been saving to {path} for {LOCK_TIMEOUT_S:.0f} s. "
            f"Fix: wait for it, or remove {path / LOCK} if no save is running"
        ) from None
    return path


def _holds(file: Path, digest: str) -> bool:
    """Whether ``file`` exists with exactly the content ``digest`` names (a damaged copy is rewritten)."""
    return file.is_file() and _sha(file.read_bytes()) == digest


def _remove_stale_temp_files(path: Path) -> None:
    """Temp files of saves that were killed; safe to delete while the writer lock is held."""
    for tmp in path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_bank(
    path: Path, config_fields: set[str] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Read and check a bank directory: the manifest first, as a whole, then the files it names.

    Args:
        path: the bank directory.
        config_fields: ``BankConfig``'s field names (unknown config fields then mean a newer writer).

    Returns:
        (manifest, prompt tensors, router arrays).

    Raises:
        BankFormatError: no bank there, a bad manifest, a missing, damaged or unreadable file.
    """
    if not path.exists():
        raise BankFormatError(f"there is no bank at {path}: the directory does not exist. Fix: check the path")
    if not path.is_dir():
        raise BankFormatError(f"{path} is a file, not a bank directory. Fix: pass the directory given to bank.save()")
    for attempt in range(READ_ATTEMPTS):
        raw = _read_manifest_bytes(path)
        manifest = _parse(raw, path)
        schema.validate(manifest, path, config_fields if config_fields is not None else set(manifest["config"]))
        blobs, problem = _read_files(path, manifest)
        if problem is None:
            break
        if _read_manifest_bytes(path) == raw or attempt == READ_ATTEMPTS - 1:
            raise BankFormatError(problem)  # the manifest did not change: the damage is real
        time.sleep(0.01 * (attempt + 1))  # a save replaced the manifest meanwhile: read the new one
    try:
        tensors = {k: v for k, v in load_safetensors(blobs["prompts"]).items() if k != "_empty"}
        router = {k: v.numpy() for k, v in load_safetensors(blobs["router"]).items() if k != "_empty"}
    except Exception as exc:  # safetensors header errors
        raise BankFormatError(
            f"bank tensors in {path} cannot be read ({exc}). Fix: restore the bank from a copy"
        ) from None
    if "index" in blobs:
        router[INDEX_ARRAY] = np.frombuffer(blobs["index"], dtype=np.uint8).copy()
    return manifest, tensors, router


def _read_manifest_bytes(path: Path) -> bytes:
    try:
        return (path / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise BankFormatError(
            f"{path} is not a promptbank bank: {MANIFEST} is missing. Fix: pass the directory given to bank.save()"
        ) from None


def _parse(raw: bytes, path: Path) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BankFormatError(
            f"{path / MANIFEST} is damaged ({exc}). Fix: restore the bank from a copy or rebuild it"
        ) from None


def _read_files(path: Path, manifest: dict[str, Any]) -> tuple[dict[str, bytes], str | None]:
    """The bytes of every file the manifest names, or the first problem found."""
    blobs: dict[str, bytes] = {}
    root = path.resolve()
    for role, entry in manifest["files"].items():
        file = path / entry["file"]
        if file.is_symlink() and file.resolve().parent != root:
            return (
                blobs,
                f"bank file {file.name} ({role}) is a link that leaves the bank directory. Fix: replace it by the file",
            )
        try:
            data = file.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return blobs, f"bank file {file.name} ({role}) is missing. Fix: restore the bank directory from a copy"
        if _sha(data) != entry["sha256"]:
            return blobs, f"bank file {file.name} ({role}) is damaged: checksum mismatch. Fix: restore it from a copy"
        blobs[role] = data
    return blobs, None


def task_states(
    tensors: dict[str, torch.Tensor],
    names: dict[int, str],
    expected: dict[int, dict[str, tuple[int, ...]]],
    path: Path,
) -> dict[int, dict[str, torch.Tensor]]:
    """The module tensors of each listed task (``task<id>.<name>``), checked against its ``expected`` shapes.

    Raises:
        BankFormatError: a tensor of no listed task, or a task whose tensors have other shapes.
    """
    by_id: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        head, _, name = key.partition(".")
        if not (head.startswith("task") and head[4:].isdigit() and name):
            raise BankFormatError(f"{path}: prompt tensor {key!r} does not belong to a task. Fix: restore the bank")
        by_id.setdefault(int(head[4:]), {})[name] = value
    unknown = sorted(set(by_id) - set(names))
    if unknown:
        raise BankFormatError(f"{path}: prompt tensors of task ids {unknown} belong to no listed task")
    for task_id, task in names.items():
        shapes = {k: tuple(v.shape) for k, v in by_id.get(task_id, {}).items()}
        if shapes != expected[task_id]:
            raise BankFormatError(
                f"{path}: task {task!r} has tensors {shapes}, but its module config needs {expected[task_id]}. "
                "Fix: restore the bank from a copy"
            )
    return {task_id: by_id[task_id] for task_id in names}


def check_backbone(recorded: dict[str, Any], current: dict[str, Any], chosen: bool) -> None:
    """Refuse a bank whose prompts were trained for another LLM.

    Args:
        recorded: the backbone identity in the manifest.
        current: the loaded backbone's identity.
        chosen: whether the caller picked the backbone (else it was the recorded one).
    """
    structural = ("model_type", "hidden_size", "vocab_size", "num_layers")
    diffs = [
        f"{k}: bank {recorded.get(k)!r} vs loaded {current.get(k)!r}"
        for k in structural
        if recorded.get(k) != current.get(k)
    ]
    a, b = recorded.get("embedding_checksum"), current.get("embedding_checksum")
    sha_a, sha_b = recorded.get("embedding_sha256"), current.get("embedding_sha256")
    if sha_a is not None and sha_b is not None:  # exact; banks written before it have the checksum only
        if sha_a != sha_b:
            diffs.append(f"embedding weights differ (sha256 {sha_a[:12]}… vs {sha_b[:12]}…)")
    elif a is not None and b is not None and abs(a - b) > 1e-3 * max(abs(a), 1e-8):
        diffs.append(f"embedding weights differ (checksum {a} vs {b})")
    if diffs:
        fix = (
            f"load it without backbone= (it records {recorded.get('name')!r}) or with that model"
            if chosen
            else f"the model found under the name {recorded.get('name')!r} is not the one the bank was built on; "
            "pass backbone= with the original model"
        )
        raise BackboneMismatchError(
            f"this bank was built on backbone {recorded.get('name')!r}, not on {current.get('name')!r} ("
            + "; ".join(diffs)
            + f"). Fix: {fix}"
        )
