"""Tracking against a real MLflow server: ``mlflow server`` on localhost (sqlite backend, local
artifact root), a tiny stream run with ``--tracking-uri http://...``, read back with MlflowClient."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TASKS, free_port, wait_for_http
from helpers import TINY_RUN as TINY
from mlflow.tracking import MlflowClient

from streams.cli import main as cli_main


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}", "--artifacts-destination", str(root / "art")]
    log = open(root / "server.log", "wb")  # noqa: SIM115  (open for the server's whole life)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", server, root / "server.log")
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_a_stream_run_is_tracked_on_a_real_server(mlflow_server: str, tiny_folder: str, tmp_path: Path, tmp_cache):
    out = tmp_path / "run"
    argv = ["run", *TINY, "--backbone", tiny_folder, "--tasks", ",".join(TASKS), "--out", str(out)]
    assert cli_main([*argv, "--tracking-uri", mlflow_server]) == 0
    results = json.loads((out / "results.json").read_text())
    client = MlflowClient(mlflow_server)
    run = client.get_run(results["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "2" and run.data.params["bank.n_tokens"] == "4"
    assert run.data.metrics["avg_acc"] == pytest.approx(results["avg_acc"])
    assert run.data.metrics["routing_acc"] == pytest.approx(results["routing_acc"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "acc_matrix.png", "bank"} <= artifacts
    bank_files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "bank")}
    assert "manifest.json" in bank_files
    downloaded = Path(client.download_artifacts(run.info.run_id, "results.json", str(tmp_path)))
    assert json.loads(downloaded.read_text())["avg_acc"] == results["avg_acc"]
