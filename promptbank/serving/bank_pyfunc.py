"""The pyfunc model MLflow loads for a logged bank ("models from code": this file is logged as
the model's code, so loading it never unpickles anything). Input: a table with a ``text``
column and an optional ``task`` column (empty = routed); output: ``task``, ``label`` (classification),
``generated`` (text-to-text), ``score`` (the chosen label's or the generated answer's mean
log-probability) and ``route_score`` per input."""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class BankModel(PythonModel):
    """Answers with the bank saved in the model's ``bank`` artifact."""

    def load_context(self, context: Any) -> None:
        from promptbank.bank import PromptBank  # noqa: PLC0415

        config = context.model_config or {}
        self.bank = PromptBank.load(context.artifacts["bank"], backbone=config.get("backbone"))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        texts = [str(t) for t in model_input["text"]]
        tasks: list[str | None] = [None] * len(texts)
        if "task" in model_input.columns:
            tasks = [None if t is None or t != t or str(t) == "" else str(t) for t in model_input["task"]]
        preds = [None] * len(texts)
        given = [i for i, t in enumerate(tasks) if t is not None]
        routed = [i for i, t in enumerate(tasks) if t is None]
        for rows, task in ((given, [tasks[i] for i in given]), (routed, None)):
            if rows:  # inputs with a task are answered by it, the others are routed
                for i, p in zip(rows, self.bank.predict([texts[i] for i in rows], task=task)):
                    preds[i] = p
        return pd.DataFrame(
            {
                "task": [p.task for p in preds],
                "label": [p.label for p in preds],
                "generated": [p.text for p in preds],
                "score": [_score(p) for p in preds],
                "route_score": [None if p.route_score != p.route_score else p.route_score for p in preds],
            }
        )


def _score(p: Any) -> float | None:
    if p.text is not None:
        return p.confidence
    return p.scores.get(p.label) if p.label is not None else None


mlflow.models.set_model(BankModel())
