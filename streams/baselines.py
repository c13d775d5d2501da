"""Baselines for the prompt bank, on the same frozen LLM, prompt method/shape and budgets.

- ``zero-shot``: the frozen LLM with the task's template and no prompt (the floor): it scores the
  verbaliser for classification tasks and decodes greedily for text-to-text tasks;
- ``naive``, ``ewc``, ``lwf``, ``replay``: ONE shared soft prompt trained task after task by
  Avalanche's own strategies (``avalanche.training.Naive/EWC/LwF/Replay``);
- ``joint``: one shared prompt trained on the union of all tasks seen so far (Avalanche's
  ``Cumulative``): the multi-task reference.

Every trained baseline follows the bank trainer's per-task recipe (AdamW on the prompt's
``param_groups`` at the method's ``DEFAULT_LR``, ``steps`` updates with 10 % warmup + cosine
decay, gradient clipping at 1.0) but keeps the last prompt (no validation checkpointing), and
is scored by ``predict_scores`` with the true task's template and label set, exactly like the
bank's oracle accuracy. Avalanche's own evaluation loop is never used for the numbers.

Defaults (constructor keywords; the registry factories use them):
- EWC: ``ewc_lambda=EWC_LAMBDA=100`` (calibrated, see its comment), mode "separate" (Avalanche's
  default; a prompt is tiny, so one importance/anchor pair per task costs nothing). Avalanche
  computes the importances with one extra forward+backward pass over each task's training set;
- LwF: ``alpha=1.0, temperature=2.0`` (Avalanche's defaults, those of Li & Hoiem). The model is
  multi-head in Avalanche's sense (one "head" = one task's template + verbaliser), so LwF
  distils every previous task's answers on the current inputs: with T tasks seen, a step runs
  about 2T forwards (T-1 frozen teacher heads, T student heads), so LwF's cost grows with the stream;
- Replay: ``mem_size=200`` (Avalanche's default; ExperienceBalancedBuffer, so 40 per task after
  5 tasks); each step mixes ``batch_size - batch_size // 2`` new and ``batch_size // 2`` replayed
  examples, so a step costs the same as every other baseline's (Avalanche would add a full
  extra memory batch by default).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from avalanche.benchmarks.scenarios import CLExperience
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
from avalanche.models import MultiTaskModule
from avalanche.training import EWC, LwF, Naive, Replay
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin, SupervisedPlugin
from avalanche.training.supervised.cumulative import Cumulative
from avalanche.training.templates import SupervisedTemplate
from torch import nn
from tqdm.auto import tqdm

from promptbank.backbone import FrozenLM
from promptbank.errors import InvalidDataError
from promptbank.generation import generate
from promptbank.module_batch import Applied, ModuleBatch
from promptbank.prompts import TaskModule, build_prompt
from promptbank.registry import Registry
from promptbank.trainer import DEFAULT_LR, TrainConfig, predict_scores

from .benchmark import TextTable
from .probe import LinearProbe
from .splits import TaskData
from .strategy import StreamStrategy, TaskEvaluation, TrainReport

PAD_SCORE = -1e4  # padding for absent labels: finite, so LwF's KL and CE never meet inf - inf
# EWC's penalty is lambda * sum F (theta - theta*)^2 with F the mean squared minibatch gradient.
# Measured on SmolLM2-135M with ULPT (sms_spam -> trec, 16 per class, 30 steps each, lambda = 0):
# the unconstrained drift on task 2 gives sum F dtheta^2 = 0.069 while task 2's CE is ~1.1.
# lambda = 100 makes that drift cost ~7 nats: EWC must trade old against new (lambda ~ 1 would
# ignore the penalty, lambda >= 1000 would all but freeze the prompt after task 1).
EWC_LAMBDA = 100.0
LWF_ALPHA, LWF_TEMPERATURE = 1.0, 2.0
REPLAY_MEM_SIZE = 200
_RECIPE = TrainConfig()  # warmup ratio, grad clip and eval batch size shared with the bank trainer


def predict_labels(
    backbone: FrozenLM,
    module: Applied | torch.Tensor,
    task: TaskData,
    max_input_tokens: int,
    batch_size: int = _RECIPE.eval_batch_size,
    progress: bool = False,
) -> list[str]:
    """Answers to ``task``'s test inputs with one module (or one (n, d) prompt; n may be 0): label
    names, or for a text-to-text task the greedy answers (the library's default decoding)."""
    ids = backbone.encode(task.test_texts, task.template, max_input_tokens).input_ids
    applied = module if isinstance(module, Applied) else Applied(module.detach())
    if task.generates:
        return [
            g.text for g in generate(backbone, [applied], [0] * len(ids), ids, batch_size=batch_size, progress=progress)
        ]
    label_ids = backbone.label_token_ids(task.label_names)
    scores = predict_scores(
        backbone,
        [applied],
        [0] * len(ids),
        ids,
        [label_ids] * len(ids),
        batch_size,
        progress=progress,
        desc=f"eval {task.name}",
    )
    return [task.label_names[int(np.argmax(s))] for s in scores]


class ZeroShot(StreamStrategy):
    """The frozen LLM with an empty prompt: nothing is trained, so every answer is cached."""

    name = "zero-shot"

    def __init__(
        self,
        backbone: FrozenLM,
        *,
        method: str = "ulpt",
        n_tokens: int = 20,
        prompt_options: dict | None = None,
        steps: int = 100,
        batch_size: int = 8,
        lr: float | None = None,
        seed: int = 0,
        max_input_tokens: int = 128,
        progress: bool = True,
    ) -> None:
        # Prompt and training arguments are accepted (one registry signature) and unused.
        self.backbone, self.max_input_tokens, self.progress = backbone, max_input_tokens, progress
        self._cache: dict[tuple[int, str], list[str]] = {}

    def train(self, experience: CLExperience, task: TaskData, table: TextTable) -> TrainReport:
        """Nothing is learned: no time spent, no parameters."""
        return TrainReport(seconds=0.0, trainable_params=0, extra={"strategy": "zero-shot"})

    def evaluate(self, task_index: int, task: TaskData, seen: list[TaskData]) -> TaskEvaluation:
        key = (task_index, task.name)
        if key not in self._cache:  # the answers cannot change from one experience to the next
            empty = torch.zeros(0, self.backbone.hidden_size, device=self.backbone.device)
            self._cache[key] = predict_labels(self.backbone, empty, task, self.max_input_tokens, progress=self.progress)
        return TaskEvaluation(predicted=list(self._cache[key]))


@dataclass
class _TaskHead:
    """How a task is asked: its template and the token ids of its label names."""

    template: str
    label_ids: list[list[int]]


class SharedPromptModel(MultiTaskModule):
    """Frozen LLM + one shared soft prompt as an Avalanche multi-task model.

    Input x: TextTable row ids; task labels pick each example's template and label set, so a
    minibatch mixing tasks (Replay, Cumulative) is one forward pass. Output: label scores
    padded to ``width`` with PAD_SCORE. Only the prompt is a submodule: the LLM is a plain
    attribute, invisible to ``parameters()`` (EWC, LwF, the optimiser) and never copied.
    """

    def __init__(self, backbone: FrozenLM, prompt: TaskModule, max_input_tokens: int = 128) -> None:
        super().__init__()
        self.prompt = prompt
        self.backbone = backbone  # FrozenLM is not an nn.Module: a plain attribute, not a submodule
        self.max_input_tokens = max_input_tokens
        self.table: TextTable | None = None
        self.heads: dict[int, _TaskHead] = {}
        self.width = 0
        self._ids: dict[tuple[int, int], list[int]] = {}  # (row, task) -> token ids, shared by copies

    def add_task(self, task_id: int, task: TaskData) -> None:
        self.heads[task_id] = _TaskHead(task.template, self.backbone.label_token_ids(task.label_names))
        self.width = max(self.width, len(task.label_names))

    def adaptation(self, experience: CLExperience) -> None:
        """No-op: the heads come from ``add_task`` (experiences built by
        ``benchmark_from_datasets`` carry no ``task_labels``/``classes_in_this_experience``,
        which MultiTaskModule's default adaptation reads)."""

    def forward(
        self, x: torch.Tensor, task_labels: torch.Tensor | int | None
    ) -> torch.Tensor | dict[int, torch.Tensor]:
        rows = [int(r) for r in x.tolist()]
        if task_labels is None:  # Avalanche asks for every known head (LwF distillation)
            return self.forward_all_tasks(x)
        tasks = (
            [int(task_labels)] * len(rows) if isinstance(task_labels, int) else [int(t) for t in task_labels.tolist()]
        )
        return self._scores(rows, tasks)

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.forward(x, int(task_label))

    def forward_all_tasks(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return {t: self.forward_single_task(x, t) for t in self.heads}

    def _scores(self, rows: list[int], tasks: list[int]) -> torch.Tensor:
        ids = self._token_ids(rows, tasks)
        labels = [self.heads[t].label_ids for t in tasks]
        batch = ModuleBatch.shared(self.prompt.applied(), len(rows))  # one module shared by every task
        scores = self.backbone.label_scores(batch, ids, labels).float()
        scores = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, PAD_SCORE))
        return nn.functional.pad(scores, (0, max(self.width - scores.shape[1], 0)), value=PAD_SCORE)

    def _token_ids(self, rows: list[int], tasks: list[int]) -> list[list[int]]:
        missing: dict[int, list[int]] = {}
        for r, t in zip(rows, tasks):
            if (r, t) not in self._ids:
                missing.setdefault(t, []).append(r)
        for t, todo in missing.items():
            todo = list(dict.fromkeys(todo))
            assert self.table is not None, "set .table before the forward pass"
            encoded = self.backbone.encode(self.table.lookup(todo), self.heads[t].template, self.max_input_tokens)
            self._ids.update({(r, t): ids for r, ids in zip(todo, encoded.input_ids)})
        return [self._ids[(r, t)] for r, t in zip(rows, tasks)]

    def __deepcopy__(self, memo: dict) -> SharedPromptModel:
        """LwF keeps ``deepcopy(model)`` as its teacher: copy the prompt and heads, share the
        LLM, the text table and the token cache (all read-only here)."""
        for shared in (self.backbone, self.table, self._ids):
            memo[id(shared)] = shared
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        clone.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        return clone


