"""Learning one task's soft prompt against the frozen LLM.

AdamW with warmup + cosine decay, gradient clipping, and the best validation checkpoint kept.
The same seed gives the same prompt on CPU. The frozen LLM's forward runs under bf16 autocast on a
bf16 GPU, or wherever it was loaded with ``bf16=True`` (``FrozenLM.autocast``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbone import PROMPT_SLOT, FrozenLM
from .errors import InvalidDataError
from .input_cache import InputCache
from .module_batch import Applied, ModuleBatch
from .objectives import Classification, Objective, TextToText
from .prompts import TaskModule

# Learning rates that worked on SmolLM2-135M at the default budget (see RESULTS.md); the
# weight-space kinds' start from the papers' settings scaled up to the short budget. VeRA's was
# measured (scripts/studies/kind_lr.py): its two scaling vectors per layer need ten times the
# others' rate at 80 steps (trec 52 -> 83 alone at 0.01 -> 0.1).
DEFAULT_LR: dict[str, float] = {
    "ulpt": 0.3,
    "pt": 0.3,
    "lopt1": 0.03,
    "lopt2": 0.01,
    "dept": 0.3,
    "ssb": 0.01,
    "ssl": 0.01,
    "ia3": 0.01,
    "lora": 0.005,
    "vera": 0.1,
}


@dataclass
class TrainConfig:
    """How one task's prompt is trained.

    Args:
        steps: optimiser steps.
        batch_size: training examples per step.
        lr: peak learning rate; None takes the method's default (``DEFAULT_LR``).
        weight_decay: AdamW weight decay.
        warmup_ratio: share of the steps spent warming the learning rate up (then cosine decay).
        grad_clip: gradient-norm clipping.
        eval_every: steps between validation checks (the best checkpoint is kept).
        eval_batch_size: examples per validation batch.
        seed: seed of the batch order.
        input_cache_mb: when the prompt sits after the input (``BankConfig.placement="suffix"``),
            the input's keys and values are computed once and kept, in bfloat16, up to this many
            MB each for the training and the validation inputs (``promptbank.input_cache``);
            0 runs the whole input at every step.
        progress: show a progress bar.

    Example:
        >>> TrainConfig(steps=200, lr=0.3)
    """

    steps: int = 80
    batch_size: int = 8
    lr: float | None = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 20
    eval_batch_size: int = 16
    seed: int = 0
    input_cache_mb: int = 1024
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise InvalidDataError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise InvalidDataError(f"TrainConfig.lr must be > 0 (or None for the method's default), got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise InvalidDataError(f"TrainConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if int(self.input_cache_mb) < 0:
            raise InvalidDataError(f"TrainConfig.input_cache_mb must be >= 0, got {self.input_cache_mb}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """Outcome of training: history of (step, loss, validation metric) and the chosen checkpoint.

    ``best_val`` is the chosen checkpoint's validation score, named by ``val_metric``: accuracy
    (``val_acc``) for classification, mean target log-probability (``val_logp``) for text-to-text.
    """

    best_step: int
    best_val: float | None
    seconds: float
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    val_metric: str = "val_acc"


def predict_scores(
    backbone: FrozenLM,
    modules: Sequence[Applied] | torch.Tensor,
    prompt_index: Sequence[int],
    input_ids: list[list[int]],
    labels: list[list[list[int]]],
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "predict",
) -> list[np.ndarray]:
    """Label scores for many inputs, input i answered with module ``modules[prompt_index[i]]``.

    Args:
        backbone: the frozen LLM.
        modules: the tasks' applied modules (on the LLM's device), or (T, n, d) plain prompts.
        prompt_index: per input, its module's position in ``modules``.
        input_ids: per input, its token list with the prompt slot.
        labels: per input, its candidate labels as token lists.
        batch_size: inputs per forward pass (a batch may mix modules of any kinds).
        progress: show a progress bar.
        desc: the progress bar's label.

    Returns:
        Per input, its labels' scores. Inputs are batched by length (less padding); results
        come back in input order.
    """
    if isinstance(modules, torch.Tensor):
        modules = [Applied(m) for m in modules]
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    out: list[np.ndarray] = [np.empty(0)] * len(input_ids)
    batches = range(0, len(order), batch_size)
    with torch.inference_mode():
        for start in tqdm(batches, desc=desc, disable=not progress, leave=False, unit="batch"):
            idx = order[start : start + batch_size]
            batch = ModuleBatch.gather(modules, [prompt_index[i] for i in idx])
            scores = backbone.label_scores(batch, [input_ids[i] for i in idx], [labels[i] for i in idx])
            scores = scores.float().cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = scores[row, : len(labels[i])]
    return out


def as_objective(objective: Objective | list[list[int]]) -> Objective:
    """An objective, or a task's label token lists read as :class:`Classification` over them."""
    return objective if isinstance(objective, (Classification, TextToText)) else Classification(list(objective))


