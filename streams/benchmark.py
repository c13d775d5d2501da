"""Turn a list of tasks into an Avalanche benchmark: one experience per task.

Avalanche datasets hold tensors, so each example is stored as (row id, label, task id) and the
texts live in a ``TextTable`` that strategies use to look the rows up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.utils import AvalancheDataset, DataAttribute
from avalanche.benchmarks.utils.classification_dataset import TaskAwareClassificationDataset
from avalanche.benchmarks.utils.data_attribute import TaskLabels
from torch.utils.data import TensorDataset

from .splits import TaskData


@dataclass
class TextTable:
    """All texts of a stream, addressed by integer row ids."""

    texts: list[str] = field(default_factory=list)

    def add(self, texts: Sequence[str]) -> torch.Tensor:
        start = len(self.texts)
        self.texts.extend(texts)
        return torch.arange(start, len(self.texts))

    def lookup(self, rows: torch.Tensor | Sequence[int]) -> list[str]:
        return [self.texts[int(r)] for r in rows]


def _experience_dataset(rows: torch.Tensor, labels: Sequence[int], task_id: int) -> AvalancheDataset:
    y = torch.as_tensor(list(labels), dtype=torch.long)
    t = torch.full_like(y, task_id)
    base = TensorDataset(rows, y)  # the task label is appended by the data attribute
    return TaskAwareClassificationDataset(
        [base],
        data_attributes=[
            DataAttribute(y.tolist(), "targets"),
            DataAttribute(TaskLabels(t.tolist()), "targets_task_labels", use_in_getitem=True),
        ],
    )


def build_benchmark(tasks: Sequence[TaskData]):
    """An Avalanche ``CLScenario`` with train/valid/test streams (experience i = task i) and its text table."""
    table = TextTable()
    streams: dict[str, list[AvalancheDataset]] = {"train": [], "valid": [], "test": []}
    for task_id, task in enumerate(tasks):
        for split, texts, labels in (
            ("train", task.train_texts, task.train_labels),
            ("valid", task.val_texts, task.val_labels),
            ("test", task.test_texts, task.test_labels),
        ):
            streams[split].append(_experience_dataset(table.add(texts), labels, task_id))
    return benchmark_from_datasets(**streams), table


def experience_rows(dataset: AvalancheDataset) -> tuple[list[int], list[int]]:
    """Row ids and labels of an experience's dataset, in order."""
    rows, labels = [], []
    for item in dataset:
        rows.append(int(item[0]))
        labels.append(int(item[1]))
    return rows, labels
