"""Baselines on a 2-task stream with a tiny random Llama: they run, stay frozen, use real Avalanche."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from avalanche.training import EWC, LwF, Naive, Replay
from avalanche.training.plugins import EWCPlugin, LwFPlugin, ReplayPlugin
from avalanche.training.supervised.cumulative import Cumulative
from avalanche.training.templates import SupervisedTemplate

from promptbank.backbone import count_frozen_grads
from promptbank.errors import InvalidDataError
from promptbank.keys import EmbeddingMeanKeys
from streams.baselines import BASELINES, PAD_SCORE, AvalancheBaseline, SharedPromptModel, ZeroShot
from streams.benchmark import build_benchmark
from streams.probe import PENALTIES, LinearProbe, fit_logistic
from streams.splits import TaskData

STEPS, BATCH = 3, 4
TRAINED = ["naive", "ewc", "lwf", "replay", "joint"]
AVALANCHE_CLASS = {"naive": Naive, "ewc": EWC, "lwf": LwF, "replay": Replay, "joint": Cumulative}
PROMPT_BASELINES = {k: v for k, v in BASELINES.items() if k != "linear-probe"}  # the probe has its own tests


def _task(name: str, labels: list[str], words: list[str], n: int = 8, targets: list[int] | None = None) -> TaskData:
    texts = [f"{words[i % len(words)]} number {i}" for i in range(n)]
    ys = targets if targets is not None else [i % len(labels) for i in range(n)]
    return TaskData(name, tuple(labels), "Text: {text} Answer:", texts, ys, texts[:2], ys[:2], texts[:4], ys[:4])


TASKS = [
    _task("polar", ["yes", "no"], ["apple", "sky"]),
    _task("colour", ["red", "green", "blue"], ["fire", "grass", "sea"]),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run ~15x faster on one thread on a shared 2-core box (no OpenMP spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def stream_runs(tiny_llama):
    """Every baseline through the 2-task stream once; state captured after the first experience."""
    benchmark, table = build_benchmark(TASKS)
    runs = {}
    for key, factory in PROMPT_BASELINES.items():
        torch.manual_seed(0)
        strategy = factory(tiny_llama, steps=STEPS, batch_size=BATCH, seed=0, progress=False)
        run = {"strategy": strategy, "reports": [], "evals": [], "first": {}, "wall": []}
        before = _prompt_state(strategy)
        for exp in benchmark.train_stream:
            i = exp.current_experience
            started = time.perf_counter()
            run["reports"].append(strategy.train(exp, TASKS[i], table))
            run["wall"].append(time.perf_counter() - started)
            run["evals"].append([strategy.evaluate(j, TASKS[j], TASKS[: i + 1]) for j in range(i + 1)])
            if i == 0:
                run["first"] = _plugin_state(strategy)
                run["prompt_before"], run["prompt_after_first"] = before, _prompt_state(strategy)
        runs[key] = run
    return runs


def _prompt_state(strategy) -> dict[str, torch.Tensor] | None:
    return (
        {k: v.clone() for k, v in strategy.prompt.trainable_state().items()}
        if isinstance(strategy, AvalancheBaseline)
        else None
    )


def _plugin_state(strategy) -> dict:
    if not isinstance(strategy, AvalancheBaseline):
        return {}
    plugins = strategy.strategy.plugins
    out = {}
    for p in plugins:
        if isinstance(p, EWCPlugin):
            out["ewc_importances"] = {k: float(v.data.abs().sum()) for k, v in p.importances[0].items()}
            out["ewc_saved"] = sorted(p.saved_params[0])
        if isinstance(p, LwFPlugin):
            out["lwf_teacher"] = p.lwf.prev_model
            out["lwf_classes"] = dict(p.lwf.prev_classes_by_task)
        if isinstance(p, ReplayPlugin):
            out["replay_buffer"] = len(p.storage_policy.buffer)
    return out


def test_registry_names_and_signature(tiny_llama):
    assert set(BASELINES) == {"zero-shot", "naive", "ewc", "lwf", "replay", "joint", "linear-probe"}
    for key, factory in PROMPT_BASELINES.items():
        strategy = factory(
            tiny_llama,
            method="pt",
            n_tokens=4,
            prompt_options=None,
            steps=1,
            batch_size=2,
            lr=0.01,
            seed=1,
            max_input_tokens=16,
            progress=False,
        )
        assert strategy.name == key and not strategy.routes
    with pytest.raises(InvalidDataError):
        BASELINES["naive"](tiny_llama, steps=0, progress=False)


@pytest.mark.parametrize("key", list(PROMPT_BASELINES))
def test_every_baseline_trains_and_answers_with_valid_labels(stream_runs, key):
    run = stream_runs[key]
    assert [len(evals) for evals in run["evals"]] == [1, 2]
    for evals in run["evals"]:
        for task, ev in zip(TASKS, evals):
            assert len(ev.predicted) == len(task.test_texts)
            assert set(ev.predicted) <= set(task.label_names)
            right = [p == task.label_names[y] for p, y in zip(ev.predicted, task.test_labels)]
            assert ev.routed_task is None and ev.accuracy(task) == pytest.approx(np.mean(right))
    for report, wall in zip(run["reports"], run["wall"]):
        if key == "zero-shot":
            assert report.seconds == 0.0 and report.trainable_params == 0  # nothing is trained
        else:
            assert 0.0 < report.seconds <= wall  # the training time, measured inside the call
            assert report.trainable_params == run["strategy"].prompt.num_trainable() > 0
            assert report.extra["steps"] == STEPS and report.extra["strategy"] == AVALANCHE_CLASS[key].__name__


def test_zero_shot_does_not_change_across_experiences(stream_runs, tiny_llama):
    first, second = stream_runs["zero-shot"]["evals"]
    assert first[0].predicted == second[0].predicted
    fresh = ZeroShot(tiny_llama, progress=False).evaluate(0, TASKS[0], TASKS[:1])  # recomputed, not cached
    assert fresh.predicted == first[0].predicted


@pytest.mark.parametrize("key", TRAINED)
def test_real_avalanche_strategies_drive_only_the_prompt(stream_runs, tiny_llama, key):
    strategy = stream_runs[key]["strategy"]
    assert isinstance(strategy.strategy, AVALANCHE_CLASS[key]) and isinstance(strategy.strategy, SupervisedTemplate)
    names = [n for n, _ in strategy.model.named_parameters()]
    assert names and all(n.startswith("prompt.") for n in names)  # EWC/LwF/optimiser never see the LLM
    assert not any(p.requires_grad for p in tiny_llama.model.parameters())
    assert count_frozen_grads(tiny_llama.model) == 0


def test_plugin_state_exists_after_first_experience(stream_runs):
    ewc = stream_runs["ewc"]["first"]
    assert set(ewc["ewc_importances"]) == set(ewc["ewc_saved"]) == {"prompt.z", "prompt.scale", "prompt.shift"}
    assert sum(ewc["ewc_importances"].values()) > 0
    lwf = stream_runs["lwf"]["first"]
    teacher, student = lwf["lwf_teacher"], stream_runs["lwf"]["strategy"].model
    assert isinstance(teacher, SharedPromptModel) and lwf["lwf_classes"] == {0: {0, 1}}
    assert teacher.backbone is student.backbone  # the LLM is shared, not deep-copied
    assert teacher.prompt is not student.prompt
    plugin = next(p for p in stream_runs["lwf"]["strategy"].strategy.plugins if isinstance(p, LwFPlugin))
    rows = torch.tensor([14, 15, 16, 17])  # task 1 inputs, distilled through task 0's head
    # After the last experience the teacher is a copy of the final student: no penalty yet.
    # A student whose prompt has moved away from the teacher's is penalised.
    moved = copy.deepcopy(student)
    with torch.no_grad():
        # 0 up to float rounding: the teacher's forward may take other kernels (7e-9 on an AMD EPYC)
        assert abs(float(plugin.lwf._lwf_penalty(student(rows, 1), rows, student))) < 1e-7
        moved.prompt.z.add_(0.5)  # a fixed shift: deterministic, and far from the teacher
        penalty = plugin.lwf._lwf_penalty(moved(rows, 1), rows, moved)
    assert float(penalty) > 1e-5 and torch.isfinite(torch.as_tensor(penalty))
    assert stream_runs["replay"]["first"]["replay_buffer"] == len(TASKS[0].train_texts)
    assert stream_runs["replay"]["reports"][1].extra["replay_buffer"] == sum(len(t.train_texts) for t in TASKS)
    assert len(stream_runs["joint"]["strategy"].strategy.dataset) == sum(len(t.train_texts) for t in TASKS)


def test_naive_changes_the_shared_prompt(stream_runs):
    run = stream_runs["naive"]
    before, after = run["prompt_before"], run["prompt_after_first"]
    assert any(not torch.equal(before[k], after[k]) for k in before)
    final = run["strategy"].prompt.trainable_state()
    assert any(not torch.equal(after[k], final[k]) for k in after)  # task 2 moves the same prompt again


def test_mixed_task_batch_is_one_padded_forward(stream_runs):
    model = stream_runs["naive"]["strategy"].model
    rows = torch.tensor([0, 1, 14, 15])  # any rows: the task ids alone pick template and label set
    tasks = torch.tensor([0, 0, 1, 1])
    with torch.no_grad():
        mixed = model(rows, tasks)
        alone = torch.cat([model(rows[:2], 0), model(rows[2:], 1)])
        heads = model(rows, None)
    assert mixed.shape == (4, 3) and torch.isfinite(mixed).all()
    assert torch.allclose(mixed, alone, atol=1e-4)
    assert (mixed[:2, 2] == PAD_SCORE).all() and (mixed[2:, :] > PAD_SCORE).all()
    assert set(heads) == {0, 1} and heads[1].shape == (4, 3)
    clone = copy.deepcopy(model)
    assert clone.backbone is model.backbone and clone.prompt is not model.prompt


def test_trained_prompt_beats_zero_shot_on_a_learnable_task(tiny_llama):
    """A random tiny LLM cannot learn input-dependent rules in a few steps, but a prompt can learn
    a label prior: every example is the label zero-shot does NOT pick, so only training helps."""
    probe = _task("prior", ["yes", "no"], ["apple", "sky"])
    zero = ZeroShot(tiny_llama, progress=False).evaluate(0, probe, [probe]).predicted
    target = 1 - probe.label_names.index(max(set(zero), key=zero.count))
    task = _task("prior", ["yes", "no"], ["apple", "sky"], targets=[target] * 8)
    benchmark, table = build_benchmark([task])
    naive = BASELINES["naive"](tiny_llama, steps=10, batch_size=8, progress=False)
    naive.train(benchmark.train_stream[0], task, table)
    zero_acc = ZeroShot(tiny_llama, progress=False).evaluate(0, task, [task]).accuracy(task)
    assert naive.evaluate(0, task, [task]).accuracy(task) > max(zero_acc, 0.5)


@pytest.mark.parametrize("key", ["naive", "lwf"])
def test_shared_prompt_baselines_run_on_an_encoder_decoder(tiny_t5, key):
    benchmark, table = build_benchmark(TASKS)
    strategy = BASELINES[key](tiny_t5, steps=2, batch_size=4, progress=False)
    for exp in benchmark.train_stream:
        strategy.train(exp, TASKS[exp.current_experience], table)
    for j, task in enumerate(TASKS):
        assert set(strategy.evaluate(j, task, TASKS).predicted) <= set(task.label_names)
    assert count_frozen_grads(tiny_t5.model) == 0


def test_linear_probe_learns_each_task_with_its_own_head(tiny_llama):
    """Keys that separate the classes perfectly: the probe must get them right, task id given."""
    encoder = EmbeddingMeanKeys(tiny_llama)
    probe = LinearProbe(tiny_llama, key_encoder=encoder, progress=False)
    benchmark, table = build_benchmark(TASKS)
    for exp in benchmark.train_stream:
        started = time.perf_counter()
        report = probe.train(exp, TASKS[exp.current_experience], table)
        assert 0.0 < report.seconds <= time.perf_counter() - started  # encoding and fitting, measured
        k = len(TASKS[exp.current_experience].label_names)
        assert report.trainable_params == encoder.dim * k + k and report.extra["penalty"] in PENALTIES
    for j, task in enumerate(TASKS):
        ev = probe.evaluate(j, task, TASKS)
        assert ev.routed_task is None and set(ev.predicted) <= set(task.label_names)
        assert ev.accuracy(task) == 1.0  # test inputs are training inputs whose words fix the label


def test_fit_logistic_separates_and_penalty_shrinks_weights():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 1, (30, 4)), rng.normal(2, 1, (30, 4))]).astype(np.float32)
    y = np.array([0] * 30 + [1] * 30)
    w, b = fit_logistic(x, y, 2, penalty=1e-4)
    assert float(np.mean((torch.as_tensor(x) @ w + b).argmax(1).numpy() == y)) > 0.95
    w_strong, _ = fit_logistic(x, y, 2, penalty=1.0)
    assert float(w_strong.norm()) < float(w.norm())
