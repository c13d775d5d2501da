"""One answer per request row, shared by every server of a bank (the MLflow pyfunc model, Ray Serve).

A row is a text with an optional task name. Rows that name their task are answered by it, the
others are routed; each group goes through ``PromptBank.predict`` as one mixed-task batch, so
rows of different tasks share its forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..records import Prediction


def task_or_none(task: Any) -> str | None:
    """A row's task: None (routed) for a missing, NaN or empty value."""
    return None if task is None or task != task or str(task) == "" else str(task)


def answer_rows(bank: Any, texts: Sequence[str], tasks: Sequence[str | None]) -> list[Prediction]:
    """``bank``'s prediction for each row: task-given rows by their task, the rest routed.

    Args:
        bank: a ``PromptBank``.
        texts: the inputs.
        tasks: a task name or None (routed) per input.

    Returns:
        One ``Prediction`` per row, in row order.
    """
    preds: list[Prediction | None] = [None] * len(texts)
    given = [i for i, t in enumerate(tasks) if t is not None]
    routed = [i for i, t in enumerate(tasks) if t is None]
    for rows, task in ((given, [tasks[i] for i in given]), (routed, None)):
        if rows:
            for i, p in zip(rows, bank.predict([texts[i] for i in rows], task=task)):
                preds[i] = p
    return preds


def answer_record(p: Prediction) -> dict[str, Any]:
    """A prediction as the servers return it: ``task``, ``label`` (classification), ``generated``
    (text-to-text), ``score`` (the chosen label's or the generated answer's mean log-probability)
    and ``route_score`` (None when the task was given)."""
    score = p.confidence if p.text is not None else (p.scores.get(p.label) if p.label is not None else None)
    return {
        "task": p.task,
        "label": p.label,
        "generated": p.text,
        "score": score,
        "route_score": None if p.route_score != p.route_score else p.route_score,
    }
