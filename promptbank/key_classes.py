"""The router's own class posterior as a second opinion on a classification task's answer.

An ``lda`` (or ``gaussian``) router keeps, for every task, one mean per class and a covariance
shared by all tasks: a linear discriminant classifier of the task's labels, fitted on every
labelled input the router saw (training, validation and key inputs: up to ``key_per_class`` per
class, far more than the prompt trains on). ``BankConfig.key_classes`` adds its class
log-posterior to the prompt's label scores, ``score + w x log p(class | key)``, with ``w`` chosen
per task on the validation inputs among ``KEY_CLASS_WEIGHTS`` (0 keeps the prompt alone).

Validation sets are small (16 per class by default), so several weights often tie; the largest of
them is kept, because the router's classifier has seen many more labelled inputs than the prompt
trained on, and a tie means validation found no evidence against trusting it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .bank import PromptBank

#: Weights tried on a task's validation inputs; the largest of the best is kept.
KEY_CLASS_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def key_class_scores(
    bank: PromptBank, name: str, keys: np.ndarray, held_in: Sequence[int] | None = None
) -> np.ndarray | None:
    """(n, C) log posteriors of a task's classes from the router, in label order.

    Args:
        bank: the bank.
        name: a classification task.
        keys: (n, dim) keys of the inputs.
        held_in: the inputs' label indices when the router learnt from their keys (validation
            inputs): each is then measured leave-one-out against its own class.

    Returns:
        The scores, or None if the router has no class posterior (a ``knn`` router, or a task
        without labelled keys). A label without keys scores -inf.
    """
    posterior = getattr(bank.router, "class_log_posterior", None)
    if posterior is None:
        return None
    info = bank.task_info(name)
    classes, logp = posterior(keys, info.task_id, held_in=None if held_in is None else np.asarray(held_in))
    if (classes < 0).any():
        return None
    out = np.full((len(keys), len(info.label_names)), -np.inf)
    out[:, classes] = logp
    return out


def fused(scores: np.ndarray, key_scores: np.ndarray, weight: float) -> np.ndarray:
    """Label scores plus ``weight`` x the router's class log-posteriors (unchanged at weight 0)."""
    return scores if weight == 0 else scores + weight * key_scores


def validated_weight(bank: PromptBank, name: str, val_texts: Sequence[str], val_labels: Sequence[int]) -> float:
    """The ``KEY_CLASS_WEIGHTS`` entry whose fused answers are right most often on the validation
    inputs (``chosen_weight``; 0 when the router has no class posterior for the task).

    Args:
        bank: a bank holding the task, its weight not yet set (its answers are the prompt's).
        name: the task.
        val_texts: its validation inputs (their keys are in the router: measured leave-one-out).
        val_labels: their label indices.

    Returns:
        The weight.
    """
    key_scores = key_class_scores(bank, name, bank.key_encoder.encode(list(val_texts)), held_in=val_labels)
    if key_scores is None:
        return 0.0
    scores = np.array([list(p.scores.values()) for p in bank.predict(list(val_texts), task=name)])
    truth = np.asarray(val_labels)
    return chosen_weight([float(np.mean(fused(scores, key_scores, w).argmax(1) == truth)) for w in KEY_CLASS_WEIGHTS])


def chosen_weight(accuracies: Sequence[float]) -> float:
    """The largest of the ``KEY_CLASS_WEIGHTS`` with the best validation accuracy.

    Args:
        accuracies: validation accuracy of the fused answers at each of ``KEY_CLASS_WEIGHTS``.

    Returns:
        The weight.
    """
    right = np.asarray(accuracies, dtype=np.float64)
    best = np.flatnonzero(right >= right.max() - 1e-12)
    return KEY_CLASS_WEIGHTS[int(best[-1])]
