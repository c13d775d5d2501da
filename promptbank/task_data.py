"""What ``PromptBank.add_task`` was given, checked and turned into training targets: label
indices (classification) or answer token lists (text-to-text), the objective they train, and the
labels the router learns the task's keys with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .backbone import FrozenLM
from .errors import InvalidDataError
from .inputs import check_task_data, check_text_to_text_data
from .objectives import Classification, Objective, TextToText


@dataclass
class PreparedTask:
    """A task's checked inputs and targets.

    ``targets``/``val_targets`` are label indices or answer token lists (EOS included);
    ``route_labels`` label the router's keys (texts, then val_texts, then key_texts): the classes
    of a classification task, one class for a text-to-text task (its keys' answers say nothing of
    where inputs cluster); ``words`` are the token ids the ``labels`` prompt initialisation averages.
    """

    texts: list[str]
    label_names: list[str]
    targets: list[Any]
    val_texts: list[str] | None
    val_targets: list[Any] | None
    key_texts: list[str] | None
    route_labels: list[int]
    objective: Objective
    words: list[int]

    @property
    def task_type(self) -> str:
        return "text-to-text" if isinstance(self.objective, TextToText) else "classification"


def prepare_task(
    backbone: FrozenLM,
    name: Any,
    texts: Sequence[str],
    labels: Sequence[Any] | None,
    label_names: Sequence[str] | None,
    val_texts: Sequence[str] | None,
    val_labels: Sequence[Any] | None,
    key_texts: Sequence[str] | None,
    key_labels: Sequence[Any] | None,
    targets: Sequence[str] | None,
    val_targets: Sequence[str] | None,
) -> PreparedTask:
    """Check a new task's data (``add_task``'s arguments) and tokenise its targets.

    Raises:
        InvalidDataError: both or neither of labels and targets, or any failed check of
            ``promptbank.inputs``.
    """
    if targets is not None:
        if labels is not None or label_names is not None or val_labels is not None or key_labels is not None:
            raise InvalidDataError("give labels (a classification task) or targets (a text-to-text task), not both")
        data = check_text_to_text_data(name, texts, targets, val_texts, val_targets, key_texts)
        y = backbone.target_token_ids(data.targets)
        n_keys = len(data.texts) + len(data.val_texts or []) + len(data.key_texts or [])
        return PreparedTask(
            data.texts,
            [],
            y,
            data.val_texts,
            backbone.target_token_ids(data.val_targets) if data.val_targets else None,
            data.key_texts,
            [0] * n_keys,
            TextToText(),
            [t for ids in y for t in ids[:-1]],
        )
    if labels is None:
        raise InvalidDataError(f"task {name!r} needs labels=[...] (classification) or targets=[...] (text-to-text)")
    if val_targets is not None:
        raise InvalidDataError("val_targets belong to a text-to-text task (targets=...); use val_labels")
    data = check_task_data(name, texts, labels, label_names, val_texts, val_labels, key_texts, key_labels)
    objective = Classification(backbone.label_token_ids(data.label_names))
    return PreparedTask(
        data.texts,
        data.label_names,
        data.labels,
        data.val_texts,
        data.val_labels,
        data.key_texts,
        data.labels + (data.val_labels or []) + data.key_labels,
        objective,
        [t for ids in objective.label_ids for t in ids],
    )
