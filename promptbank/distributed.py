"""Many tasks trained at once on Ray: one Ray task per bank task, merged into the bank as each ends.

A task's module depends only on that task, so a thousand tasks are a thousand independent jobs.
Each becomes a Ray task with its own resources and retries. Its worker loads the frozen LLM and
the key encoder once and keeps them for every later task it runs. It trains the module, computes
the task's routing statistics and returns a saved one-task bank (a few KB plus the router's shared
matrix) through Ray's object store. The driver writes each part next to the bank, merges the parts
in the tasks' order (``PromptBank.merge``, exact) and saves the bank, so an interrupted run
restarts with only the tasks that are not in it yet.
Ray is an optional dependency (``pip install promptbank[distributed]``), imported only here.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .bank import PromptBank
from .errors import InvalidDataError
from .records import BankConfig

#: Worker-process cache: (backbone, bf16, key encoder) -> the loaded LLM and key encoder.
_LOADED: dict[tuple[str, bool, str], tuple[Any, Any]] = {}


@dataclass
class TaskSpec:
    """One task to train: what ``PromptBank.add_task`` takes.

    Args:
        name: the task's name in the bank.
        texts: its training inputs.
        labels: their labels (classification), or None with ``options["targets"]`` (text-to-text).
        options: any other ``add_task`` keyword: ``label_names``, ``template``, ``val_texts``,
            ``val_labels``, ``targets``, ``train_config``, ``method``, ...
    """

    name: str
    texts: list[str]
    labels: list[Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainManyResult:
    """What a parallel run did: tasks merged into the bank, and tasks that failed with their error."""

    added: list[str]
    failed: dict[str, str]


def bank_blueprint(bank: PromptBank) -> dict[str, Any]:
    """What a worker needs to build an empty bank like ``bank``: its LLM's name and its config (JSON-able)."""
    return {"backbone": bank.backbone.name, "bf16": bank.backbone.bf16, "config": dataclasses.asdict(bank.config)}


def train_part(blueprint: dict[str, Any], spec: TaskSpec, threads: int) -> dict[str, bytes]:
    """Train one task into a one-task bank (the body of each Ray task).

    Returns:
        The saved part's files by name: they travel back to the driver through Ray's object store,
        so a worker on another node needs no shared disk.
    """
    import torch

    from .backbone import load_backbone
    from .keys import make_key_encoder

    torch.set_num_threads(threads)
    key = (blueprint["backbone"], blueprint["bf16"], blueprint["config"]["key_encoder"])
    if key not in _LOADED:
        backbone = load_backbone(key[0], bf16=key[1])
        _LOADED[key] = (backbone, make_key_encoder(key[2], backbone=backbone))
    backbone, encoder = _LOADED[key]
    part = PromptBank(backbone, BankConfig(**blueprint["config"]), key_encoder=encoder)
    part.add_task(spec.name, spec.texts, spec.labels, **spec.options)
    with tempfile.TemporaryDirectory(prefix="promptbank-part-") as folder:
        part.save(Path(folder) / "part")
        return {f.name: f.read_bytes() for f in (Path(folder) / "part").iterdir() if not f.name.startswith(".")}


def store_part(files: dict[str, bytes], parts: Path, name: str) -> Path:
    """Write a part's files as ``parts/name`` atomically: a crash leaves the whole part or none."""
    staging = parts / f".{name}.{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    for file, data in files.items():
        (staging / file).write_bytes(data)
    final = parts / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return final


