"""MLflow for real: ``mlflow server`` on localhost (sqlite backend, local artifacts) tracks a tiny stream
run, read back with MlflowClient; the run's final bank, logged as a pyfunc model, loads with
``mlflow.pyfunc`` and is served by the real scoring server; every answer equals ``PromptBank.predict``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from helpers import TASKS, free_port, wait_for_http
from helpers import TINY_RUN as TINY
from mlflow.tracking import MlflowClient

from promptbank.bank import PromptBank
from promptbank.errors import InvalidDataError
from promptbank.serving import load_bank_model, log_bank_model
from streams.cli import main as cli_main

TEXTS = ["what is the capital of peru", "WIN a prize now, reply YES", "who wrote hamlet"]


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


@pytest.fixture(scope="module")
def tracked(mlflow_server, tiny_folder, tmp_path_factory):
    """A tiny two-task run tracked on the server: its output folder and results."""
    out = tmp_path_factory.mktemp("tracked") / "run"
    argv = ["run", *TINY, "--backbone", tiny_folder, "--tasks", ",".join(TASKS), "--out", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROMPTBANK_CACHE", str(out.parent / "cache"))  # no prompt cached by another test
        assert cli_main([*argv, "--tracking-uri", mlflow_server]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_a_stream_run_is_tracked_on_a_real_server(mlflow_server: str, tracked, tmp_path: Path):
    out, results = tracked
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


def _none(value):
    """Unknown inputs come back as None or NaN (pandas' missing value)."""
    return None if value is None or value != value else value


def _expected(bank: PromptBank, tasks: list[str | None]) -> list[tuple]:
    """Each input answered by its task if given, else routed."""
    routed = bank.predict(TEXTS)
    given = [bank.predict([text], task=task)[0] if task else None for text, task in zip(TEXTS, tasks)]
    chosen = [g or r for g, r in zip(given, routed)]
    return [(p.task, p.label, p.scores.get(p.label, float("nan"))) for p in chosen]


@pytest.fixture(scope="module")
def logged(mlflow_server, tracked, tiny_folder):
    """The tracked run's final bank: its model URI on the server, and the bank itself."""
    out, results = tracked
    return mlflow_server, results["mlflow"]["model_uri"], PromptBank.load(out / "bank", backbone=tiny_folder)


def test_the_logged_bank_loads_with_pyfunc_and_answers_like_the_bank(logged, monkeypatch):
    uri, model_uri, bank = logged
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert model_uri and model_uri.startswith("models:/")
    model = load_bank_model(model_uri)
    tasks = [None, TASKS[1], TASKS[0]]
    answers = model.predict(pd.DataFrame({"text": TEXTS, "task": tasks}))
    got = [(_none(t), _none(lab), s) for t, lab, s in zip(answers["task"], answers["label"], answers["score"])]
    assert [(t, lab) for t, lab, _ in got] == [(t, lab) for t, lab, _ in _expected(bank, tasks)]
    assert [s for *_, s in got] == pytest.approx([s for *_, s in _expected(bank, tasks)], abs=1e-6, nan_ok=True)
    routed = model.predict(pd.DataFrame({"text": TEXTS}))
    assert [_none(t) for t in routed["task"]] == [t for t, *_ in _expected(bank, [None] * 3)]
    assert model.metadata.get_input_schema().input_names() == ["text", "task"]


def test_the_scoring_server_answers_a_mixed_batch_like_the_bank(logged, tmp_path):
    uri, model_uri, bank = logged
    port = free_port()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the venv's uvicorn
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, tmp_path / "serve.log")
        tasks = [None, TASKS[1], None]
        body = {"dataframe_records": [{"text": t, "task": k} for t, k in zip(TEXTS, tasks)]}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            rows = json.loads(answer.read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    expected = _expected(bank, tasks)
    assert [(_none(r["task"]), _none(r["label"])) for r in rows] == [(t, lab) for t, lab, _ in expected]
    scores = [float("nan") if r["score"] is None else r["score"] for r in rows]
    assert scores == pytest.approx([s for *_, s in expected], abs=1e-6, nan_ok=True)


def test_logging_a_folder_without_a_bank_names_the_fix(tmp_path: Path):
    with pytest.raises(InvalidDataError, match="bank.save"):
        log_bank_model(tmp_path)


def test_a_bank_registers_in_the_model_registry_and_loads_by_version(mlflow_server, tracked, tiny_folder, monkeypatch):
    import mlflow

    out, _ = tracked
    mlflow.set_tracking_uri(mlflow_server)
    with mlflow.start_run():
        log_bank_model(out / "bank", backbone=tiny_folder, registered_model_name="tiny-bank")
    versions = MlflowClient(mlflow_server).search_model_versions("name='tiny-bank'")
    assert [v.version for v in versions] == ["1"]
    answers = load_bank_model("models:/tiny-bank/1").predict(pd.DataFrame({"text": TEXTS}))
    bank = PromptBank.load(out / "bank", backbone=tiny_folder)
    assert [_none(t) for t in answers["task"]] == [p.task for p in bank.predict(TEXTS)]
