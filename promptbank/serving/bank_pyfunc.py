"""The pyfunc model MLflow loads for a logged bank ("models from code": this file is logged as
the model's code, so loading it never unpickles anything). Input: a table with a ``text``
column and an optional ``task`` column (empty = routed); output: ``task``, ``label`` (classification),
``generated`` (text-to-text), ``score`` (the chosen label's or the generated answer's mean
log-probability) and ``route_score`` per input."""

from __future__ import annotations

from typing import Any

import pandas as pd

from promptbank.serving.requests import answer_record, answer_rows, task_or_none


def bank_model() -> Any:
    """The pyfunc ``PythonModel`` that answers with the bank saved in the model's ``bank``
    artifact (built here, so that MLflow is imported only when this file is run as the model)."""
    from mlflow.pyfunc import PythonModel  # noqa: PLC0415

    class BankModel(PythonModel):
        def load_context(self, context: Any) -> None:
            from promptbank.bank import PromptBank  # noqa: PLC0415

            config = context.model_config or {}
            self.bank = PromptBank.load(context.artifacts["bank"], backbone=config.get("backbone"))

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            texts = [str(t) for t in model_input["text"]]
            given = "task" in model_input.columns
            tasks = [task_or_none(t) for t in model_input["task"]] if given else [None] * len(texts)
            records = [answer_record(p) for p in answer_rows(self.bank, texts, tasks)]
            return pd.DataFrame(records, columns=["task", "label", "generated", "score", "route_score"])

    return BankModel()


def _register() -> None:
    """Hand MLflow the model when it runs this file ("models from code")."""
    import mlflow  # noqa: PLC0415

    mlflow.models.set_model(bank_model())


_register()