def train_many(
    bank: PromptBank,
    specs: Sequence[TaskSpec],
    out: str | Path,
    *,
    workers: int | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    retries: int = 2,
    address: str | None = None,
    progress: bool = True,
    save_every_s: float = 30.0,
) -> TrainManyResult:
    """Train ``specs`` in parallel on Ray and merge each into ``bank``, saved to ``out`` as they arrive.

    Tasks already in ``bank`` are skipped, and parts that an interrupted run left finished are
    merged without training again. The merged bank equals one built by adding the tasks one by
    one in ``specs`` order on one machine with the same thread count: modules bit for bit,
    routing statistics summed. Ray gets the tasks largest first (``_size``), so that a long task
    does not start last and leave the other workers idle.

    Args:
        bank: the bank to add to (its backbone must be loadable by name in the workers).
        specs: the tasks, one Ray task each.
        out: where the bank is saved; its parts wait in ``<out>.parts/`` until merged.
        workers: CPUs of the local Ray instance that ``ray.init`` starts (default: all); ignored
            with ``address``.
        num_cpus: CPUs per task (also its torch threads).
        num_gpus: GPUs per task; fractions share a GPU between small models.
        retries: how many times a task whose worker died or raised a runtime error is retried.
        address: an existing Ray cluster (``"auto"`` or ``"ray://host:10001"``); default: local.
        progress: show a progress bar.
        save_every_s: least seconds between two saves of ``out`` (a save writes the whole bank, so
            saving after every one of thousands of small tasks would cost more than the tasks); a
            part's folder is deleted only once a saved bank holds it, and the last merge is always saved.

    Returns:
        The tasks added (in ``specs`` order) and the failures by task name.

    Raises:
        InvalidDataError: duplicate names in ``specs``, or Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise InvalidDataError("parallel training needs Ray. Fix: pip install 'promptbank[distributed]'") from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InvalidDataError(
            f"task names must be unique; repeated: {sorted({n for n in names if names.count(n) > 1})}"
        )
    out = Path(out)
    parts = Path(f"{out}.parts")
    parts.mkdir(parents=True, exist_ok=True)
    order = [s.name for s in specs if s.name not in bank.tasks]
    # parts an interrupted run finished are merged without training again
    ready: dict[str, Path | str] = {n: parts / n for n in order if (parts / n / "manifest.json").exists()}
    todo = [s for s in specs if s.name in order and s.name not in ready]
    result = TrainManyResult([], {})
    merger = _InOrder(bank, order, ready, out, result, save_every_s)
    merger.flush()
    if todo:
        _run_on_ray(ray, bank, todo, parts, merger, workers, num_cpus, num_gpus, retries, address, progress)
    merger.save()
    if not any(parts.iterdir()):
        parts.rmdir()
    return result


class _InOrder:
    """Merges finished parts in ``specs`` order, whatever order they finish in, so the bank is the
    same on every run (task ids, and the order the routing statistics are summed in)."""

    def __init__(
        self, bank: PromptBank, order: list[str], ready: dict, out: Path, result: TrainManyResult, save_every_s: float
    ) -> None:
        self.bank, self.order, self.ready, self.out, self.result = bank, order, ready, out, result
        self.save_every_s, self.saved_at = save_every_s, time.monotonic()
        self.next = 0
        self.merged: list[Path] = []  # parts in the bank in memory, not yet in a saved one

    def finished(self, name: str, path: str | None, error: str | None = None) -> None:
        if error is not None:
            self.result.failed[name] = error
        self.ready[name] = path
        self.flush()

    def flush(self) -> None:
        while self.next < len(self.order) and self.order[self.next] in self.ready:
            path = self.ready.pop(self.order[self.next])
            if path is not None:
                part = PromptBank.load(path, backbone=self.bank.backbone, key_encoder=self.bank.key_encoder)
                self.result.added += self.bank.merge(part)
                self.merged.append(Path(path))
            self.next += 1
        if time.monotonic() - self.saved_at >= self.save_every_s:
            self.save()

    def save(self) -> None:
        """Save the bank if it holds unsaved parts, then delete those parts (never before)."""
        if self.merged:
            self.bank.save(self.out)
            for path in self.merged:
                shutil.rmtree(path)
            self.merged = []
        self.saved_at = time.monotonic()


def _run_on_ray(ray, bank, todo, parts, merger, workers, num_cpus, num_gpus, retries, address, progress) -> None:
    if not ray.is_initialized():
        local = {} if address else {"num_cpus": workers, "include_dashboard": False}
        ray.init(address=address, log_to_driver=False, **local)
    blueprint = bank_blueprint(bank)
    remote = ray.remote(train_part).options(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        max_retries=retries,
        retry_exceptions=[RuntimeError, OSError, MemoryError],  # a bad task's own error is final
    )
    threads = max(1, int(num_cpus))
    # a few tasks per slot in flight, not all of them: the driver holds the texts of those only
    slots = ray.cluster_resources().get("GPU" if num_gpus else "CPU", 1) / (num_gpus or num_cpus)
    window = max(4, 4 * int(slots))
    waiting = iter(sorted(todo, key=_size, reverse=True))  # largest first; merged in order regardless
    pending: dict[Any, str] = {}
    with tqdm(total=len(todo), desc="train-many", unit="task", disable=not progress) as bar:
        while True:
            for spec in itertools.islice(waiting, window - len(pending)):
                pending[remote.remote(blueprint, spec, threads)] = spec.name
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(done[0])
            try:
                files = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - a task's failure is reported, the others go on
                merger.finished(name, None, _reason(exc))
            else:
                merger.finished(name, store_part(files, parts, name))
            bar.update(1)


def _size(spec: TaskSpec) -> int:
    """How many inputs a task reads (training, validation and key inputs): the order Ray gets
    the tasks in, largest first, so that the last task to start is a short one: offline-9's
    20newsgroups (20 classes, ~20k key inputs) takes about as long on one thread as its eight
    other tasks together (BENCHMARKS.md section 5)."""
    options = spec.options
    return len(spec.texts) + len(options.get("val_texts") or ()) + len(options.get("key_texts") or ())


def _reason(exc: Exception) -> str:
    """The task's own exception (Ray wraps it), as one line."""
    cause = getattr(exc, "cause", None)
    err = cause if isinstance(cause, BaseException) else exc
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