class _StepRecipe(SupervisedPlugin):
    """Makes an Avalanche strategy follow the bank trainer's recipe for each experience:
    exactly ``steps`` updates, warmup + cosine learning rate, gradient clipping; records losses."""

    def __init__(self, steps: int, base_lrs: list[float], desc: str, progress: bool) -> None:
        super().__init__()
        self.steps, self.base_lrs, self.desc, self.progress = steps, base_lrs, desc, progress
        self.warmup = max(1, int(_RECIPE.warmup_ratio * steps))
        self.step = 0
        self.losses: list[float] = []
        self._bar: tqdm | None = None

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - self.warmup) / max(1, self.steps - self.warmup)))

    def before_training_exp(self, strategy: SupervisedTemplate, **kwargs: Any) -> None:
        self.step, self.losses = 0, []
        self._bar = tqdm(total=self.steps, desc=self.desc, disable=not self.progress, unit="step", leave=False)

    def before_training_iteration(self, strategy: SupervisedTemplate, **kwargs: Any) -> None:
        for group, base in zip(strategy.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.factor(self.step)

    def before_update(self, strategy: SupervisedTemplate, **kwargs: Any) -> None:
        if _RECIPE.grad_clip:
            torch.nn.utils.clip_grad_norm_(strategy.model.parameters(), _RECIPE.grad_clip)

    def after_training_iteration(self, strategy: SupervisedTemplate, **kwargs: Any) -> None:
        self.step += 1
        self.losses.append(float(strategy.loss.detach()))
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{np.mean(self.losses[-10:]):.3f}")
        if self.step >= self.steps:
            strategy.stop_training()  # ends the epoch loop too (train_epochs is only an upper bound)

    def after_training_exp(self, strategy: SupervisedTemplate, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.close()


class AvalancheBaseline(StreamStrategy):
    """One shared prompt for every task, trained experience by experience by an Avalanche strategy."""

    name = "avalanche"

    def __init__(
        self,
        backbone: FrozenLM,
        *,
        method: str = "ulpt",
        n_tokens: int = 20,
        prompt_options: dict | None = None,
        steps: int = 100,
        batch_size: int = 8,
        lr: float | None = None,
        seed: int = 0,
        max_input_tokens: int = 128,
        progress: bool = True,
    ) -> None:
        if int(steps) < 1 or int(batch_size) < 1:
            raise InvalidDataError(f"{self.name} needs steps >= 1 and batch_size >= 1, got {steps} and {batch_size}")
        self.backbone, self.steps, self.seed, self.progress = backbone, int(steps), int(seed), progress
        self.max_input_tokens = max_input_tokens
        options = {"seed": seed, **(prompt_options or {})}
        self.prompt = build_prompt(
            method, n_tokens, backbone.hidden_size, shapes=backbone.linear_shapes(), **options
        ).to(backbone.device)
        self.lr = lr if lr is not None else DEFAULT_LR.get(method, 0.03)
        self.model = SharedPromptModel(backbone, self.prompt, max_input_tokens)
        optimizer = torch.optim.AdamW(self.prompt.param_groups(self.lr), weight_decay=_RECIPE.weight_decay)
        self.recipe = _StepRecipe(self.steps, [g["lr"] for g in optimizer.param_groups], self.name, progress)
        self.strategy = self.make_strategy(
            model=self.model,
            optimizer=optimizer,
            criterion=nn.CrossEntropyLoss(),
            train_mb_size=batch_size,
            train_epochs=self.steps,  # an upper bound (>= 1 batch per epoch): the recipe plugin stops after `steps` updates
            eval_mb_size=_RECIPE.eval_batch_size,
            device=backbone.device,
            plugins=[self.recipe],
            evaluator=_mlflow_evaluator(),
        )

    def make_strategy(self, **common: Any) -> SupervisedTemplate:
        """The Avalanche strategy driving the shared prompt (subclasses pick one)."""
        raise NotImplementedError

    def train(self, experience: CLExperience, task: TaskData, table: TextTable) -> TrainReport:
        # benchmark_from_datasets' experiences lack `task_labels`, and without them Avalanche's
        # forward silently drops the minibatch task ids; with_task_labels adds them (on a copy).
        experience = with_task_labels(experience)
        for t in experience.task_labels:
            self.model.add_task(int(t), task)
        self.model.table = table
        self.model.width = max(self.model.width, _stream_width(experience))
        self.strategy.optimizer.state.clear()  # a fresh AdamW per task, like the bank's trainer
        self.recipe.desc = f"{self.name} {task.name}"
        torch.manual_seed(self.seed * 1000 + experience.current_experience)  # shuffling, replay sampling
        started = time.perf_counter()
        self.strategy.train(experience, eval_streams=[])
        return TrainReport(
            seconds=time.perf_counter() - started,
            trainable_params=self.prompt.num_trainable(),
            extra={
                "strategy": type(self.strategy).__name__,
                "steps": self.recipe.step,
                "shared_prompt": True,
                "prompt_bytes": 4 * self.prompt.num_trainable(),  # one fp32 prompt for all tasks, none per task
                "final_loss": float(np.mean(self.recipe.losses[-10:])) if self.recipe.losses else None,
                **self.extra_report(),
            },
        )

    def extra_report(self) -> dict[str, Any]:
        return {}

    def evaluate(self, task_index: int, task: TaskData, seen: list[TaskData]) -> TaskEvaluation:
        with torch.no_grad():
            module = self.prompt.applied().frozen(self.backbone.device)
        return TaskEvaluation(
            predicted=predict_labels(self.backbone, module, task, self.max_input_tokens, progress=self.progress)
        )


def _mlflow_evaluator() -> EvaluationPlugin:
    """Training loss and accuracy per minibatch, logged to the active MLflow run (the task's run in
    ``promptbank run``) the way Avalanche users read them; the stream's accuracy numbers come
    from ``evaluate``, on the bank's terms."""
    from .mlflow_logger import MLflowLogger  # noqa: PLC0415  (mlflow loads only for a baseline run)

    return EvaluationPlugin(
        loss_metrics(minibatch=True), accuracy_metrics(minibatch=True), loggers=[MLflowLogger(strict=False)]
    )


def _stream_width(experience: CLExperience) -> int:
    """Most labels of any task in the experience's stream: the fixed output width."""
    try:
        return max(int(max(exp.dataset.targets.uniques)) + 1 for exp in experience.origin_stream)
    except (AttributeError, TypeError, ValueError):  # a bare experience: widths grow with the tasks
        return 0


class NaiveBaseline(AvalancheBaseline):
    """Plain fine-tuning of the shared prompt: the catastrophic-forgetting reference."""

    name = "naive"

    def make_strategy(self, **common: Any) -> SupervisedTemplate:
        return Naive(**common)


class EWCBaseline(AvalancheBaseline):
    """Elastic weight consolidation on the prompt's parameters."""

    name = "ewc"

    def __init__(self, backbone: FrozenLM, *, ewc_lambda: float = EWC_LAMBDA, **kwargs: Any) -> None:
        self.ewc_lambda = float(ewc_lambda)
        super().__init__(backbone, **kwargs)

    def make_strategy(self, **common: Any) -> SupervisedTemplate:
        return EWC(ewc_lambda=self.ewc_lambda, mode="separate", **common)


class LwFBaseline(AvalancheBaseline):
    """Learning without forgetting: distil the previous prompt's answers for every old task."""

    name = "lwf"

    def __init__(
        self, backbone: FrozenLM, *, alpha: float = LWF_ALPHA, temperature: float = LWF_TEMPERATURE, **kwargs: Any
    ) -> None:
        self.alpha, self.temperature = float(alpha), float(temperature)
        super().__init__(backbone, **kwargs)

    def make_strategy(self, **common: Any) -> SupervisedTemplate:
        return LwF(alpha=self.alpha, temperature=self.temperature, **common)


class ReplayBaseline(AvalancheBaseline):
    """Experience replay from a small buffer of earlier tasks' training examples."""

    name = "replay"

    def __init__(self, backbone: FrozenLM, *, mem_size: int = REPLAY_MEM_SIZE, **kwargs: Any) -> None:
        self.mem_size = int(mem_size)
        super().__init__(backbone, **kwargs)

    def make_strategy(self, **common: Any) -> SupervisedTemplate:
        strategy = Replay(mem_size=self.mem_size, **common)
        batch = common["train_mb_size"]
        if batch >= 2:  # same examples per step as the other baselines: half new, half replayed
            plugin = self.replay_plugin(strategy)
            plugin.batch_size, plugin.batch_size_mem = batch - batch // 2, batch // 2
        return strategy

    @staticmethod
    def replay_plugin(strategy: SupervisedTemplate) -> ReplayPlugin:
        return next(p for p in strategy.plugins if isinstance(p, ReplayPlugin))

    def extra_report(self) -> dict[str, Any]:
        return {
            "replay_buffer": len(self.replay_plugin(self.strategy).storage_policy.buffer),
            "mem_size": self.mem_size,
        }


class JointBaseline(AvalancheBaseline):
    """Multi-task reference: at each experience the shared prompt keeps training on the union of
    all tasks seen so far (Avalanche's Cumulative: shuffled, so batches mix tasks in proportion
    to their training sizes), ``steps`` more updates per experience."""

    name = "joint"

    def make_strategy(self, **common: Any) -> SupervisedTemplate:
        return Cumulative(**common)


#: Every baseline strategy, by the name ``promptbank run --baseline`` takes.
BASELINES: Registry[Callable[..., StreamStrategy]] = Registry("baseline")
for _name, _cls in (
    ("zero-shot", ZeroShot),
    ("naive", NaiveBaseline),
    ("ewc", EWCBaseline),
    ("lwf", LwFBaseline),
    ("replay", ReplayBaseline),
    ("joint", JointBaseline),
    ("linear-probe", LinearProbe),
):
    BASELINES.register(_name)(_cls)