def train_prompt(
    backbone: FrozenLM,
    prompt: TaskModule,
    train_ids: list[list[int]],
    train_labels: Sequence[Any],
    objective: Objective | list[list[int]],
    val_ids: list[list[int]] | None = None,
    val_labels: Sequence[Any] | None = None,
    config: TrainConfig | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train a task module in place on pre-tokenised inputs; keeps the best validation checkpoint.

    Args:
        backbone: the frozen LLM (it never gets gradients).
        prompt: the module (any kind); its own parameters are trained, live.
        train_ids: token lists with the prompt slot.
        train_labels: their targets: label indices (classification) or answer token lists ending
            in EOS (text-to-text).
        objective: :class:`~promptbank.objectives.Classification` (or just the task's label token
            lists) or :class:`~promptbank.objectives.TextToText`.
        val_ids: validation token lists (with ``val_labels``) for checkpoint choice.
        val_labels: their targets.
        config: the budget and optimiser (:class:`TrainConfig`).
        desc: the progress bar's label.

    Returns:
        The :class:`TrainResult`; ``prompt`` holds the best checkpoint.
    """
    cfg = config or TrainConfig()
    objective = as_objective(objective)
    torch.manual_seed(cfg.seed)
    prompt.to(backbone.device).train()
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR.get(prompt.method, 0.03)
    optimizer = torch.optim.AdamW(prompt.param_groups(lr), weight_decay=cfg.weight_decay)
    warmup = max(1, int(cfg.warmup_ratio * cfg.steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = np.random.default_rng(cfg.seed)
    has_val = bool(val_ids) and val_labels is not None and cfg.eval_every > 0
    best: tuple[float, int, dict[str, Any] | None] = (float("-inf"), 0, None)
    history: list[dict[str, float]] = []
    order: list[int] = []
    started = time.perf_counter()
    input_only = prompt.applied().input_only  # else the input's own keys and values depend on the module
    train_cache = _input_cache(backbone, train_ids, cfg) if input_only else None
    val_cache = _input_cache(backbone, val_ids, cfg) if has_val and input_only else None
    bar = tqdm(range(cfg.steps), desc=desc, disable=not cfg.progress, unit="step", leave=False)
    running_loss, running_metric = 0.0, 0.0
    for step in bar:
        if len(order) < cfg.batch_size:
            order.extend(rng.permutation(len(train_ids)).tolist())
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        applied = prompt.applied()
        targets = [train_labels[i] for i in idx]
        candidates = objective.candidates(targets)
        if train_cache is not None:
            batch_prompts = applied.prompt.unsqueeze(0).expand(len(idx), -1, -1)
            scores = train_cache.label_scores(idx, batch_prompts, candidates)
        else:
            batch = ModuleBatch.shared(applied, len(idx))
            scores = backbone.label_scores(batch, [train_ids[i] for i in idx], candidates)
        loss = objective.loss(scores, targets)
        penalty = prompt.regularization()
        if penalty is not None:
            loss = loss + penalty
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(prompt.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        loss_value = loss.item()
        running_loss = 0.9 * running_loss + 0.1 * loss_value if step else loss_value
        batch_metric = objective.batch_metric(scores, targets)
        running_metric = 0.9 * running_metric + 0.1 * batch_metric if step else batch_metric
        record = {"step": step + 1, "loss": loss_value}
        if has_val and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            val = evaluate_prompt(backbone, prompt, val_ids, val_labels, objective, cfg.eval_batch_size, val_cache)
            record[objective.metric] = val
            if best[2] is None or val > best[0]:
                best = (val, step + 1, copy.deepcopy(prompt.state_dict()))
            prompt.train()
        history.append(record)
        bar.set_postfix(
            loss=f"{running_loss:.3f}",
            **{objective.metric.removeprefix("val_"): f"{running_metric:.2f}"},
            best_val=f"{best[0]:.2f}" if best[2] is not None else "-",
        )
    if best[2] is not None:
        prompt.load_state_dict(best[2])
    prompt.eval()
    return TrainResult(
        best_step=best[1] if has_val else cfg.steps,
        best_val=best[0] if has_val else None,
        seconds=time.perf_counter() - started,
        steps=cfg.steps,
        history=history,
        val_metric=objective.metric,
    )


def _input_cache(backbone: FrozenLM, input_ids: list[list[int]] | None, cfg: TrainConfig) -> InputCache | None:
    """An input cache when every input has tokens before its prompt slot and caching is on."""
    if not input_ids or not cfg.input_cache_mb or backbone.is_encoder_decoder:
        return None
    if any(not ids or ids[0] == PROMPT_SLOT or PROMPT_SLOT not in ids for ids in input_ids):
        return None  # the prompt comes first: nothing before it to keep
    return InputCache(
        backbone, input_ids, budget_bytes=cfg.input_cache_mb << 20, dtype=torch.bfloat16, batch_size=cfg.eval_batch_size
    )


def evaluate_prompt(
    backbone: FrozenLM,
    prompt: TaskModule | torch.Tensor,
    input_ids: list[list[int]],
    targets: Sequence[Any],
    objective: Objective | list[list[int]],
    batch_size: int = 16,
    cache: InputCache | None = None,
) -> float:
    """The objective's validation score (accuracy, or mean target log-probability) of one module
    (or plain (n, d) prompt) on pre-tokenised inputs (their keys and values from ``cache`` if
    given; only a prompt-only module can use one)."""
    objective = as_objective(objective)
    candidates = objective.candidates(targets)
    with torch.inference_mode():
        applied = prompt.applied() if isinstance(prompt, TaskModule) else Applied(prompt)
        if cache is not None and applied.input_only:
            scores = []
            for start in range(0, len(input_ids), batch_size):
                rows = list(range(start, min(len(input_ids), start + batch_size)))
                prompts = applied.prompt.unsqueeze(0).expand(len(rows), -1, -1)
                batch = cache.label_scores(rows, prompts, [candidates[r] for r in rows])
                scores.extend(s[: len(candidates[r])] for r, s in zip(rows, batch.float().cpu().numpy()))
            return objective.score(scores, targets)
        scores = predict_scores(backbone, [applied], [0] * len(input_ids), input_ids, candidates, batch_size)
    return objective.score(scores, targets)
