"""A bank as an MLflow pyfunc model: logged, loaded with ``mlflow.pyfunc.load_model``, served with
``mlflow models serve``. MLflow is imported only when these functions run."""

from .mlflow_model import load_bank_model, log_bank_model

__all__ = ["load_bank_model", "log_bank_model"]
