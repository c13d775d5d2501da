"""An Avalanche logger that writes to MLflow, in the style of Avalanche's own loggers.

Avalanche ships text, CSV, TensorBoard and W&B loggers. This one receives the evaluation plugin's
metric values like them (``BaseLogger.log_single_metric``) and sends scalars to an MLflow run as
metrics, with Avalanche's ``x_plot`` as the step, and figures as artifacts. It depends only on
Avalanche and MLflow, so it can live upstream unchanged.

    >>> from avalanche.training.plugins import EvaluationPlugin
    >>> from avalanche.evaluation.metrics import loss_metrics
    >>> evaluator = EvaluationPlugin(loss_metrics(minibatch=True), loggers=[MLflowLogger()])
"""

from __future__ import annotations

import re
from numbers import Number
from typing import Any

import mlflow
import torch
from avalanche.evaluation.metric_results import AlternativeValues
from avalanche.logging import BaseLogger
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

_NOT_ALLOWED = re.compile(r"[^\w\-. /]")  # MLflow metric names: alphanumerics, _ - . space /


def metric_key(name: str) -> str:
    """An Avalanche metric name as a valid MLflow metric key (other characters become ``_``)."""
    return _NOT_ALLOWED.sub("_", name)


class MLflowLogger(BaseLogger):
    """Log Avalanche metric values to MLflow.

    Args:
        run_id: the run to write to; None writes to the run active when each value arrives.
        tracking_uri: the tracking server or store; None uses MLflow's current one when a value
            arrives (so a logger made before ``mlflow.set_tracking_uri`` follows it).
        strict: raise when a value arrives with no run to write to; False drops it (a strategy
            that also runs untracked).
    """

    def __init__(self, run_id: str | None = None, tracking_uri: str | None = None, strict: bool = True) -> None:
        super().__init__()
        self.run_id, self.tracking_uri, self.strict = run_id, tracking_uri, strict
        self._clients: dict[str, MlflowClient] = {}

    @property
    def client(self) -> MlflowClient:
        uri = self.tracking_uri or mlflow.get_tracking_uri()
        if uri not in self._clients:
            self._clients[uri] = MlflowClient(uri)
        return self._clients[uri]

    def _target(self) -> str | None:
        if self.run_id is not None:
            return self.run_id
        active = mlflow.active_run()
        if active is None and self.strict:
            raise RuntimeError("MLflowLogger has no run: start one (mlflow.start_run()) or pass run_id=")
        return None if active is None else active.info.run_id

    def log_single_metric(self, name: str, value: Any, x_plot: int) -> None:
        """Send one metric value: a number as a metric at step ``x_plot``, a figure as an artifact."""
        if isinstance(value, AlternativeValues):
            value = value.best_supported_value(Figure, torch.Tensor, float, int)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        key, run = metric_key(name), self._target()
        if run is None:
            return
        if isinstance(value, Number) and not isinstance(value, bool):
            self.client.log_metric(run, key, float(value), step=int(x_plot))
        elif isinstance(value, Figure):
            self.client.log_figure(run, value, f"avalanche/{key}/{int(x_plot)}.png")
