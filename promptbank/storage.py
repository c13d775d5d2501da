"""On-disk bank format: a directory with a JSON manifest, safetensors and a FAISS index file.

Atomicity: data files are content-addressed (``prompts-<sha>.safetensors``) and written via
temp file + fsync + rename; the manifest, which names them, is replaced last. Until that
rename the old manifest still points at the old, untouched files, so a crash at any moment
leaves the previous bank loadable. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .errors import BackboneMismatchError, BankFormatError

FORMAT = "promptbank"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
INDEX_ARRAY = "index"  # router array written as its own .faiss file (faiss.write_index format)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def write_bank(
    path: Path, manifest: dict[str, Any], tensors: dict[str, torch.Tensor], router_arrays: dict[str, np.ndarray]
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in router_arrays.items() if k != INDEX_ARRAY}
    blobs = {
        "prompts": (
            "prompts-{}.safetensors",
            save_safetensors(tensors) if tensors else save_safetensors({"_empty": torch.zeros(0)}),
        ),
        "router": (
            "router-{}.safetensors",
            save_safetensors({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
            if arrays
            else save_safetensors({"_empty": torch.zeros(0)}),
        ),
    }
    if INDEX_ARRAY in router_arrays:
        blobs["index"] = ("keys-{}.faiss", np.ascontiguousarray(router_arrays[INDEX_ARRAY], dtype=np.uint8).tobytes())
    files: dict[str, dict[str, str]] = {}
    for role, (pattern, data) in blobs.items():
        digest = _sha(data)
        name = pattern.format(digest[:16])
        if not (path / name).exists():
            _atomic_write(path / name, data)
        files[role] = {"file": name, "sha256": digest, "bytes": len(data)}
    full = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **manifest, "files": files}
    _atomic_write(path / MANIFEST, json.dumps(full, indent=2, sort_keys=False).encode())
    _fsync_dir(path)
    keep = {f["file"] for f in files.values()} | {MANIFEST}
    for stale in path.iterdir():  # old generations, only after the new manifest is in place
        if stale.is_file() and stale.name not in keep and stale.suffix in (".safetensors", ".faiss"):
            stale.unlink(missing_ok=True)
    return path


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


def read_bank(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, np.ndarray]]:
    if not (path / MANIFEST).is_file():
        raise BankFormatError(
            f"{path} is not a promptbank bank: {MANIFEST} is missing. Fix: pass the directory given to bank.save()"
        )
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BankFormatError(
            f"{path / MANIFEST} is damaged ({exc}). Fix: restore the bank from a copy or rebuild it"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BankFormatError(f"{path / MANIFEST} is not a promptbank manifest")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BankFormatError(
            f"bank schema version {version} is not supported (this promptbank reads {SCHEMA_VERSION}); upgrade promptbank"
        )
    blobs: dict[str, bytes] = {}
    for role, entry in manifest.get("files", {}).items():
        file = path / entry["file"]
        if not file.is_file():
            raise BankFormatError(
                f"bank file {file.name} ({role}) is missing. Fix: restore the bank directory from a copy"
            )
        data = file.read_bytes()
        if _sha(data) != entry["sha256"]:
            raise BankFormatError(
                f"bank file {file.name} ({role}) is damaged: checksum mismatch. Fix: restore it from a copy"
            )
        blobs[role] = data
    try:
        tensors = {k: v for k, v in load_safetensors(blobs["prompts"]).items() if k != "_empty"}
        router = {k: v.numpy() for k, v in load_safetensors(blobs["router"]).items() if k != "_empty"}
    except KeyError as exc:
        raise BankFormatError(f"bank manifest lists no {exc} file") from None
    except Exception as exc:  # safetensors header errors
        raise BankFormatError(f"bank tensors cannot be read ({exc})") from None
    if "index" in blobs:
        router[INDEX_ARRAY] = np.frombuffer(blobs["index"], dtype=np.uint8).copy()
    return manifest, tensors, router


def check_backbone(recorded: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse a bank whose prompts were trained for another LLM."""
    structural = ("model_type", "hidden_size", "vocab_size", "num_layers")
    diffs = [
        f"{k}: bank {recorded.get(k)!r} vs loaded {current.get(k)!r}"
        for k in structural
        if recorded.get(k) != current.get(k)
    ]
    a, b = recorded.get("embedding_checksum"), current.get("embedding_checksum")
    if a is not None and b is not None and abs(a - b) > 1e-3 * max(abs(a), 1e-8):
        diffs.append(f"embedding weights differ (checksum {a} vs {b})")
    if diffs:
        raise BackboneMismatchError(
            f"this bank was built on backbone {recorded.get('name')!r}, not on {current.get('name')!r} ("
            + "; ".join(diffs)
            + f"). Fix: load it with backbone={recorded.get('name')!r}"
        )
