"""Stream runner: metric math, resume after interruption, MLflow contents, a CLI run on real data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers import TASKS, tiny_run_config
from mlflow.tracking import MlflowClient

from promptbank.bank import PromptBank
from promptbank.errors import InvalidDataError
from streams import runner as runner_mod
from streams.bank_strategy import BankStrategy
from streams.cli import main as cli_main
from streams.metrics import confusion_matrix, continual_metrics
from streams.runner import load_tasks, run_stream
from streams.splits import get_task


def test_metrics_on_a_hand_made_matrix():
    R = [[0.9], [0.8, 0.7], [0.6, 0.7, 0.5]]
    m = continual_metrics(R)
    assert m["avg_acc"] == pytest.approx(0.6)
    assert m["bwt"] == pytest.approx(((0.6 - 0.9) + (0.7 - 0.7)) / 2)
    assert m["forgetting"] == pytest.approx(0.15)
    assert m["forgetting_per_task"] == pytest.approx([0.3, 0.0])


def test_forgetting_matches_avalanche_definition():
    from avalanche.evaluation.metrics.forgetting_bwt import Forgetting

    R = [[0.5], [0.4, 0.9], [0.45, 0.6, 0.8], [0.2, 0.9, 0.7, 0.6]]
    ref = Forgetting()
    for j in range(3):
        ref.update(j, R[j][j], initial=True)
        ref.update(j, R[3][j])
    assert continual_metrics(R)["forgetting_per_task"] == pytest.approx([ref.result()[j] for j in range(3)])
    assert continual_metrics([[0.7]]) == {"avg_acc": 0.7, "bwt": 0.0, "forgetting": 0.0, "forgetting_per_task": []}


def test_confusion_counts_unknown_separately():
    c = confusion_matrix([0, 0, 1, 1], [0, 1, 1, -1], 2)
    assert c.tolist() == [[1, 1, 0], [0, 1, 1]]


def _interrupt_on_second_task_then_resume(strategy_cls, cfg, out, monkeypatch):
    """Run ``cfg`` until its second task starts training (a simulated Ctrl-C), then run it again.

    Returns the progress file the interruption left, the resumed run's results, and the tasks
    trained, in order.
    """
    real_train = strategy_cls.train
    trained: list[str] = []

    def crash_on_second(self, experience, task, table):
        if task.name == TASKS[1]:
            raise KeyboardInterrupt("simulated interruption")
        trained.append(task.name)
        return real_train(self, experience, task, table)

    monkeypatch.setattr(strategy_cls, "train", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_stream(cfg, out=out, progress=False)
    progress = json.loads((out / runner_mod.PROGRESS).read_text())
    monkeypatch.setattr(strategy_cls, "train", lambda self, *a: trained.append(a[1].name) or real_train(self, *a))
    return progress, run_stream(cfg, out=out, progress=False), trained


def test_interrupted_run_resumes_after_last_finished_task(tiny_folder, tmp_path, tmp_cache, monkeypatch):
    cfg, out = tiny_run_config(tiny_folder), tmp_path / "run"
    progress, results, trained = _interrupt_on_second_task_then_resume(BankStrategy, cfg, out, monkeypatch)
    assert progress["done"] == 1 and len(progress["acc_matrix"]) == 1 and progress["run_id"]
    assert trained == [TASKS[0], TASKS[1]]  # the first task was not trained again
    assert results["tasks"] == TASKS and len(results["acc_matrix"]) == 2 and len(results["acc_matrix"][1]) == 2
    assert results["mlflow"]["run_id"] == progress["run_id"]  # the same MLflow run continues
    client = MlflowClient(results["mlflow"]["tracking_uri"])
    history = client.get_metric_history(progress["run_id"], f"R.{TASKS[0]}")
    assert [m.step for m in history] == [0, 1]  # task 0's row once, then the resumed task's
    assert client.get_run(progress["run_id"]).info.status == "FINISHED"
    with pytest.raises(InvalidDataError, match="other arguments"):
        run_stream(dataclasses.replace(cfg, seed=1), out=out, progress=False)


def test_an_interrupted_baseline_starts_over(tiny_folder, tmp_path, tmp_cache, monkeypatch):
    """A baseline's optimiser and plugin state live in memory only: a resumed baseline run
    discards its saved progress and trains every task again, in a new MLflow run."""
    from streams.baselines import AvalancheBaseline

    cfg = dataclasses.replace(tiny_run_config(tiny_folder), baseline="naive")
    progress, results, trained = _interrupt_on_second_task_then_resume(
        AvalancheBaseline, cfg, tmp_path / "naive", monkeypatch
    )
    assert progress["done"] == 1
    assert trained == [TASKS[0], TASKS[0], TASKS[1]]  # the first task trained again
    assert len(results["acc_matrix"]) == 2 and results["mlflow"]["run_id"] != progress["run_id"]


def test_cli_run_writes_results_and_mlflow_run(tiny_folder, tmp_path, tmp_cache, capsys):
    out = tmp_path / "cli"
    code = cli_main(
        [
            "run",
            "--tasks",
            ",".join(TASKS),
            "--backbone",
            tiny_folder,
            "--steps",
            "2",
            "--eval-every",
            "1",
            "--batch-size",
            "4",
            "--train-per-class",
            "4",
            "--val-per-class",
            "2",
            "--test-per-class",
            "3",
            "--key-per-class",
            "8",
            "--max-input-tokens",
            "16",
            "--n-tokens",
            "4",
            "--key-encoder",
            "embedding-mean",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "average" in printed and "mlflow" in printed
    results = json.loads((out / "results.json").read_text())
    required = {
        "stream",
        "order",
        "method",
        "backbone",
        "tasks",
        "acc_matrix",
        "avg_acc",
        "oracle_avg_acc",
        "routing_acc",
        "bwt",
        "forgetting",
        "trainable_params_per_task",
        "bank_bytes_per_task",
        "seconds_per_task",
        "budgets",
        "seed",
    }
    assert required <= set(results)
    assert results["trainable_params_per_task"] == 4 * 2 + 2 * 32
    # the run's numbers agree with the output bank evaluated on the same test split, outside the stream
    bank = PromptBank.load(out / "bank")
    per_task = {
        t.name: bank.evaluate(t.test_texts, t.test_labels, task=t.name)
        for t in load_tasks(tiny_run_config(tiny_folder))
    }
    assert results["routing_acc_per_task"] == pytest.approx({n: e["routing_accuracy"] for n, e in per_task.items()})
    assert results["acc_matrix"][-1] == pytest.approx([per_task[n]["accuracy"] for n in TASKS])
    assert results["oracle_matrix"][-1] == pytest.approx([per_task[n]["oracle_accuracy"] for n in TASKS])
    n_test = [per_task[n]["n"] for n in TASKS]
    routed = [per_task[n]["routing_accuracy"] for n in TASKS]
    assert results["routing_acc"] == pytest.approx(np.dot(n_test, routed) / sum(n_test))
    assert (out / "acc_matrix.png").stat().st_size > 1000 and (out / "routing_confusion.png").exists()

    client = MlflowClient(results["mlflow"]["tracking_uri"])
    run = client.get_run(results["mlflow"]["run_id"])
    assert run.data.params["bank.method"] == "ulpt" and run.data.params["train.steps"] == "2"
    assert run.data.metrics["avg_acc"] == pytest.approx(results["avg_acc"])
    history = client.get_metric_history(run.info.run_id, f"R.{TASKS[0]}")
    assert [m.step for m in history] == [0, 1]
    assert [m.value for m in history] == pytest.approx([results["acc_matrix"][0][0], results["acc_matrix"][1][0]])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"acc_matrix.png", "routing_confusion.png", "results.json", "bank"} <= artifacts
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(children) == 2

    assert cli_main(["info", str(out / "bank")]) == 0
    assert "sms_spam" in capsys.readouterr().out
    assert (
        cli_main(["predict", "--bank", str(out / "bank"), "--backbone", tiny_folder, "what is the capital of peru"])
        == 0
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["task"] in TASKS
    assert (
        cli_main(
            ["predict", "--bank", str(out / "bank"), "--backbone", tiny_folder, "--bf16", "what is the capital of peru"]
        )
        == 0
    )
    bf16_line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert bf16_line["task"] == line["task"] and bf16_line["scores"] != line["scores"]  # same route, bf16 answers


def test_router_keys_beyond_the_prompt_budget_reuse_the_cached_prompts(tiny_folder, tmp_path, tmp_cache):
    """key_per_class only feeds the router: the prompts are the same, so they come from the cache."""
    cfg = tiny_run_config(tiny_folder)
    few = run_stream(
        dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, key_per_class=0)),
        out=tmp_path / "few",
        progress=False,
    )
    more = run_stream(cfg, out=tmp_path / "more", progress=False)
    assert all(r["prompt_from_cache"] for r in more["reports"])
    assert few["budgets"]["key_per_class"] == 0 and more["budgets"]["key_per_class"] == 8
    n_keys = lambda run: [
        PromptBank.load(tmp_path / run / "bank", backbone=tiny_folder).task_info(t).metadata["n_keys"] for t in TASKS
    ]  # noqa: E731
    classes = [len(get_task(t).label_names) for t in TASKS]
    assert [m - f for m, f in zip(n_keys("more"), n_keys("few"))] == [4 * c for c in classes]


def test_unknown_stream_is_a_clear_cli_error(capsys):
    assert cli_main(["run", "--stream", "nope", "--quiet"]) == 2
    assert "unknown stream" in capsys.readouterr().err


def test_bf16_run_trains_its_own_prompts_and_records_the_setting(tiny_folder, tmp_path, tmp_cache):
    """--bf16 answers differ slightly from float32, so its prompts must not come from (or go to)
    the float32 entries of the prompt cache; a float32 rerun still finds its own."""
    cfg = tiny_run_config(tiny_folder)
    cached = lambda: sorted(p.name for p in (tmp_cache / "prompts").glob("*.safetensors"))  # noqa: E731
    run_stream(cfg, out=tmp_path / "fp32", progress=False)
    fp32_entries = cached()
    results = run_stream(dataclasses.replace(cfg, bf16=True), out=tmp_path / "bf16", progress=False)
    assert results["config"]["bf16"] is True
    bank = PromptBank.load(tmp_path / "bf16" / "bank", backbone=tiny_folder)
    assert bank.task_info(TASKS[0]).metadata["llm_bf16"] is True  # provenance; loading picks its own precision
    assert bank.backbone.bf16 is False
    assert PromptBank.load(tmp_path / "bf16" / "bank", backbone=tiny_folder, bf16=True).backbone.bf16 is True
    assert all(not r["prompt_from_cache"] for r in results["reports"])
    assert len(cached()) == 2 * len(fp32_entries) == 2 * len(TASKS)
    again = run_stream(cfg, out=tmp_path / "fp32-again", progress=False)
    assert all(r["prompt_from_cache"] for r in again["reports"]) and len(cached()) == 2 * len(TASKS)


def test_a_stream_mixing_text_to_text_and_classification_runs_resumes_and_scores_each_by_its_metric(
    tiny_folder, tmp_path, tmp_cache, monkeypatch
):
    """movie_reply (generated replies, ROUGE-L) then trec (labels, accuracy): interrupted before
    trec, resumed from the checkpoint with movie_reply's generated answers restored."""
    tasks = ["movie_reply", "trec"]
    cfg = dataclasses.replace(tiny_run_config(tiny_folder), tasks=tasks)
    out = tmp_path / "mixed"
    real_train = BankStrategy.train

    def crash_on_trec(self, experience, task, table):
        if task.name == "trec":
            raise KeyboardInterrupt("simulated interruption")
        return real_train(self, experience, task, table)

    monkeypatch.setattr(BankStrategy, "train", crash_on_trec)
    with pytest.raises(KeyboardInterrupt):
        run_stream(cfg, out=out, progress=False)
    answers = json.loads((out / "module_answers.json").read_text())
    assert all(set(a) == {"text", "logprob"} for a in answers["movie_reply\x1fmovie_reply"].values())
    monkeypatch.setattr(BankStrategy, "train", real_train)
    results = run_stream(cfg, out=out, progress=False)
    assert results["metrics"] == {"movie_reply": "rouge_l", "trec": "accuracy"}
    assert len(results["acc_matrix"]) == 2 and all(0 <= v <= 1 for row in results["acc_matrix"] for v in row)
    assert set(results["routing_acc_per_task"]) == set(tasks)
    info = PromptBank.load(out / "bank", backbone=tiny_folder).task_info("movie_reply")
    assert info.task_type == "text-to-text" and info.metadata["budgets"]["test_counts"] == [3]
    client = MlflowClient(results["mlflow"]["tracking_uri"])
    child = [r for r in client.search_runs([client.get_run(results["mlflow"]["run_id"]).info.experiment_id])
             if r.data.params.get("task") == "trec"][0]  # fmt: skip
    assert {"rouge_l.movie_reply", "acc.trec"} <= set(child.data.metrics)
    with pytest.raises(InvalidDataError, match="text-to-text tasks"):
        run_stream(dataclasses.replace(cfg, baseline="naive"), out=tmp_path / "naive", progress=False)
    floor = run_stream(dataclasses.replace(cfg, baseline="zero-shot"), out=tmp_path / "zero", progress=False)
    assert floor["metrics"] == results["metrics"] and floor["bank_bytes_per_task"] == 0
    assert floor["acc_matrix"][0][0] == floor["acc_matrix"][1][0]  # the bare LLM's replies: nothing to forget


