"""Trainer: seeded reproducibility, best-validation checkpoint, learning a label preference."""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from promptbank.prompts import build_prompt
from promptbank.trainer import TrainConfig, evaluate_prompt, train_prompt

TEXTS = ["the cat sat", "a dog ran", "my cat naps", "the dog barks", "cats purr", "dogs fetch"] * 2


def _setup(lm, seed: int = 0, method: str = "ulpt"):
    ids = lm.encode(TEXTS, "Text: {text} Label:", 16).input_ids
    labels = lm.label_token_ids(["cat", "dog"])
    prompt = build_prompt(method, 4, lm.hidden_size, seed=seed, **({} if method == "pt" else {"rank": 2}))
    return ids, labels, prompt


def test_same_seed_same_prompt_different_seed_differs(tiny_llama):
    y = [0, 1] * 6
    runs = []
    for seed in (3, 3, 4):
        ids, labels, prompt = _setup(tiny_llama, seed)
        train_prompt(
            tiny_llama, prompt, ids, y, labels, config=TrainConfig(steps=5, batch_size=4, seed=seed, progress=False)
        )
        runs.append(prompt().detach())
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_best_validation_checkpoint_is_restored(tiny_llama):
    """Validation asks for 'cat' while training pushes to 'dog': the best step is early, and it is restored."""
    ids, labels, prompt = _setup(tiny_llama, method="pt")
    after_step: list[dict[str, torch.Tensor]] = []

    def snapshot(optimizer, args, kwargs):
        after_step.append({k: v.detach().clone() for k, v in prompt.state_dict().items()})

    hook = register_optimizer_step_post_hook(snapshot)
    try:
        result = train_prompt(
            tiny_llama,
            prompt,
            ids,
            [1] * len(ids),
            labels,
            ids,
            [0] * len(ids),
            TrainConfig(steps=8, batch_size=6, lr=0.001, eval_every=2, progress=False),
        )
    finally:
        hook.remove()
    evals = [h for h in result.history if "val_acc" in h]
    assert [h["step"] for h in evals] == [2, 4, 6, 8]
    assert evals[0]["val_acc"] > evals[-1]["val_acc"], "setup: validation must get worse as training goes on"
    best = max(evals, key=lambda h: h["val_acc"])
    assert (
        result.best_step == best["step"] < 8 and result.best_val == best["val_acc"] and result.val_metric == "val_acc"
    )
    restored = prompt.state_dict()
    assert all(torch.equal(restored[k], after_step[best["step"] - 1][k]) for k in restored)
    assert not all(torch.equal(restored[k], after_step[-1][k]) for k in restored)
    assert evaluate_prompt(tiny_llama, prompt, ids, [0] * len(ids), labels) == best["val_acc"]


def test_training_learns_a_constant_answer(tiny_llama):
    """A random tiny LM cannot learn a text rule in a few steps, but must learn 'always dog'."""
    ids, labels, prompt = _setup(tiny_llama, method="pt")
    y = [1] * len(ids)
    result = train_prompt(
        tiny_llama, prompt, ids, y, labels, config=TrainConfig(steps=15, batch_size=6, lr=0.3, progress=False)
    )
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert evaluate_prompt(tiny_llama, prompt, ids, y, labels) == 1.0


def test_suffix_training_through_the_input_cache_follows_the_uncached_run(tiny_llama):
    """The cache (bf16 keys and values) changes the arithmetic only by rounding: same losses within
    a bf16 tolerance, and both runs learn the constant answer."""
    ids = tiny_llama.encode(TEXTS, "Text: {text} Label:", 16, placement="suffix").input_ids
    labels = tiny_llama.label_token_ids(["cat", "dog"])
    y = [1] * len(ids)
    runs = {}
    for mb in (1024, 0):
        prompt = build_prompt("pt", 4, tiny_llama.hidden_size)
        cfg = TrainConfig(steps=15, batch_size=6, lr=0.3, eval_every=5, input_cache_mb=mb, progress=False)
        runs[mb] = train_prompt(tiny_llama, prompt, ids, y, labels, ids, y, cfg)
        assert evaluate_prompt(tiny_llama, prompt, ids, y, labels) == 1.0
    cached, uncached = ([h["loss"] for h in runs[mb].history] for mb in (1024, 0))
    assert cached == pytest.approx(uncached, rel=0.05, abs=1e-3)
    assert cached[-1] < cached[0]
    assert [h.get("val_acc") for h in runs[1024].history] == [h.get("val_acc") for h in runs[0].history]
