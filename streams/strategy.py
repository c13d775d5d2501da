"""What the stream runner needs from a continual-learning strategy.

A strategy sees tasks one at a time (``train``) and, after each, answers the test inputs of
every task seen so far (``evaluate``). The prompt bank, zero-shot and the Avalanche baselines
all implement this, so they run on the same stream, backbone and budgets side by side.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from avalanche.benchmarks.scenarios import CLExperience

from promptbank.text_metrics import PRIMARY, text_scores

from .benchmark import TextTable
from .splits import TaskData


def task_metric(task: TaskData) -> str:
    """The score a task is judged by: accuracy, or (text-to-text) ROUGE-L F of the generated answers."""
    return PRIMARY if task.generates else "accuracy"


def task_score(task: TaskData, predicted: list[str | None]) -> float:
    """``task_metric`` of the answers to ``task``'s test inputs (None: unanswered, scores 0)."""
    if task.generates:
        return text_scores(predicted, task.test_targets)[PRIMARY]
    truth = [task.label_names[y] for y in task.test_labels]
    return float(np.mean([p == t for p, t in zip(predicted, truth)]))


@dataclass
class TaskEvaluation:
    """Per test input of one task: the predicted label name or generated answer, and (if routed)
    the chosen task index."""

    predicted: list[str | None]
    routed_task: np.ndarray | None = None  # task index per input, -1 = unknown; None = task id given
    oracle_predicted: list[str | None] | None = None  # predictions with the true task id, when different
    key_routed_task: np.ndarray | None = None  # the router's pick from keys alone, before re-scoring
    module_predicted: list[str | None] | None = None  # the true task's module alone (no router classes)

    def accuracy(self, task: TaskData) -> float:
        """The task's score (``task_metric``: accuracy, or ROUGE-L for text-to-text)."""
        return task_score(task, self.predicted)

    def oracle_accuracy(self, task: TaskData) -> float | None:
        if self.oracle_predicted is None:
            return None if self.routed_task is not None else self.accuracy(task)
        return task_score(task, self.oracle_predicted)

    def module_accuracy(self, task: TaskData) -> float | None:
        """The true task's module on its own: without the router's class posterior (``key_classes``)."""
        return None if self.module_predicted is None else task_score(task, self.module_predicted)


@dataclass
class TrainReport:
    """What training one task cost and produced."""

    seconds: float
    trainable_params: int = 0
    bytes_per_task: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class StreamStrategy(ABC):
    """A strategy fed one Avalanche experience (= one task) at a time."""

    name: str = "strategy"
    routes: bool = False  # True when the strategy picks the task itself (no task id at test time)

    @abstractmethod
    def train(self, experience: CLExperience, task: TaskData, table: TextTable) -> TrainReport:
        """Learn task ``experience.current_experience``; ``table`` maps dataset row ids to texts."""

    @abstractmethod
    def evaluate(self, task_index: int, task: TaskData, seen: list[TaskData]) -> TaskEvaluation:
        """Answer ``task``'s test inputs after training on ``seen`` tasks (in stream order)."""

    def save(self, folder) -> None:  # noqa: B027 - optional hook
        """Persist what a resumed run needs (the bank does; baselines retrain)."""
