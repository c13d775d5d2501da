"""Log a saved bank as an MLflow pyfunc model, and load one back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidDataError

CODE = Path(__file__).with_name("bank_pyfunc.py")


def _signature() -> Any:
    from mlflow.models import ModelSignature  # noqa: PLC0415
    from mlflow.types import ColSpec, Schema  # noqa: PLC0415

    inputs = Schema([ColSpec("string", "text"), ColSpec("string", "task", required=False)])
    outputs = Schema(
        [
            ColSpec("string", "task"),
            ColSpec("string", "label"),
            ColSpec("string", "generated", required=False),
            ColSpec("double", "score"),
            ColSpec("double", "route_score"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_bank_model(
    bank_dir: str | Path,
    name: str = "bank",
    backbone: str | None = None,
    registered_model_name: str | None = None,
) -> Any:
    """Log the bank saved in ``bank_dir`` to the active MLflow run as a pyfunc model.

    Args:
        bank_dir: a saved bank folder (``PromptBank.save``); its files become the model's artifacts.
        name: the model's name in the run.
        backbone: the LLM to load it with, if not the name its manifest records (e.g. a local folder).
        registered_model_name: also register it in the model registry under this name.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri`` loads it; ``mlflow models serve -m URI`` serves it).

    Example:
        >>> with mlflow.start_run():
        ...     info = log_bank_model("my-bank")
        >>> mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame({"text": ["Is this spam?"]}))
    """
    import mlflow  # noqa: PLC0415

    if not (Path(bank_dir) / "manifest.json").exists():
        raise InvalidDataError(f"{bank_dir} holds no saved bank (no manifest.json); Fix: bank.save(folder) first")
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(CODE),
        artifacts={"bank": str(bank_dir)},
        model_config={"backbone": backbone} if backbone else None,
        signature=_signature(),
        pip_requirements=["promptbank"],
        registered_model_name=registered_model_name,
    )


def load_bank_model(model_uri: str) -> Any:
    """``mlflow.pyfunc.load_model(model_uri)``: a logged bank, answering a table of texts."""
    import mlflow  # noqa: PLC0415

    return mlflow.pyfunc.load_model(model_uri)