def test_a_stream_run_with_workers_answers_like_the_run_in_order(tiny_folder: str, tmp_path, local_ray, monkeypatch):
    cfg = tiny_run_config(tiny_folder)
    monkeypatch.setenv("PROMPTBANK_CACHE", str(tmp_path / "cache-parallel"))
    parallel = run_stream(cfg, out=tmp_path / "parallel", progress=False, workers=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each worker's thread count, so the prompts agree bit for bit
    try:
        monkeypatch.setenv("PROMPTBANK_CACHE", str(tmp_path / "cache-in-order"))
        in_order = run_stream(cfg, out=tmp_path / "in-order", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert all(r["prompt_from_cache"] for r in parallel["reports"])  # every prompt came from the workers
    assert not any(r["prompt_from_cache"] for r in in_order["reports"])
    for key in ("acc_matrix", "oracle_matrix", "routing_acc"):
        assert parallel[key] == in_order[key]
    banks = [PromptBank.load(tmp_path / run / "bank", backbone=tiny_folder) for run in ("parallel", "in-order")]
    for name in TASKS:
        a, b = (bank.prompt_state(name) for bank in banks)
        assert all(torch.equal(a[k], b[k]) for k in b)
    with pytest.raises(InvalidDataError, match="baseline"):
        run_stream(dataclasses.replace(cfg, baseline="naive"), out=tmp_path / "naive", progress=False, workers=2)


def test_a_run_with_key_classes_reuses_the_prompts_and_answers_with_the_validated_weights(
    tiny_folder, tmp_path, tmp_cache
):
    """Key classes (on by default) change answers, not prompts: after a --no-key-classes run they
    come from the cache. Each task keeps its validated weight, and where a weight is 0 the oracle
    answers are the prompt's own."""
    fused_cfg = tiny_run_config(tiny_folder)
    assert fused_cfg.bank.key_classes
    cfg = dataclasses.replace(fused_cfg, bank=dataclasses.replace(fused_cfg.bank, key_classes=False))
    plain = run_stream(cfg, out=tmp_path / "plain", progress=False)
    fused = run_stream(fused_cfg, out=tmp_path / "fused", progress=False)
    assert all(r["prompt_from_cache"] for r in fused["reports"])
    bank = PromptBank.load(tmp_path / "fused" / "bank", backbone=tiny_folder)
    assert bank.config.key_classes
    weights = [bank.task_info(t).metadata["key_class_weight"] for t in TASKS]
    for i, w in enumerate(weights):
        if w == 0:
            assert fused["oracle_matrix"][-1][i] == plain["oracle_matrix"][-1][i]


def _accuracy(bank: PromptBank, task, **options) -> float:
    """The bank's accuracy on a stream task's test inputs, the task given."""
    preds = bank.predict(task.test_texts, task=task.name, **options)
    return float(np.mean([p.label == task.label_names[y] for p, y in zip(preds, task.test_labels)]))


def test_a_run_reports_the_final_banks_own_answers_and_each_modules_alone(tiny_folder, tmp_path, tmp_cache):
    """The router's class posterior moves as later tasks join its shared covariance, so an earlier
    task's answers after the last task are the final bank's, not those it gave when it was added;
    ``module_alone_acc`` is each module's own answers (``predict(..., key_classes=False)``)."""
    cfg = tiny_run_config(tiny_folder)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, test_per_class=20))
    results = run_stream(cfg, out=tmp_path / "run", progress=False)
    bank = PromptBank.load(tmp_path / "run" / "bank", backbone=tiny_folder)
    assert any(bank.task_info(t).metadata["key_class_weight"] > 0 for t in TASKS)
    for j, task in enumerate(load_tasks(cfg)):
        assert results["oracle_matrix"][-1][j] == pytest.approx(_accuracy(bank, task))
        assert results["module_alone_acc"][j] == pytest.approx(_accuracy(bank, task, key_classes=False))
    assert results["module_alone_avg_acc"] == pytest.approx(np.mean(results["module_alone_acc"]))


def test_predict_without_key_classes_gives_the_modules_own_scores(tiny_folder, tmp_path, tmp_cache):
    cfg = tiny_run_config(tiny_folder)
    run_stream(cfg, out=tmp_path / "run", progress=False)
    bank = PromptBank.load(tmp_path / "run" / "bank", backbone=tiny_folder)
    task = load_tasks(cfg)[0]
    meta = bank.task_info(task.name).metadata
    meta["key_class_weight"] = 1.0
    fused = bank.predict(task.test_texts, task=task.name)
    alone = bank.predict(task.test_texts, task=task.name, key_classes=False)
    meta["key_class_weight"] = 0.0
    plain = bank.predict(task.test_texts, task=task.name)
    assert [p.scores for p in alone] == [p.scores for p in plain]
    assert [p.scores for p in fused] != [p.scores for p in alone]
    routed = bank.predict(task.test_texts, key_classes=False)
    # routed inputs share batches with other tasks' (other padding): equal within float tolerance
    assert all(r.scores == pytest.approx(a.scores, abs=1e-4) for r, a in zip(routed, alone) if r.task == task.name)
