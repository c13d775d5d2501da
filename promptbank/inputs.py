"""Checks of what users hand the bank: texts, labels, label names. Each failure is one
``InvalidDataError`` that names the first bad item and the fix, raised before any model work."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidDataError


def labelled_blocks(blocks: Iterable[np.ndarray], labels: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each block of keys (in input order) with the labels of its rows."""
    start = 0
    for keys in blocks:
        yield keys, labels[start : start + len(keys)]
        start += len(keys)


def check_texts(texts: Sequence[str], what: str = "texts") -> list[str]:
    """``texts`` as a list of non-blank strings; one clear error naming the first bad item."""
    if isinstance(texts, str):
        raise InvalidDataError(f"{what} must be a list of strings, got a single string; wrap it: [text]")
    texts = list(texts)
    if not texts:
        raise InvalidDataError(f"{what} is empty: give at least one example")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InvalidDataError(
            f"{what}[{bad[0]}] is {type(texts[bad[0]]).__name__}, not str ({len(bad)} non-string items)"
        )
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidDataError(
                f"{what}[{i}] is not valid Unicode ({exc.reason} at character {exc.start}); "
                "Fix: decode the source text with the right encoding, or drop the lone surrogates"
            ) from None
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise InvalidDataError(f"{what}[{blank[0]}] is empty or whitespace ({len(blank)} such items); drop them first")
    return texts


def label_indices(labels: Sequence[Any], label_names: list[str], n: int, what: str) -> list[int]:
    """Labels given as names or indices, as indices into ``label_names``."""
    labels = list(labels)
    if len(labels) != n:
        raise InvalidDataError(f"{what}: {n} texts but {len(labels)} labels")
    out = []
    for i, y in enumerate(labels):
        if isinstance(y, (str, np.str_)):
            if y not in label_names:
                raise InvalidDataError(f"{what}[{i}] = {y!r} is not one of label_names {label_names}")
            out.append(label_names.index(y))
        elif isinstance(y, (int, np.integer)) and not isinstance(y, bool):
            if not 0 <= int(y) < len(label_names):
                raise InvalidDataError(
                    f"{what}[{i}] = {y} is outside 0..{len(label_names) - 1} (label_names {label_names})"
                )
            out.append(int(y))
        else:
            raise InvalidDataError(f"{what}[{i}] = {y!r}: labels must be label names (str) or indices (int)")
    return out


def check_label_names(label_names: Sequence[str] | None, labels: Sequence[Any]) -> list[str]:
    """A task's label words: given, or the sorted distinct string labels; at least two, unique."""
    if label_names is None:
        if not all(isinstance(y, str) for y in labels):
            raise InvalidDataError("label_names is required when labels are integers: the LLM answers with words")
        label_names = sorted(set(labels))
    names = list(label_names)
    if len(names) < 2:
        raise InvalidDataError(f"a task needs at least 2 label names, got {names}")
    if any(not isinstance(x, str) or not x.strip() for x in names):
        raise InvalidDataError(f"label names must be non-empty strings, got {names}")
    if len(set(names)) != len(names):
        raise InvalidDataError(f"label names must be unique, got {names}")
    return names


@dataclass
class TaskData:
    """A task's inputs after the checks: texts as lists, labels as indices into ``label_names``."""

    texts: list[str]
    label_names: list[str]
    labels: list[int]
    val_texts: list[str] | None
    val_labels: list[int] | None
    key_texts: list[str] | None
    key_labels: list[int]


def check_task_data(
    name: Any,
    texts: Sequence[str],
    labels: Sequence[Any],
    label_names: Sequence[str] | None,
    val_texts: Sequence[str] | None,
    val_labels: Sequence[Any] | None,
    key_texts: Sequence[str] | None,
    key_labels: Sequence[Any] | None,
) -> TaskData:
    """Everything ``PromptBank.add_task`` is given, checked before any model work.

    Raises:
        InvalidDataError: a bad name, texts or labels, one class only, or a split given half.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidDataError(f"task name must be a non-empty string, got {name!r}")
    texts = check_texts(texts)
    names = check_label_names(label_names, labels)
    y = label_indices(labels, names, len(texts), "labels")
    if len(set(y)) < 2:
        raise InvalidDataError(
            f"task {name!r} has only one class in its labels ({names[y[0]]!r}); a classifier needs at least two"
        )
    if (val_texts is None) != (val_labels is None):
        raise InvalidDataError("give both val_texts and val_labels, or neither")
    val_y = None
    if val_texts is not None:
        val_texts = check_texts(val_texts, "val_texts")
        val_y = label_indices(val_labels, names, len(val_texts), "val_labels")
    if (key_texts is None) != (key_labels is None):
        raise InvalidDataError("give both key_texts and key_labels, or neither")
    key_y: list[int] = []
    if key_texts is not None:
        key_texts = check_texts(key_texts, "key_texts")
        key_y = label_indices(key_labels, names, len(key_texts), "key_labels")
    return TaskData(texts, names, y, val_texts, val_y, key_texts, key_y)


@dataclass
class TextToTextData:
    """A text-to-text task's inputs after the checks: texts and their target answers as lists."""

    texts: list[str]
    targets: list[str]
    val_texts: list[str] | None
    val_targets: list[str] | None
    key_texts: list[str] | None


def check_text_to_text_data(
    name: Any,
    texts: Sequence[str],
    targets: Sequence[str],
    val_texts: Sequence[str] | None,
    val_targets: Sequence[str] | None,
    key_texts: Sequence[str] | None,
) -> TextToTextData:
    """Everything ``PromptBank.add_task`` is given for a text-to-text task, checked before any model work.

    Raises:
        InvalidDataError: a bad name, texts or targets (empty, blank, not strings, another count),
            or a validation split given half.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidDataError(f"task name must be a non-empty string, got {name!r}")
    texts = check_texts(texts)
    targets = check_texts(targets, "targets")
    if len(targets) != len(texts):
        raise InvalidDataError(f"targets: {len(texts)} texts but {len(targets)} targets; give one answer per text")
    if (val_texts is None) != (val_targets is None):
        raise InvalidDataError("give both val_texts and val_targets, or neither")
    if val_texts is not None:
        val_texts = check_texts(val_texts, "val_texts")
        val_targets = check_texts(val_targets, "val_targets")
        if len(val_targets) != len(val_texts):
            raise InvalidDataError(f"val_targets: {len(val_texts)} val_texts but {len(val_targets)} val_targets")
    if key_texts is not None:
        key_texts = check_texts(key_texts, "key_texts")
    return TextToTextData(texts, targets, val_texts, val_targets, key_texts)
