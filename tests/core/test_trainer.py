"""Trainer: seeded reproducibility, best-validation checkpoint, learning a label preference."""

from __future__ import annotations

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
    assert result.best_step == best["step"] < 8 and result.best_val_acc == best["val_acc"]
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
