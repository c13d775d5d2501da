"""Fixtures of the library tests: a small two-task bank on the tiny random Llama."""

from __future__ import annotations

import pytest
from helpers import ANIMALS, FAST, WEATHER

from promptbank.backbone import FrozenLM
from promptbank.bank import BankConfig, PromptBank


@pytest.fixture
def bank(tiny_llama: FrozenLM) -> PromptBank:
    """Two tasks (animals, weather), 4 soft tokens, LLM-embedding keys, the knn router."""
    b = PromptBank(tiny_llama, BankConfig(n_tokens=4, key_encoder="embedding-mean", router={"strategy": "knn"}))
    b.add_task("animals", *ANIMALS, template="Text: {text}\nAnimal:", train_config=FAST)
    b.add_task("weather", *WEATHER, label_names=["rain", "sun"], template="Sky: {text}\nWeather:", train_config=FAST)
    return b
