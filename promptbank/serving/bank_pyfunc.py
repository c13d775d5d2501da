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

from promptbank.serving.requests import answer_record, answer_rows, task_or_none


class BankModel(PythonModel):
    """Answers with the bank saved in the model's ``bank`` artifact."""

    def load_context(self, context: Any) -> None:
        from promptbank.bank import PromptBank  # noqa: PLC0415

        config = context.model_config or {}
        self.bank = PromptBank.load(context.artifacts["bank"], backbone=config.get("backbone"))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        texts = [str(t) for t in model_input["text"]]
        tasks = [task_or_none(t) for t in model_input["task"]] if "task" in model_input.columns else [None] * len(texts)
        records = [answer_record(p) for p in answer_rows(self.bank, texts, tasks)]
        return pd.DataFrame(records, columns=["task", "label", "generated", "score", "route_score"])


mlflow.models.set_model(BankModel())
