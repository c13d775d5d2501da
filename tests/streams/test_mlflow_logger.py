"""The Avalanche MLflow logger: scalars as metrics at Avalanche's step, figures as artifacts."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from avalanche.evaluation.metric_results import AlternativeValues, MetricValue
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from streams.mlflow_logger import MLflowLogger, metric_key


def test_scalars_tensors_and_figures_reach_the_run(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("avalanche")).info.run_id
    logger = MLflowLogger(run_id=run_id, tracking_uri=uri)
    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    logger.log_metrics(
        [
            MetricValue(None, "Top1_Acc_Stream/eval_phase/test_stream", 0.5, x_plot=3),
            MetricValue(None, "Top1_Acc_Stream/eval_phase/test_stream", 0.75, x_plot=4),
            MetricValue(None, "Loss_MB/train_phase/train_stream/Task000", torch.tensor(1.25), x_plot=7),
            MetricValue(None, "Acc{per class}", {"cat": 1.0, "dog": 0.5}, x_plot=1),
            MetricValue(None, "ConfusionMatrix", AlternativeValues(figure, 0.0), x_plot=2),
        ]
    )
    history = client.get_metric_history(run_id, "Top1_Acc_Stream/eval_phase/test_stream")
    assert [(h.step, h.value) for h in history] == [(3, 0.5), (4, 0.75)]
    assert client.get_metric_history(run_id, "Loss_MB/train_phase/train_stream/Task000")[0].value == 1.25
    assert client.get_metric_history(run_id, metric_key("Acc{per class}/dog"))[0].value == 0.5
    assert metric_key("Acc{per class}/dog") == "Acc_per class_/dog"
    artifacts = [a.path for a in client.list_artifacts(run_id, "avalanche/ConfusionMatrix")]
    assert artifacts == ["avalanche/ConfusionMatrix/2.png"]


def test_the_active_run_is_used_and_no_run_is_an_error_unless_lenient(tmp_path: Path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    value = [MetricValue(None, "Loss_Epoch", 0.5, x_plot=1)]
    with pytest.raises(RuntimeError, match="start one"):
        MLflowLogger().log_metrics(value)
    MLflowLogger(strict=False).log_metrics(value)  # dropped: no run
    with mlflow.start_run() as run:
        MLflowLogger().log_metrics(value)
    assert MlflowClient().get_metric_history(run.info.run_id, "Loss_Epoch")[0].value == 0.5
