"""End to end on the real offline SmolLM2-135M and MiniLM (default keys: MiniLM + the LLM's token embeddings): train two tasks, save, reload in a
new process, predict a mixed batch. Slow (about a minute or two on 2 CPU cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from promptbank import PromptBank, TrainConfig
from streams.splits import get_task

pytestmark = pytest.mark.slow

TASKS = ("sms_spam", "bbc")  # inputs truncated to 48 tokens keep this test to a few CPU minutes


def test_two_real_tasks_train_save_reload_and_route(tmp_path: Path):
    bank = PromptBank(
        max_input_tokens=48
    )  # defaults: smollm2-135m (offline asset), ULPT r=2, minilm+embedding-set-mean keys
    budgets = {"sms_spam": 10, "bbc": 4}  # test inputs per class: about 20 per task
    data = {n: get_task(n, train_per_class=16, val_per_class=3, test_per_class=budgets[n], seed=0) for n in TASKS}
    for n, t in data.items():
        bank.add_task(
            n,
            t.train_texts,
            t.train_labels,
            label_names=list(t.label_names),
            template=t.template,
            val_texts=t.val_texts,
            val_labels=t.val_labels,
            train_config=TrainConfig(steps=30, batch_size=8, eval_every=10, progress=False),
        )
    bank.save(tmp_path / "bank")

    texts, true_task, true_label = [], [], []
    for n, t in data.items():  # interleave so the batch really mixes tasks
        texts += t.test_texts
        true_task += [n] * len(t.test_texts)
        true_label += [t.label_names[y] for y in t.test_labels]
    order = np.random.default_rng(0).permutation(len(texts))
    texts = [texts[i] for i in order]
    true_task = [true_task[i] for i in order]
    true_label = [true_label[i] for i in order]
    (tmp_path / "texts.json").write_text(json.dumps(texts))

    script = (
        "import json, sys; from promptbank import PromptBank;"
        f"bank = PromptBank.load({str(tmp_path / 'bank')!r});"
        f"texts = json.load(open({str(tmp_path / 'texts.json')!r}));"
        "print(json.dumps([[p.task, p.label] for p in bank.predict(texts, batch_size=32)]))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reloaded = json.loads(proc.stdout.strip().splitlines()[-1])
    in_process = [[p.task, p.label] for p in bank.predict(texts, batch_size=32)]
    assert reloaded == in_process  # same bank, new process: identical answers

    routing_acc = np.mean([p[0] == t for p, t in zip(reloaded, true_task)])
    label_acc = np.mean([p[0] == t and p[1] == y for p, t, y in zip(reloaded, true_task, true_label)])
    chance = np.mean([1 / len(data[t].label_names) for t in true_task])  # a random label of the right task
    per_task = {n: np.mean([p[1] == y for p, t, y in zip(reloaded, true_task, true_label) if t == n]) for n in TASKS}
    print(f"routing {routing_acc:.3f} label {label_acc:.3f} chance {chance:.3f} per task {per_task}")
    assert routing_acc >= 0.9, routing_acc
    assert label_acc >= chance + 0.12, (label_acc, chance, per_task)  # seen here: 0.625 vs chance 0.35
    assert per_task["bbc"] >= 0.6, per_task  # seen here: 0.90 vs chance 0.2
