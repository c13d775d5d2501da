"""MLflow tracking: one run per stream run, a nested run per task.

Default store: an embedded SQLite database next to the run outputs (no server needed);
any MLflow tracking URI (``http://...``) works too.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow.tracking import MlflowClient

from promptbank.serving import log_bank_model

DEFAULT_EXPERIMENT = "promptbank"


def default_tracking_uri(root: str | Path = "runs") -> str:
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _store_lock(tracking_uri: str) -> contextlib.AbstractContextManager:
    """A lock beside an SQLite store's file (no lock for a server: it serialises writes itself)."""
    if not tracking_uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    return FileLock(tracking_uri.removeprefix("sqlite:///") + ".lock")


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


class Tracker:
    """Thin wrapper over the MLflow fluent API that pins the store and the experiment."""

    def __init__(
        self, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT, root: str | Path = "runs"
    ) -> None:
        self.tracking_uri = tracking_uri or default_tracking_uri(root)
        mlflow.set_tracking_uri(self.tracking_uri)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # Two runs opening one new SQLite store at once both run its schema migrations (one fails
        # with an alembic CommandError) and may both create the experiment: one at a time.
        with _store_lock(self.tracking_uri):
            client = MlflowClient(self.tracking_uri)
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                location = None
                if self.tracking_uri.startswith("sqlite:///"):
                    location = (Path(root).resolve() / "mlartifacts").as_uri()
                exp_id = client.create_experiment(experiment, artifact_location=location)
            else:
                exp_id = exp.experiment_id
        self.experiment_id = exp_id
        self.client = client

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        nested: bool = False,
        run_id: str | None = None,
    ) -> Iterator[mlflow.ActiveRun]:
        """Start (or resume, given ``run_id``) a run; params are flattened to dotted keys."""
        with mlflow.start_run(
            run_id=run_id, run_name=None if run_id else name, experiment_id=self.experiment_id, nested=nested, tags=tags
        ) as active:
            if params and run_id is None:
                mlflow.log_params(_flatten(params))
            yield active

    @staticmethod
    def metrics(values: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in values.items() if v is not None and v == v}
        if clean:
            mlflow.log_metrics(clean, step=step)

    @staticmethod
    def artifact(path: str | Path, folder: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=folder or path.name)
        elif path.exists():
            mlflow.log_artifact(str(path), artifact_path=folder)

    @staticmethod
    def bank_model(bank_dir: str | Path, backbone: str | None = None) -> str:
        """Log a saved bank as an MLflow pyfunc model of the active run; returns its model URI."""
        return log_bank_model(bank_dir, backbone=backbone).model_uri

    def ui_hint(self) -> str:
        return f"mlflow ui --backend-store-uri {self.tracking_uri}"


def quiet_mlflow() -> None:
    """MLflow prints migration and emoji lines on every start; keep the console readable."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
