"""The ``promptbank`` command: every ``run`` option reaches the run, ``predict`` and ``info`` on its bank.

Runs use the tiny random Llama (saved as a folder) with LLM-embedding keys: a few seconds each.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import TASKS
from helpers import TINY_RUN as TINY
from mlflow.tracking import MlflowClient

from promptbank import storage
from promptbank.bank import PromptBank
from streams.cli import main as cli_main
from streams.named import stream_tasks


def run_cli(backbone: str, out: Path, *options: str) -> tuple[int, dict | None]:
    """``promptbank run`` at tiny budgets; the exit code and the results it wrote (None if none)."""
    code = cli_main(["run", *TINY, "--backbone", backbone, "--out", str(out), *options])
    results = out / "results.json"
    return code, json.loads(results.read_text()) if code == 0 and results.exists() else None


@pytest.fixture(scope="module")
def finished_run(tiny_folder, tmp_path_factory) -> Path:
    """One finished two-task run whose bank ``predict`` and ``info`` read."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code, _ = run_cli(tiny_folder, out, "--tasks", ",".join(TASKS))
    assert code == 0
    return out


def test_bank_options_reach_the_saved_bank_and_mlflow(tiny_folder, tmp_path, tmp_cache):
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    options = ["--tasks", ",".join(TASKS), "--method", "pt", "--router", "knn"]
    options += ["--rescore-top", "2", "--rescore-weight", "0.5", "--tracking-uri", uri]
    code, results = run_cli(tiny_folder, tmp_path / "a", *options, "--lr", "0.05")
    assert code == 0
    assert results["method"] == "pt" and results["trainable_params_per_task"] == 4 * 32  # n x d, no projection
    bank = PromptBank.load(tmp_path / "a" / "bank", backbone=tiny_folder)
    assert bank.config.method == "pt" and bank.router.strategy == "knn"
    assert (bank.config.rescore["top"], bank.config.rescore["weight"]) == (2, 0.5)
    assert results["mlflow"]["tracking_uri"] == uri
    run = MlflowClient(uri).get_run(results["mlflow"]["run_id"])  # the run is in the store named
    assert run.data.params["train.lr"] == "0.05" and run.data.params["bank.router.strategy"] == "knn"
    assert not (tmp_path / "mlflow.db").exists()  # and not in the default one next to --out

    code, other = run_cli(tiny_folder, tmp_path / "b", *options, "--lr", "0.5")
    assert code == 0 and other["config"]["train"]["lr"] == 0.5
    slow_lr = bank.prompt_state(TASKS[0])["weight"]
    fast_lr = PromptBank.load(tmp_path / "b" / "bank", backbone=tiny_folder).prompt_state(TASKS[0])["weight"]
    assert not torch.equal(slow_lr, fast_lr)  # the learning rate reached the trainer


def test_a_weight_space_kind_runs_as_the_bank_and_as_a_baseline(tiny_folder, tmp_path, tmp_cache):
    options = ["--tasks", ",".join(TASKS), "--method", "lora", "--options", '{"rank": 2, "targets": "all"}']
    code, results = run_cli(tiny_folder, tmp_path / "lora", *options)
    assert code == 0 and results["method"] == "lora"
    bank = PromptBank.load(tmp_path / "lora" / "bank", backbone=tiny_folder)
    module = bank.task_info(TASKS[0]).module
    assert (module["method"], module["rank"], len(module["targets"])) == ("lora", 2, 7)
    assert results["trainable_params_per_task"] == bank.new_prompt().num_trainable() > 0
    code, naive = run_cli(tiny_folder, tmp_path / "naive", *options, "--baseline", "naive")
    assert code == 0 and len(naive["acc_matrix"]) == len(TASKS)


def test_named_stream_in_another_order(tiny_folder, tmp_path, tmp_cache):
    code, results = run_cli(tiny_folder, tmp_path / "o2", "--stream", "offline-9", "--order", "2", "--steps", "1")
    assert code == 0
    assert results["stream"] == "offline-9" and results["order"] == 2
    assert results["tasks"] == stream_tasks("offline-9", 2) != stream_tasks("offline-9", 1)
    assert len(results["acc_matrix"]) == 9


def test_fresh_discards_a_run_with_other_arguments(tiny_folder, tmp_path, tmp_cache, capsys):
    out, tasks = tmp_path / "run", ["--tasks", ",".join(TASKS)]
    code, first = run_cli(tiny_folder, out, *tasks)
    assert code == 0
    code, _ = run_cli(tiny_folder, out, *tasks, "--seed", "1")
    assert code == 2 and "--fresh" in capsys.readouterr().err  # nothing overwritten without --fresh
    assert json.loads((out / "results.json").read_text())["seed"] == 0
    code, second = run_cli(tiny_folder, out, *tasks, "--seed", "1", "--fresh")
    assert code == 0 and second["seed"] == 1
    assert second["mlflow"]["run_id"] != first["mlflow"]["run_id"]  # a new run, not the old one resumed


