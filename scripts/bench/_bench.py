"""Shared helpers for the benchmark scripts: threads, machine info, interleaved timing, JSON.

Timings on a shared machine drift with the load of other processes, so every comparison is
measured side by side in one process with the variants interleaved (A B C, C B A, A B C, ...)
and reported as medians plus the median of the per-repetition ratios, which cancels most of
a slow drift in the machine's speed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the benchmarks never need the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]


def add_common_args(parser: argparse.ArgumentParser, out_default: str) -> None:
    parser.add_argument("--out", default=out_default, help="where the JSON result is written")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch / FAISS / BLAS threads (default: all cores; use 1 on a shared machine)",
    )


def set_threads(n: int) -> int:
    """Pin torch, FAISS and (when threadpoolctl is present) BLAS to ``n`` threads."""
    import torch

    n = max(1, int(n))
    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass
    return n


def quiet_truncation() -> None:
    """Benchmarks truncate texts on purpose (fixed lengths): drop the library's warning."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*exceed max_input_tokens.*")
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")


def _git_state() -> dict[str, Any]:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""

    return {"commit": run("git", "rev-parse", "HEAD"), "dirty": bool(run("git", "status", "--porcelain"))}


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, threads, memory, load, versions, date."""
    import torch

    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "env_threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")},
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "git": _git_state(),
    }
    try:
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        info["cpu_model"] = platform.processor()
    try:
        mem = {
            row.split(":")[0]: int(row.split()[1])
            for row in Path("/proc/meminfo").read_text().splitlines()
            if row.split()[1].isdigit()
        }
        info["mem_total_gib"] = round(mem["MemTotal"] / 2**20, 1)
        info["mem_available_gib_at_start"] = round(mem["MemAvailable"] / 2**20, 1)
    except (OSError, KeyError):
        pass
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    for mod in ("transformers", "faiss", "peft", "numpy", "safetensors"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            pass
    return info


def rss_bytes(field: str = "VmRSS") -> int:
    """Resident set size of this process (Linux), 0 when unknown: current (``VmRSS``) or
    peak since the last ``reset_peak_rss`` (``VmHWM``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak_rss() -> None:
    """Make ``VmHWM`` start again from the current RSS (Linux ``clear_refs`` 5), so a
    peak can be measured for one phase of a run."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes (CUDA work included)."""
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def with_attribute(obj: Any, name: str, value: Any, run: Callable[[], Any]) -> Callable[[], Any]:
    """``run`` with ``obj.name`` set to ``value`` for the call and restored after it: a
    side-by-side twin that puts back what a library change replaced."""

    def twin() -> Any:
        kept = getattr(obj, name)
        setattr(obj, name, value)
        try:
            return run()
        finally:
            setattr(obj, name, kept)

    return twin


def interleaved(
    cases: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    log: Callable[[str], None] | None = None,
    rewarm: bool = False,
) -> dict[str, list[float]]:
    """Seconds per call of every case, measured in alternating order.

    Warm-up calls (not recorded) run first for every case; then repetition r runs the cases
    forwards when r is even and backwards when r is odd, so no case always runs first or
    right after the same neighbour. ``rewarm``: every timed call follows an untimed call of
    the same case. On the project's VM a route right after an exact search over 100k keys
    took 350 instead of 60 us per query, with no page fault the guest could see (the host
    pages guest memory back in), so without it the neighbour, not the case, set the time.
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            if rewarm:
                cases[name]()
            times[name].append(timed(cases[name]))
        if log:
            log(f"  rep {r + 1}/{repeats}: " + ", ".join(f"{n}={times[n][-1]:.4g}s" for n in names))
    return times


def summary(samples: list[float], scale: float = 1.0) -> dict[str, Any]:
    """Median, min, max and the raw samples (times ``scale``)."""
    xs = [x * scale for x in samples]
    return {
        "median": statistics.median(xs),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
        "samples": [round(x, 6) for x in xs],
    }


def ratio(a: list[float], b: list[float]) -> dict[str, float]:
    """a / b: ratio of the medians, and median of per-repetition ratios (robust to drift)."""
    paired = [x / y for x, y in zip(a, b) if y > 0]
    return {
        "of_medians": statistics.median(a) / statistics.median(b),
        "paired_median": statistics.median(paired) if paired else float("nan"),
    }


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(os, "getloadavg"):
        payload.setdefault("machine", {})["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


class CachedKeys:
    """Wraps a key encoder so that each text is encoded once, however many banks it reaches."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.dim, self.name = inner, inner.dim, inner.name
        self._memo: dict[str, Any] = {}

    def remember(self, texts: list[str], keys: Any) -> None:
        """Take ``keys`` (computed elsewhere, e.g. ``KeyParts.keys``) as the keys of ``texts``."""
        self._memo.update(zip(texts, keys))

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    def encode(self, texts, batch_size: int = 64, progress: bool = False):
        import numpy as np

        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if todo:
            self._memo.update(zip(todo, self.inner.encode(todo, batch_size=batch_size, progress=progress)))
        return np.stack([self._memo[t] for t in texts])

    def encode_blocks(self, texts, block=None, batch_size: int = 64, progress: bool = False):
        from promptbank.keys import KeyEncoder

        return KeyEncoder.encode_blocks(self, texts, block, batch_size, progress)


KEYS_CACHE = REPO / "runs" / "keys_cache"


class KeyParts:
    """Keys of a ``"+"``-joined key encoder, each part's keys of a (task, split) cached on disk.

    One file per part, task, split and digest of the texts under ``runs/keys_cache/``, so a study
    or a benchmark that routes the same texts again (another router, another run) encodes
    nothing; the joined key is what ``ConcatKeys.encode`` returns. The encoders (and the LLM, for
    the parts that read it) load only when a file is missing.
    """

    def __init__(self, backbone: Any = None) -> None:
        self._parts: dict[str, Any] = {}
        self._backbone = backbone

    def encode(self, part: str, texts: list[str]) -> Any:
        """One part's keys of ``texts``, computed (no cache)."""
        if part not in self._parts:
            from promptbank.keys import make_key_encoder

            if part != "minilm" and self._backbone is None:
                from promptbank.backbone import load_backbone

                self._backbone = load_backbone(device="cpu")
            self._parts[part] = make_key_encoder(part, backbone=self._backbone, device="cpu")
        return self._parts[part].encode(texts, progress=False)

    def keys(self, key_encoder: str, task: str, split: str, texts: list[str]) -> Any:
        """The joined key of ``texts``, each part read from the cache or encoded and cached."""
        import hashlib

        import numpy as np
        import torch

        from promptbank.keys import PooledKeyEncoder, l2_normalize, native_bf16

        digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()[:16]
        # MiniLM keys computed in bf16 (native_bf16) are cached apart from float32 ones, and by
        # the token budget per key batch: bf16 rounding depends on the batch's padded shape
        bf16 = f"-bf16-t{PooledKeyEncoder.batch_tokens}" if native_bf16(torch.device("cpu")) else ""
        blocks = []
        for part in key_encoder.split("+"):
            path = KEYS_CACHE / f"{part}{bf16 if part == 'minilm' else ''}-{task}-{split}-{digest}.npy"
            if path.exists():
                blocks.append(np.load(path))
                continue
            started = time.perf_counter()
            keys = self.encode(part, texts)
            KEYS_CACHE.mkdir(parents=True, exist_ok=True)
            np.save(path, keys)
            log(f"encoded {part} {task}/{split}: {len(texts)} texts in {time.perf_counter() - started:.0f} s")
            blocks.append(keys)
        return l2_normalize(np.concatenate(blocks, axis=1))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_frozen(
    name: str = "smollm2-135m", random_init: bool = False, device: str | None = None, bf16: bool | None = None
):
    """The frozen LM: the real weights, or a random model built from the same config
    (speed does not depend on the weights' values; no weights need to be shipped).
    ``bf16``: as in ``load_backbone`` (None: on a bf16 GPU only)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from promptbank.backbone import FrozenLM, load_backbone, resolve_model_source

    if not random_init:
        return load_backbone(name, device=device, bf16=bf16)
    source, kwargs = resolve_model_source(name)
    config = AutoConfig.from_pretrained(source, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return FrozenLM(model, tokenizer, name=f"{name}(random-init)", device=device, bf16=bf16)
