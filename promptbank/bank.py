"""PromptBank: the public API. One frozen LLM, one small module per task (by default a soft
prompt), keys that route inputs.

Old modules are never touched again, so the only way to forget is a routing mistake.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import merge, peft_export, persistence
from .answering import answer, answer_routed, evaluate_task
from .backbone import DEFAULT_BACKBONE, FrozenLM, load_backbone
from .errors import InvalidDataError, TaskExistsError, UnknownTaskError
from .generation import generation_config
from .inputs import check_texts, labelled_blocks
from .key_classes import validated_weight
from .keys import KeyEncoder, make_key_encoder
from .module_batch import Applied
from .module_store import ModuleStore
from .prompts import TaskModule, build_prompt
from .records import DEFAULT_TEMPLATE, STORAGE_DTYPES, BankConfig, Prediction, TaskInfo, UnknownAnswer
from .routing import Router, Routing, make_router
from .task_data import prepare_task
from .trainer import TrainConfig, TrainResult, train_prompt

if TYPE_CHECKING:
    from transformers import GenerationConfig


class PromptBank:
    """A frozen LLM plus a bank of per-task modules (soft prompts, DePT, SSB, LoRA, ...) and a key router.

    Args:
        backbone: the frozen LLM: a loaded ``FrozenLM``, an offline asset name (default
            ``"smollm2-135m"``), a local folder or a hub id.
        config: bank-wide choices (:class:`BankConfig`); its defaults otherwise.
        key_encoder: an encoder instance or name, overriding ``config.key_encoder``.
        **overrides: any :class:`BankConfig` field, e.g. ``method="pt"``, ``router={"strategy": "knn"}``.

    Raises:
        InvalidDataError: a config value no method, router or encoder accepts.
        HubUnavailableError: a hub id with no network (fails fast).

    Example:
        >>> bank = PromptBank()                   # SmolLM2-135M offline, ULPT r=2, lda router
        >>> bank.add_task("spam", texts, labels, label_names=["normal", "spam"], template="SMS: {text}\\nType:")
        >>> bank.predict(["WIN a free cruise, reply now"])[0].label
        'spam'
    """

    def __init__(
        self,
        backbone: FrozenLM | str = DEFAULT_BACKBONE,
        config: BankConfig | None = None,
        key_encoder: KeyEncoder | str | None = None,
        **overrides: Any,
    ) -> None:
        self.backbone = load_backbone(backbone) if isinstance(backbone, str) else backbone
        if isinstance(key_encoder, str):  # a name, as in BankConfig: "minilm", "minilm+embedding-set-mean", ...
            overrides["key_encoder"], key_encoder = key_encoder, None
        self.config = dataclasses.replace(config or BankConfig(), **overrides)
        if key_encoder is not None:  # the manifest must name the encoder actually used, so load() rebuilds it
            self.config = dataclasses.replace(self.config, key_encoder=key_encoder.name)
        probe = self.new_prompt()  # refuse a bad method or option now, not at the first task
        if self.config.prompt_init == "labels":
            probe.start_near(torch.zeros(self.backbone.hidden_size))
        self.key_encoder = key_encoder or make_key_encoder(self.config.key_encoder, backbone=self.backbone)
        self.router: Router = make_router(dim=self.key_encoder.dim, **self.config.router)
        self._next_id = 0
        self._init_storage()

    def _init_storage(self) -> None:
        """Empty per-task stores (``load`` fills them without running ``__init__``)."""
        self._tasks: dict[str, TaskInfo] = {}
        self.modules = ModuleStore(self.backbone.device, STORAGE_DTYPES[self.config.storage_dtype])
        self.matrix_cache = self.modules.cache

    # ------------------------------------------------------------------ registry
    @property
    def tasks(self) -> list[str]:
        return list(self._tasks)

    def task_info(self, name: str) -> TaskInfo:
        if name not in self._tasks:
            raise UnknownTaskError(f"no task named {name!r} in the bank; known tasks: {self.tasks}")
        return self._tasks[name]

    def new_prompt(
        self, seed: int | None = None, method: str | None = None, options: dict[str, Any] | None = None
    ) -> TaskModule:
        """An untrained module: the bank's kind and options, or ``method`` with ``options``.

        Args:
            seed: seed of its initialisation (default: the bank's).
            method: a kind in ``promptbank.prompts.PROMPTS``; default ``config.method``.
            options: the kind's options (with ``method``; default ``config.prompt_options`` without).

        Returns:
            The module, built for this bank's LLM (prompt length ``config.n_tokens``).

        Raises:
            InvalidDataError: an unknown kind or a bad option.
        """
        if method is None:
            method, options = self.config.method, self.config.prompt_options
        opts = dict(options or {})
        opts.setdefault("seed", self.config.seed if seed is None else seed)
        return build_prompt(
            method, self.config.n_tokens, self.backbone.hidden_size, shapes=self.backbone.linear_shapes(), **opts
        )

    # ------------------------------------------------------------------ add / remove
    def add_task(
        self,
        name: str,
        texts: Sequence[str],
        labels: Sequence[Any] | None = None,
        label_names: Sequence[str] | None = None,
        template: str = DEFAULT_TEMPLATE,
        val_texts: Sequence[str] | None = None,
        val_labels: Sequence[Any] | None = None,
        train_config: TrainConfig | None = None,
        metadata: dict[str, Any] | None = None,
        prompt_state: dict[str, torch.Tensor] | None = None,
        key_texts: Sequence[str] | None = None,
        key_labels: Sequence[Any] | None = None,
        from_peft: str | Path | None = None,
        method: str | None = None,
        module_options: dict[str, Any] | None = None,
        targets: Sequence[str] | None = None,
        val_targets: Sequence[str] | None = None,
    ) -> TaskInfo:
        """Train a module for a new task and index its keys.

        A task is classification (``labels``: the LLM answers with one of its label words) or
        text-to-text (``targets``: the LLM generates the answer; trained with the token-level
        cross-entropy of each target and its EOS after ``prompt + template(text)``).

        The router learns from the keys of ``texts``, ``val_texts`` and ``key_texts``: further
        labelled inputs of the task that the prompt does not train on. Keys are cheap and the
        routing state does not grow with them, while routing improves with more keys per class
        (docs/routing.md).

        Args:
            name: the task's unique name.
            texts: training inputs.
            labels: their labels, as label names or indices into ``label_names`` (classification).
            label_names: the label words the LLM scores (with a leading space added); default: the
                sorted distinct string labels.
            template: how an input is shown to the LLM; ``{text}`` marks the input.
            val_texts: validation inputs (with ``val_labels``) for checkpoint choice.
            val_labels: their labels.
            train_config: how the prompt trains (:class:`TrainConfig`); default: its defaults
                with the bank's seed.
            metadata: JSON-able facts kept with the task.
            prompt_state: trainable tensors of an already trained prompt: skips training.
            key_texts: more labelled inputs for the router only (with ``key_labels``).
            key_labels: their labels.
            from_peft: a PEFT prompt-tuning adapter folder whose prompt the task uses instead of
                training one (a ``pt`` bank with ``prefix`` placement and the adapter's length).
            method: this task's module kind (``"dept"``, ``"ssb"``, ``"lora"``, ...); default the
                bank's ``config.method``. Tasks of different kinds share one forward pass.
            module_options: the kind's options, e.g. ``{"rank": 2, "targets": "all"}`` (with ``method``).
            targets: each text's answer (text-to-text; instead of ``labels``).
            val_targets: each ``val_texts``' answer (text-to-text).

        Returns:
            The task's :class:`TaskInfo` (its id, labels or task type, template and training summary).

        Raises:
            TaskExistsError: a task of that name is in the bank.
            InvalidDataError: empty or non-string texts, labels that do not match, one class only,
                both or neither of labels and targets, targets of another count or blank.
        """
        if not isinstance(name, str) or not name.strip():
            raise InvalidDataError(f"task name must be a non-empty string, got {name!r}")
        if name in self._tasks:
            raise TaskExistsError(
                f"task {name!r} is already in the bank; remove_task({name!r}) first or pick another name"
            )
        task = prepare_task(
            self.backbone,
            name,
            texts,
            labels,
            label_names,
            val_texts,
            val_labels,
            key_texts,
            key_labels,
            targets,
            val_targets,
        )
        texts, val_texts, key_texts = task.texts, task.val_texts, task.key_texts
        placement = self.config.placement
        encoded = self.backbone.encode(texts, template, self.config.max_input_tokens, placement).input_ids
        cfg = train_config or TrainConfig(seed=self.config.seed)

        if module_options is not None and method is None:
            raise InvalidDataError("module_options need method=...; the bank's own options are config.prompt_options")
        if from_peft is not None:
            prompt_state = peft_export.pt_state(from_peft, self.backbone, self.config)
        prompt = self.new_prompt(seed=cfg.seed, method=method, options=module_options)
        if self.config.prompt_init == "labels":
            table = self.backbone.model.get_input_embeddings().weight
            prompt.start_near(table[torch.tensor(task.words, device=table.device)].detach().float().mean(0))
        result: TrainResult | None = None
        if prompt_state is None:
            val_encoded = val_texts and self.backbone.encode(
                val_texts, template, self.config.max_input_tokens, placement
            )
            result = train_prompt(
                self.backbone,
                prompt,
                encoded,
                task.targets,
                task.objective,
                val_encoded.input_ids if val_encoded else None,
                task.val_targets,
                cfg,
                desc=f"train {name}",
            )
            prompt_state = prompt.trainable_state()
        started = time.perf_counter()
        # Validation inputs are labelled inputs of the task too: the router gets their keys
        # (a quarter more keys per class, +0.2 to +1.3 pt routing; docs/routing.md).
        routed = texts + (val_texts or []) + (key_texts or [])
        blocks = self.key_encoder.encode_blocks(routed, progress=cfg.progress)
        task_id = self._next_id
        self.router.add_task_blocks(task_id, labelled_blocks(blocks, np.asarray(task.route_labels)))
        key_seconds = time.perf_counter() - started
        self._next_id += 1

        meta = dict(metadata or {})
        meta.update(
            {
                "n_train": len(texts),
                "n_keys": len(routed),
                "trainable_params": prompt.num_trainable(),
                "key_seconds": round(key_seconds, 3),
            }
        )
        if result is not None:
            meta.update(
                {
                    "train_seconds": round(result.seconds, 2),
                    "steps": result.steps,
                    "best_step": result.best_step,
                    f"best_{result.val_metric}": result.best_val,
                    "train_config": cfg.to_dict(),
                    "llm_bf16": self.backbone.bf16,
                }
            )
        info = TaskInfo(name, task_id, task.label_names, template, meta, prompt.config_state(), task.task_type)
        self._tasks[name] = info
        self.modules.put(name, prompt_state)  # predictions use exactly what a save writes
        if self.config.key_classes and task.task_type == "classification" and val_texts:
            meta["key_class_weight"] = validated_weight(self, name, val_texts, task.val_targets)
        return info

    def prompt_state(self, name: str) -> dict[str, torch.Tensor]:
        """The stored (trainable) tensors of a task's module."""
        self.task_info(name)
        return dict(self.modules.states[name])

    def applied(self, name: str) -> Applied:
        """What a task's module does to its inputs, built from its stored tensors, on the LLM's device.

        The same tensors through the same module give the same result bit for bit, so one
        evicted from ``matrix_cache`` (the most recently used are kept) is rebuilt exactly.
        """
        return self.modules.applied(name, self.task_info(name).module)

    def prompt_matrix(self, name: str) -> torch.Tensor:
        """The (n, d) soft prompt a task's inputs receive (n = 0 for kinds without one), on the CPU."""
        return self.applied(name).prompt.cpu()

    def export_peft(self, name: str, out: str | Path) -> Path:
        """Write a task's prompt as a PEFT prompt-tuning adapter that ``PeftModel.from_pretrained``
        loads onto this bank's backbone and answers with like the bank (``promptbank.peft_export``).

        Args:
            name: the task.
            out: a new folder.

        Returns:
            The folder.

        Raises:
            UnknownTaskError: no task of that name.
            InvalidDataError: the bank places prompts after the input (PEFT prepends them), or ``out`` exists.
        """
        peft_export.check_exportable(self.task_info(name).module)
        peft_export.check_prefix(self.config.placement, "export from a bank with placement='prefix'")
        return peft_export.write_adapter(self.prompt_matrix(name), self.backbone, out)

    def remove_task(self, name: str) -> None:
        """Forget a task: its prompt is dropped and no input is routed to it any more.

        Raises:
            UnknownTaskError: no task of that name.
        """
        info = self.task_info(name)
        self.router.remove_task(info.task_id)
        del self._tasks[name]
        self.modules.drop(name)

    def merge(self, other: PromptBank) -> list[str]:
        """Add ``other``'s tasks unchanged, routing statistics summed (``promptbank.merge``); returns their
        names. Other settings or a shared name raise before anything changes."""
        return merge.merge_into(self, other)

    # ------------------------------------------------------------------ inference
    def route(self, texts: Sequence[str], top: int = 3) -> tuple[list[str | None], Routing]:
        """Task chosen for each input by its key alone (None = unknown) and the router's full answer."""
        _, routing = self._keys_and_routing(check_texts(texts), top)
        by_id = self._names_by_id()
        return [by_id.get(int(t)) for t in routing.task_ids], routing

    def _keys_and_routing(self, texts: list[str], top: int) -> tuple[np.ndarray, Routing]:
        """The inputs' keys (answers with ``key_classes`` reuse them) and the router's answer."""
        if not self._tasks:
            raise InvalidDataError("the bank has no tasks yet: add_task(...) first")
        keys = self.key_encoder.encode(texts)
        return keys, self.router.route(keys, top=top)

    def calibrate_unknown(self, texts: Sequence[str], reject_rate: float = 0.05) -> float:
        """Flag inputs unlike every task as unknown (``Prediction.task is None``).

        ``texts`` are held-out inputs of the bank's own tasks that the router has not seen
        (not the ``val_texts`` given to ``add_task``: the router learns from those too); the
        router's closeness threshold is set so that ``reject_rate`` of them would be rejected.
        Returns the threshold; ``reject_rate=0`` turns the option off.
        """
        if not 0 <= reject_rate < 1:
            raise InvalidDataError(f"reject_rate must be in [0, 1), got {reject_rate}")
        self.router.unknown_threshold = None
        if reject_rate == 0:
            return float("-inf")
        _, routing = self.route(texts, top=1)
        threshold = float(np.quantile(routing.closeness, reject_rate))
        self.router.unknown_threshold = threshold
        return threshold

    def _names_by_id(self) -> dict[int, str]:
        return {info.task_id: n for n, info in self._tasks.items()}

    def predict(
        self,
        texts: Sequence[str],
        task: str | Sequence[str | None] | None = None,
        batch_size: int = 16,
        progress: bool = False,
        generation: GenerationConfig | dict[str, Any] | None = None,
        key_classes: bool = True,
        unknown_answer: UnknownAnswer | dict[str, Any] | None = None,
    ) -> list[Prediction]:
        """Answer each input with its task's module; inputs of different tasks share each batch.

        Args:
            texts: the inputs.
            task: None to route each input by its key (re-scoring uncertain ones if
                ``BankConfig.rescore`` says so), one task name for all inputs, or a name (or
                None) per input.
            batch_size: inputs per forward pass (per decoding step for text-to-text tasks).
            progress: show a progress bar.
            generation: how text-to-text answers are decoded: a transformers ``GenerationConfig``
                or its fields, e.g. ``{"max_new_tokens": 64, "num_beams": 4}`` (default greedy,
                ``promptbank.generation.DEFAULT_MAX_NEW_TOKENS``).
            key_classes: False answers with each module's own label scores, leaving out the
                router's class posterior that a task with ``key_classes`` weighs in (to see what
                the module alone answers).
            unknown_answer: how inputs of no known task (flagged once ``calibrate_unknown`` set a
                threshold) are answered by the bare LLM: an :class:`UnknownAnswer` or its fields,
                e.g. ``{"labels": ["positive", "negative"]}`` for a zero-shot label; default: a
                generated continuation of the text.

        Returns:
            One :class:`Prediction` per input: its task (None if unknown) and, for a
            classification task, the label and every label's score (mean log-probability of the
            label word); for a text-to-text task, the generated ``text`` and its ``confidence``.

        Raises:
            InvalidDataError: empty or non-string texts; a task list of another length; bad generation options.
            UnknownTaskError: a task name the bank does not hold.
        """
        texts = check_texts(texts)
        decoding = generation_config(self.backbone, generation)
        if task is None:
            how = UnknownAnswer(**unknown_answer) if isinstance(unknown_answer, dict) else unknown_answer
            return answer_routed(self, texts, batch_size, progress, decoding, key_classes, how)
        if isinstance(task, str):
            self.task_info(task)
            assigned = [task] * len(texts)
        else:
            assigned = list(task)
            if len(assigned) != len(texts):
                raise InvalidDataError(f"{len(texts)} texts but {len(assigned)} task names")
            for t in set(assigned) - {None}:
                self.task_info(t)
        unrouted = np.full(len(texts), np.nan, dtype=np.float32)
        return answer(self, texts, assigned, unrouted, batch_size, progress, decoding, key_classes=key_classes)

    def evaluate(
        self,
        texts: Sequence[str],
        labels: Sequence[Any] | None = None,
        task: str | None = None,
        batch_size: int = 16,
        targets: Sequence[str] | None = None,
        generation: GenerationConfig | dict[str, Any] | None = None,
    ) -> dict[str, float]:
        """Routed and task-given scores on inputs of one task.

        Args:
            texts: inputs of ``task``.
            labels: their labels (names or indices), for a classification task.
            task: the true task (required: routing is measured against it).
            batch_size: inputs per forward pass.
            targets: their reference answers, for a text-to-text task.
            generation: decoding settings for a text-to-text task (as in :meth:`predict`).

        Returns:
            ``routing_accuracy``, ``n`` and, for classification, ``accuracy`` (routed) and
            ``oracle_accuracy`` (task given); for text-to-text, each of ``exact_match``,
            ``token_f1`` and ``rouge_l`` (routed; an input routed elsewhere scores 0) and its
            ``oracle_`` twin (``promptbank.text_metrics``).

        Raises:
            InvalidDataError: no task given, or labels / targets that do not match the task.
        """
        return evaluate_task(self, texts, labels, task, batch_size, targets, generation)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the bank to a directory atomically (docs/format.md).

        A crash at any point leaves the previous bank loadable.

        Args:
            path: the bank directory (created if missing).

        Returns:
            The directory.
        """
        return persistence.save_bank(self, Path(path))

    @classmethod
    def load(
        cls,
        path: str | Path,
        backbone: FrozenLM | str | None = None,
        key_encoder: KeyEncoder | None = None,
        bf16: bool | None = None,
    ) -> PromptBank:
        """Load a bank directory; refuses damaged files and banks built on another backbone.

        Args:
            path: a directory written by :meth:`save`.
            backbone: the frozen LLM (instance or name); default: the one the bank records.
            key_encoder: an encoder instance to reuse; default: built from the bank's config.
            bf16: bf16 autocast for a backbone loaded here (default: on a bf16 GPU only).

        Returns:
            The bank, answering exactly as the one that was saved.

        Raises:
            BankFormatError: a missing, damaged or inconsistent file.
            BackboneMismatchError: the backbone or key encoder differs from the recorded one.
        """
        return persistence.load_bank(cls, Path(path), backbone, key_encoder, bf16)

    # ------------------------------------------------------------------ footprint
    def bytes_per_task(self) -> dict[str, float]:
        """Bytes a save writes, per task: ``prompt`` tensors, ``routing`` state, the ``manifest``'s
        share, and their ``total`` (the saved directory's size over the number of tasks)."""
        n, parts = max(len(self._tasks), 1), persistence.saved_bytes(self) if self._tasks else {}
        per_task = {
            k: parts.get(f, 0) / n for k, f in (("prompt", "prompts"), ("routing", "routing"), ("manifest", "manifest"))
        }
        return {**per_task, "total": sum(per_task.values())}
