"""Linear-probe baseline: logistic regression on frozen MiniLM sentence embeddings, per task.

A cheap non-LLM reference (benchmarks.md): each task gets its own classifier over the same
keys the bank routes with, and is told the task id at test time. Nothing is shared between
tasks, so it cannot forget; it shows what a frozen sentence encoder alone gets on the budgets.
The L2 penalty is picked per task on the validation split.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from avalanche.benchmarks.scenarios import CLExperience

from promptbank.backbone import FrozenLM
from promptbank.keys import KeyEncoder, make_key_encoder

from .benchmark import TextTable, experience_rows
from .splits import TaskData
from .strategy import StreamStrategy, TaskEvaluation, TrainReport

PENALTIES = (1e-4, 1e-3, 1e-2)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, n_classes: int, penalty: float, iterations: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression, full batch L-BFGS (deterministic for fixed inputs)."""
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + penalty * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


class LinearProbe(StreamStrategy):
    """One logistic regression per task on MiniLM keys; the task id is given at test time."""

    name = "linear-probe"

    def __init__(
        self, backbone: FrozenLM, *, key_encoder: KeyEncoder | None = None, progress: bool = True, **_unused
    ) -> None:
        # The LLM, prompt and step arguments of the shared baseline signature are not used.
        self.encoder = key_encoder or make_key_encoder("minilm")
        self.progress = progress
        self._heads: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._answers: dict[str, list[str]] = {}

    def train(self, experience: CLExperience, task: TaskData, table: TextTable) -> TrainReport:
        started = time.perf_counter()
        rows, labels = experience_rows(experience.dataset)
        x, y = self.encoder.encode(table.lookup(rows)), np.asarray(labels)
        k = len(task.label_names)
        best = None
        if task.val_texts:
            xv, yv = self.encoder.encode(task.val_texts), np.asarray(task.val_labels)
            for penalty in PENALTIES:
                w, b = fit_logistic(x, y, k, penalty)
                acc = float(np.mean((torch.as_tensor(xv) @ w + b).argmax(1).numpy() == yv))
                if best is None or acc > best[0]:
                    best = (acc, penalty, w, b)
        else:
            best = (float("nan"), PENALTIES[1], *fit_logistic(x, y, k, PENALTIES[1]))
        self._heads[task.name] = best[2], best[3]
        return TrainReport(
            seconds=time.perf_counter() - started,
            trainable_params=int(x.shape[1] * k + k),
            extra={"strategy": self.name, "val_acc": best[0], "penalty": best[1]},
        )

    def evaluate(self, task_index: int, task: TaskData, seen: list[TaskData]) -> TaskEvaluation:
        if task.name not in self._answers:  # a task's head never changes once fitted
            w, b = self._heads[task.name]
            logits = torch.as_tensor(self.encoder.encode(task.test_texts)) @ w + b
            self._answers[task.name] = [task.label_names[int(i)] for i in logits.argmax(1)]
        return TaskEvaluation(predicted=list(self._answers[task.name]))