def test_baseline_run_has_no_routing_and_logs_avalanche_metrics_to_each_task_run(tiny_folder, tmp_path, tmp_cache):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = ["--tasks", ",".join(TASKS), "--baseline", "naive", "--tracking-uri", uri]
    code, results = run_cli(tiny_folder, tmp_path / "naive", *options)
    assert code == 0
    assert results["baseline"] == "naive" and results["strategy"] == "naive"
    assert results["routing_acc"] is None and results["routing_confusion"] is None
    assert [r["strategy"] for r in results["reports"]] == ["Naive", "Naive"]
    assert not (tmp_path / "naive" / "bank").exists()
    client = MlflowClient(uri)
    parent = client.get_run(results["mlflow"]["run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", order_by=["start_time ASC"]
    )
    assert len(children) == len(TASKS)
    for task_id, child in enumerate(children):  # the Avalanche logger wrote the minibatch losses, one per step
        history = client.get_metric_history(child.info.run_id, f"Loss_MB/train_phase/train_stream/Task{task_id:03d}")
        assert len(history) == 2 and all(h.value > 0 for h in history)


def test_predict_with_a_task_and_from_stdin(finished_run, tiny_folder, monkeypatch, capsys):
    bank_dir = str(finished_run / "bank")
    texts = ["what is the capital of peru", "WIN a prize now, reply YES"]
    assert cli_main(["predict", "--bank", bank_dir, "--backbone", tiny_folder, "--task", TASKS[1], *texts]) == 0
    given = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = PromptBank.load(bank_dir, backbone=tiny_folder).predict(texts, task=TASKS[1])
    assert [g["text"] for g in given] == texts and all(g["task"] == TASKS[1] for g in given)
    assert [g["label"] for g in given] == [p.label for p in expected]
    assert [g["scores"] for g in given] == [{k: round(v, 4) for k, v in p.scores.items()} for p in expected]
    assert all(g["route_score"] is None for g in given)  # task given: nothing was routed

    assert cli_main(["predict", "--bank", bank_dir, "--backbone", tiny_folder, *texts]) == 0
    routed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    stdin = io.TextIOWrapper(io.BytesIO(("\n".join([texts[0], "", texts[1]]) + "\n").encode()))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert cli_main(["predict", "--bank", bank_dir, "--backbone", tiny_folder]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == routed  # blank lines skipped


def test_info_reports_the_bank_on_disk(finished_run, capsys):
    bank_dir = finished_run / "bank"
    assert cli_main(["info", str(bank_dir)]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((bank_dir / storage.MANIFEST).read_text())
    on_disk = sum(f.stat().st_size for f in bank_dir.iterdir() if f.name != storage.LOCK)
    assert f"size: {on_disk} bytes on disk, {on_disk / 2:.0f} bytes per task" in printed
    assert f"tasks ({len(TASKS)}):" in printed and f"router: {manifest['router']['strategy']}" in printed
    for t in manifest["tasks"]:
        assert f"best_val_acc={t['metadata']['best_val_acc']}" in printed and t["name"] in printed


def test_export_writes_the_task_prompt_as_a_peft_adapter(finished_run, tiny_folder, tmp_path, capsys):
    from safetensors.torch import load_file

    default_bank, out = str(finished_run / "bank"), tmp_path / "adapter"
    # the default bank puts prompts after the input, which PEFT's prompt tuning cannot
    assert cli_main(["export", "--bank", default_bank, "--backbone", tiny_folder, "--task", TASKS[0], str(out)]) == 2
    assert "placement='prefix'" in capsys.readouterr().err and not out.exists()
    code, _ = run_cli(tiny_folder, tmp_path / "prefix", "--tasks", ",".join(TASKS), "--placement", "prefix")
    assert code == 0
    bank_dir = str(tmp_path / "prefix" / "bank")
    assert cli_main(["export", "--bank", bank_dir, "--backbone", tiny_folder, "--task", TASKS[0], str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    bank = PromptBank.load(bank_dir, backbone=tiny_folder)
    assert torch.equal(load_file(out / "adapter_model.safetensors")["prompt_embeddings"], bank.prompt_matrix(TASKS[0]))
    assert cli_main(["export", "--bank", bank_dir, "--backbone", tiny_folder, "--task", TASKS[0], str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
