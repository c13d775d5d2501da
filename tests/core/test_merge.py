"""Banks built apart merge into one that answers like the bank that learned every task in turn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import ANIMALS, FAST, WEATHER

from promptbank.backbone import FrozenLM
from promptbank.bank import BankConfig, PromptBank
from promptbank.errors import BackboneMismatchError, InvalidDataError, TaskExistsError

CONFIG = BankConfig(n_tokens=4, key_encoder="embedding-mean", router={"strategy": "knn"})  # the `bank` fixture's
TEXTS = ANIMALS[0][:4] + WEATHER[0][:4] + ["a cat in the rain", "the dog likes sun"]


def one_task_bank(backbone: FrozenLM, which: str, config: BankConfig = CONFIG) -> PromptBank:
    b = PromptBank(backbone, config)
    if which == "animals":
        b.add_task("animals", *ANIMALS, template="Text: {text}\nAnimal:", train_config=FAST)
    else:
        b.add_task(
            "weather", *WEATHER, label_names=["rain", "sun"], template="Sky: {text}\nWeather:", train_config=FAST
        )
    return b


def answers(bank: PromptBank) -> list[tuple]:
    return [(p.task, p.label, round(p.route_score, 5)) for p in bank.predict(TEXTS)]


def test_two_banks_merge_into_the_sequential_bank(bank: PromptBank, tiny_llama: FrozenLM, tmp_path: Path):
    """``bank`` (the fixture) added animals then weather; here each was learned in its own bank."""
    merged, other = one_task_bank(tiny_llama, "animals"), one_task_bank(tiny_llama, "weather")
    assert merged.merge(other) == ["weather"]
    assert merged.tasks == bank.tasks and other.tasks == ["weather"]
    for name in bank.tasks:
        assert merged.task_info(name).task_id == bank.task_info(name).task_id
        for key, tensor in bank.prompt_state(name).items():  # bit for bit
            assert torch.equal(merged.prompt_state(name)[key], tensor)
    assert answers(merged) == answers(bank)
    merged.save(tmp_path / "merged")
    assert answers(PromptBank.load(tmp_path / "merged", backbone=tiny_llama)) == answers(bank)
    merged.remove_task("weather")  # a merged task is an ordinary task
    assert {p.task for p in merged.predict(TEXTS)} == {"animals"}


def test_a_bad_merge_gets_one_clear_error_and_changes_nothing(bank: PromptBank, tiny_llama, tiny_t5):
    before = answers(bank)
    with pytest.raises(TaskExistsError, match="animals"):
        bank.merge(one_task_bank(tiny_llama, "animals"))
    other_settings = BankConfig(n_tokens=3, key_encoder="embedding-mean", router={"strategy": "knn"})
    with pytest.raises(InvalidDataError, match="n_tokens"):
        bank.merge(PromptBank(tiny_llama, other_settings))
    with pytest.raises(InvalidDataError, match="router"):
        bank.merge(PromptBank(tiny_llama, CONFIG, router={"strategy": "lda"}))
    with pytest.raises(BackboneMismatchError, match="different LLMs"):
        bank.merge(PromptBank(tiny_t5, CONFIG))
    assert bank.tasks == ["animals", "weather"] and answers(bank) == before
