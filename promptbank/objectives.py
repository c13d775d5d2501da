"""What a task's module is trained to do, as candidate continuations scored by the frozen LLM.

Both task types reduce to ``FrozenLM.label_scores`` (the mean log-probability of a token list
after ``prompt + template(text)``), so both run through the same forward pass, input cache and
per-example modules:

* :class:`Classification`: every example scores all of the task's label words; the loss is the
  cross-entropy over them and the metric is accuracy.
* :class:`TextToText`: every example scores one continuation, its own target followed by EOS
  (teacher forcing); the loss is the token-level cross-entropy of the target (the negative mean
  log-probability, averaged over the batch) and the validation metric is that mean log-probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Classification:
    """Label-word classification; an example's target is its label index.

    Args:
        label_ids: the task's label words as token lists.
    """

    label_ids: list[list[int]]
    metric: str = "val_acc"

    def candidates(self, targets: Sequence[Any]) -> list[list[list[int]]]:
        """The token lists each example scores: all the labels."""
        return [self.label_ids] * len(targets)

    def loss(self, scores: torch.Tensor, targets: Sequence[Any]) -> torch.Tensor:
        y = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=scores.device)
        return torch.nn.functional.cross_entropy(scores.float(), y)

    def batch_metric(self, scores: torch.Tensor, targets: Sequence[Any]) -> float:
        """Accuracy of a training batch (for the progress bar)."""
        return float((scores.argmax(-1).cpu().numpy() == np.asarray(targets)).mean())

    def score(self, scores: Sequence[np.ndarray], targets: Sequence[Any]) -> float:
        """Accuracy over a validation set (higher is better)."""
        if not len(targets):
            return float("nan")
        return float(np.mean([int(np.argmax(s)) == int(t) for s, t in zip(scores, targets)]))


@dataclass(frozen=True)
class TextToText:
    """Generated answers; an example's target is its answer's token list, EOS included."""

    metric: str = "val_logp"

    def candidates(self, targets: Sequence[Any]) -> list[list[list[int]]]:
        """The token list each example scores: its own target."""
        return [[list(t)] for t in targets]

    def loss(self, scores: torch.Tensor, targets: Sequence[Any]) -> torch.Tensor:
        return -scores[:, 0].float().mean()

    def batch_metric(self, scores: torch.Tensor, targets: Sequence[Any]) -> float:
        """Mean log-probability per target token of a training batch (for the progress bar)."""
        return float(scores[:, 0].detach().float().mean())

    def score(self, scores: Sequence[np.ndarray], targets: Sequence[Any]) -> float:
        """Mean log-probability per target token over a validation set (higher is better)."""
        return float(np.mean([s[0] for s in scores])) if len(scores) else float("nan")


Objective = Classification | TextToText
