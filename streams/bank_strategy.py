"""The prompt bank as a stream strategy: train a prompt per experience, route at test time.

Evaluation cost stays linear in the number of tasks: a module's own label scores for a test
input never change once the module is trained, so they are cached per (module task, test
input); after each new task only routing and the router's class posterior (``key_classes``:
it moves as each task joins the shared covariance) are recomputed, from the cached keys, and
only inputs routed to a module they were never answered with cost a forward pass.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avalanche.benchmarks.scenarios import CLExperience
from safetensors.torch import load_file, save

from promptbank.answering import with_key_classes
from promptbank.assets import cache_dir
from promptbank.bank import PromptBank
from promptbank.distributed import TaskSpec, train_many
from promptbank.errors import InvalidDataError
from promptbank.storage import atomic_write
from promptbank.trainer import TrainConfig

from .benchmark import TextTable, experience_rows
from .splits import TaskData
from .strategy import StreamStrategy, TaskEvaluation, TrainReport

ANSWERS = "module_answers.json"  # each module's own label scores; the router's part is added per evaluation
CHECKPOINTS = "checkpoints"


class PromptCache:
    """Trained prompts keyed by everything they depend on (task data, method, budgets, seed, backbone)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or cache_dir("prompts")

    @staticmethod
    def key(bank: PromptBank, task: TaskData, train_config: TrainConfig) -> str:
        train = {k: v for k, v in train_config.to_dict().items() if k != "progress"}
        payload = {
            "backbone": bank.backbone.identity(),
            "prompt": bank.new_prompt(seed=train_config.seed).config_state(),
            "storage": bank.config.storage_dtype,
            "max_input_tokens": bank.config.max_input_tokens,
            "task": task.name,
            "labels": list(task.label_names),
            "template": task.template,
            # the router's extra keys do not change the prompt
            "budgets": {k: v for k, v in task.budgets.items() if not k.startswith("key_")},
            "train": train,
            "data": hashlib.sha256("\x1f".join(task.train_texts + task.val_texts).encode()).hexdigest(),
        }
        if task.generates:  # absent for classification, so the keys of existing caches stay valid
            payload["targets"] = hashlib.sha256("\x1f".join(task.train_targets + task.val_targets).encode()).hexdigest()
        if bank.backbone.bf16:  # absent in float32, so the keys of existing caches stay valid
            payload["bf16"] = True
        # likewise absent at the values caches were first written with, so their keys stay valid
        for name, default in (("placement", "prefix"), ("prompt_init", "random")):
            if getattr(bank.config, name) != default:
                payload[name] = getattr(bank.config, name)
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def get(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        path = self.folder / f"{key}.safetensors"
        if not path.exists():
            return None
        try:
            meta = json.loads((self.folder / f"{key}.json").read_text())
            return load_file(path), meta
        except Exception:  # a damaged cache entry is simply retrained
            return None

    def put(self, key: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Store an entry; its metadata first, the tensors (what ``get`` looks for) last, each atomically."""
        atomic_write(self.folder / f"{key}.json", json.dumps(meta, default=str).encode())
        atomic_write(self.folder / f"{key}.safetensors", save({k: v.contiguous() for k, v in state.items()}))


class BankStrategy(StreamStrategy):
    """promptbank itself: a new prompt per task, routed (or oracle) answers."""

    routes = True

    def __init__(
        self,
        bank: PromptBank,
        train_config: TrainConfig,
        prompt_cache: PromptCache | None = None,
        batch_size: int = 16,
        progress: bool = True,
    ) -> None:
        self.bank = bank
        self.name = f"bank-{bank.config.method}"
        self.train_config = train_config
        self.prompt_cache = prompt_cache
        self.batch_size = batch_size
        self.progress = progress
        # (module task, test task) -> row -> the module's own label scores (or a generated answer)
        self._answers: dict[tuple[str, str], dict[int, list[float] | dict[str, Any]]] = {}
        self._test_keys: dict[str, np.ndarray] = {}

    def _add_options(self, task: TaskData, texts: list[str], labels: list[int]) -> dict[str, Any]:
        """``add_task``'s keywords after the name and texts, for ``texts`` (in training order) and their labels."""
        if task.generates:
            answer_of = dict(zip(task.train_texts, task.train_targets))
            answers = {"targets": [answer_of[t] for t in texts], "val_targets": task.val_targets or None}
        else:
            answers = {
                "labels": labels,
                "label_names": list(task.label_names),
                "val_labels": task.val_labels or None,
                "key_labels": task.key_labels or None,
            }
        return {
            "template": task.template,
            "val_texts": task.val_texts or None,
            "key_texts": task.key_texts or None,
            **answers,
            "train_config": self.train_config,
            "metadata": {"budgets": task.budgets},
        }

    def task_spec(self, task: TaskData) -> TaskSpec:
        """``task`` as one job of ``promptbank.distributed.train_many``: what ``train`` would add.

        Args:
            task: a stream task; its texts train in the task's own order (that of its experience).

        Returns:
            The name, training texts, labels (None for text-to-text) and the other ``add_task`` keywords.
        """
        options = self._add_options(task, list(task.train_texts), list(task.train_labels))
        return TaskSpec(task.name, list(task.train_texts), options.pop("labels", None), options=options)

    def pretrain(self, tasks: list[TaskData], workers: int) -> None:
        """Train the prompts of ``tasks`` that the prompt cache lacks in parallel on a local Ray
        instance (``promptbank.distributed``), into the cache; the stream then runs in order on them.

        Each task trains on 1 CPU (1 torch thread), so its prompt equals a sequential run's at 1
        thread bit for bit. A task that fails here is reported and trained again in the stream.
        """
        if self.prompt_cache is None:
            raise InvalidDataError("--workers fills the prompt cache, and this strategy has none")
        keys = {t.name: PromptCache.key(self.bank, t, self.train_config) for t in tasks}
        todo = [t for t in tasks if self.prompt_cache.get(keys[t.name]) is None]
        if not todo:
            return
        specs = [self.task_spec(t) for t in todo]
        scratch = PromptBank(self.bank.backbone, self.bank.config, key_encoder=self.bank.key_encoder)
        with tempfile.TemporaryDirectory(prefix="promptbank-pretrain-") as folder:
            result = train_many(scratch, specs, Path(folder) / "bank", workers=workers, progress=self.progress)
        for name in result.added:
            self.prompt_cache.put(keys[name], scratch.prompt_state(name), scratch.task_info(name).metadata)
        for name, reason in result.failed.items():
            warnings.warn(
                f"parallel training of {name!r} failed ({reason}); the stream trains it in order", stacklevel=2
            )

    def train(self, experience: CLExperience, task: TaskData, table: TextTable) -> TrainReport:
        rows, labels = experience_rows(experience.dataset)
        texts = table.lookup(rows)
        cached, key = None, None
        if self.prompt_cache is not None:
            key = PromptCache.key(self.bank, task, self.train_config)
            cached = self.prompt_cache.get(key)
        started = time.perf_counter()
        info = self.bank.add_task(
            task.name, texts, **self._add_options(task, texts, labels), prompt_state=cached[0] if cached else None
        )
        if cached:
            info.metadata.update(
                {
                    k: v
                    for k, v in cached[1].items()
                    if k in ("train_seconds", "best_val_acc", "best_val_logp", "best_step", "steps")
                }
            )
            info.metadata["prompt_from_cache"] = True
        elif key is not None:
            self.prompt_cache.put(key, self.bank.prompt_state(task.name), info.metadata)
        per_task = self.bank.bytes_per_task()
        return TrainReport(
            seconds=time.perf_counter() - started,
            trainable_params=int(info.metadata["trainable_params"]),
            bytes_per_task=per_task["total"],
            extra={
                "prompt_train_seconds": info.metadata.get("train_seconds"),
                "key_seconds": info.metadata.get("key_seconds"),
                "best_val_acc": info.metadata.get("best_val_acc"),
                "best_val_logp": info.metadata.get("best_val_logp"),
                "prompt_from_cache": bool(cached),
            },
        )

    def _keys(self, task: TaskData) -> np.ndarray:
        if task.name not in self._test_keys:
            self._test_keys[task.name] = self.bank.key_encoder.encode(task.test_texts)
        return self._test_keys[task.name]

    def _ensure_answers(self, task: TaskData, assigned: list[str | None]) -> None:
        """Answer (row, prompt task) pairs not seen before, all in mixed batches."""
        todo = [i for i, a in enumerate(assigned) if a is not None and i not in self._answers.get((a, task.name), {})]
        if not todo:
            return
        preds = self.bank.predict(
            [task.test_texts[i] for i in todo],
            task=[assigned[i] for i in todo],
            batch_size=self.batch_size,
            progress=self.progress,
            key_classes=False,  # added in ``evaluate``, with the router as it is then
        )
        for i, p in zip(todo, preds):  # label scores, or a generated answer and its log-probability
            answer = list(p.scores.values()) if p.text is None else {"text": p.text, "logprob": p.confidence}
            self._answers.setdefault((p.task, task.name), {})[i] = answer

    def evaluate(self, task_index: int, task: TaskData, seen: list[TaskData]) -> TaskEvaluation:
        """Route (re-scoring uncertain inputs with candidate prompts, as ``PromptBank.predict`` does)."""
        rescorer = self.bank.config.rescorer()
        routing = self.bank.router.route(self._keys(task), top=rescorer.top)
        candidates = rescorer.candidates(routing)
        names = {self.bank.task_info(t.name).task_id: t.name for t in seen}
        self._ensure_answers(task, [task.name] * len(task.test_texts))  # oracle: the true task's prompt
        for rank in range(
            max((len(c) for c in candidates), default=0)
        ):  # only new (prompt, input) pairs cost a forward
            self._ensure_answers(task, [names[c[rank]] if rank < len(c) else None for c in candidates])
        now: dict[str, dict[int, Any]] = {}

        def bank_answers(name: str) -> dict[int, Any]:
            """``name``'s answers to this task's inputs as the bank gives them now."""
            if name not in now:
                rows = self._answers[(name, task.name)]
                at = [i for i, v in rows.items() if isinstance(v, list)]
                scores = [np.asarray(rows[i], dtype=np.float64) for i in at]
                names_of = [name] * len(task.test_texts)
                fused = with_key_classes(self.bank, task.test_texts, names_of, at, scores, self._keys(task))
                now[name] = {**rows, **dict(zip(at, fused))}
            return now[name]

        chosen = rescorer.choose(routing, candidates, lambda i, t: _scores(bank_answers(names[t])[i]))
        by_id = {self.bank.task_info(t.name).task_id: k for k, t in enumerate(seen)}
        routed_index = np.array([by_id.get(int(t), -1) for t in chosen])

        def answer(name: str, i: int, entries: dict[int, Any]) -> str | None:
            if task.generates and name != task.name:
                return None  # another task's answer is none to a text-to-text input (it would share words by chance)
            entry = entries[i]
            if isinstance(entry, dict):
                return entry["text"]
            return self.bank.task_info(name).label_names[int(np.argmax(entry))]

        predicted = [
            answer(names[int(t)], i, bank_answers(names[int(t)])) if t >= 0 else None for i, t in enumerate(chosen)
        ]
        oracle = [answer(task.name, i, bank_answers(task.name)) for i in range(len(task.test_texts))]
        alone = [answer(task.name, i, self._answers[(task.name, task.name)]) for i in range(len(task.test_texts))]
        key_index = np.array([by_id.get(int(t), -1) for t in routing.task_ids])
        return TaskEvaluation(
            predicted=predicted,
            routed_task=routed_index,
            oracle_predicted=oracle,
            key_routed_task=key_index,
            module_predicted=alone,
        )

    def save(self, folder: Path) -> None:
        """Checkpoint the bank and the cached answers, then write the run's output bank.

        Each checkpoint is a bank directory of its own (``checkpoints/bank-<tasks>``), so the one
        the runner's progress commits is never rewritten: resuming loads exactly it. Removing a
        task saved ahead of its progress would not do (``lda`` removal is close to exact, not
        exact). ``folder/bank`` is the output, not read to resume.
        """
        n = len(self.bank.tasks)
        self.bank.save(folder / CHECKPOINTS / f"bank-{n}")
        answers = {f"{a}\x1f{t}": rows for (a, t), rows in self._answers.items()}
        atomic_write(folder / ANSWERS, json.dumps(answers).encode())
        self.bank.save(folder / "bank")
        for old in (folder / CHECKPOINTS).glob("bank-*"):  # the committed one (n - 1) stays until progress moves on
            if old.name.split("-")[-1].isdigit() and int(old.name.split("-")[-1]) < n - 1:
                shutil.rmtree(old, ignore_errors=True)

    def restore(self, folder: Path, finished: list[str]) -> None:
        """Resume after the tasks in ``finished``: reload their checkpoint and the cached answers.

        A checkpoint ahead of the committed progress (a run killed between the two) is dropped,
        so a kill at any point loses at most the task in progress.
        """
        path = folder / CHECKPOINTS / f"bank-{len(finished)}"
        if not path.is_dir():
            raise InvalidDataError(
                f"{path} is missing: the run folder is damaged. Fix: rerun with --fresh "
                "(trained prompts come back from the prompt cache)"
            )
        self.bank = PromptBank.load(path, backbone=self.bank.backbone, key_encoder=self.bank.key_encoder)
        if self.bank.tasks != list(finished):
            raise InvalidDataError(
                f"{path} holds tasks {self.bank.tasks}, not {list(finished)}. Fix: rerun with --fresh"
            )
        for other in (folder / CHECKPOINTS).glob("bank-*"):
            if other != path:
                shutil.rmtree(other, ignore_errors=True)
        self._answers = {}
        try:
            raw = json.loads((folder / ANSWERS).read_text())
        except (OSError, ValueError):  # no answers yet, or unreadable: they are only a cache
            return
        self._answers = {
            tuple(k.split("\x1f")): {int(i): v for i, v in rows.items() if isinstance(v, (list, dict))}
            for k, rows in raw.items()
            if k.split("\x1f")[0] in finished
        }


def _scores(entry: list[float] | dict[str, Any]) -> np.ndarray:
    """What re-scoring compares: label scores, or a generated answer's mean log-probability."""
    return np.asarray([entry["logprob"]]) if isinstance(entry, dict) else np.asarray(entry)
