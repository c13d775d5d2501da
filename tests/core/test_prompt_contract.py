"""The contract every registered prompt method keeps: a new registration is tested here without a new file."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from promptbank.errors import BankFormatError, InvalidDataError
from promptbank.prompts import PROMPTS, build_prompt, prompt_from_config

N, D = 6, 32


@pytest.mark.parametrize("method", PROMPTS.names())
def test_prompt_has_its_shape_and_trains_only_what_it_stores(method):
    prompt = build_prompt(method, N, D, seed=1)
    assert prompt.method == method and prompt().shape == (N, D)
    stored = prompt.trainable_state()
    assert sum(v.numel() for v in stored.values()) == prompt.num_trainable() > 0
    assert all(not v.requires_grad and v.device.type == "cpu" for v in stored.values())
    prompt().sum().backward()  # every stored tensor gets a gradient
    assert all(p.grad is not None for p in prompt.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", PROMPTS.names())
def test_seed_decides_the_initialisation(method):
    a, b, c = (build_prompt(method, N, D, seed=s) for s in (1, 1, 2))
    assert torch.equal(a(), b())
    assert not torch.equal(a(), c())


@pytest.mark.parametrize("method", PROMPTS.names())
def test_config_and_state_round_trip(method):
    prompt = build_prompt(method, N, D, seed=5)
    with torch.no_grad():
        for param in prompt.parameters():
            param.add_(torch.randn_like(param))
    config = json.loads(json.dumps(prompt.config_state()))  # plain JSON
    assert config["method"] == method
    assert set(config) == {"method"} | {f.name for f in dataclasses.fields(prompt.config_class)}
    again = prompt_from_config(config, prompt.trainable_state())
    assert type(again) is type(prompt) and again.config == prompt.config
    assert torch.equal(again(), prompt())


@pytest.mark.parametrize("method", PROMPTS.names())
def test_bad_configs_get_one_clear_error(method):
    with pytest.raises(InvalidDataError):
        build_prompt(method, 0, D)
    with pytest.raises(InvalidDataError, match="option"):
        build_prompt(method, N, D, colour="blue")
    with pytest.raises(BankFormatError):
        prompt_from_config({"method": method, "dim": D})  # n_tokens missing
    with pytest.raises(InvalidDataError):
        build_prompt(method, N, D).load_trainable_state({})


def test_unknown_methods_are_refused_by_name():
    with pytest.raises(InvalidDataError, match="ulpt"):
        build_prompt("prefix", N, D)
    with pytest.raises(BankFormatError, match="unknown method"):
        prompt_from_config({"method": "prefix", "n_tokens": N, "dim": D})


@pytest.mark.parametrize("method", PROMPTS.names())
def test_every_method_trains_saves_and_answers_through_the_bank(method, tiny_llama, tmp_path):
    """Through ``PromptBank``: the method's tensors are trained, stored, reloaded and used."""
    from helpers import ANIMALS, FAST

    from promptbank.bank import BankConfig, PromptBank

    bank = PromptBank(tiny_llama, BankConfig(method=method, n_tokens=4, key_encoder="embedding-mean"))
    untrained = bank.new_prompt().trainable_state()
    info = bank.add_task("animals", *ANIMALS, train_config=FAST)
    assert info.metadata["trainable_params"] == bank.new_prompt().num_trainable()
    state = bank.prompt_state("animals")
    assert state.keys() == untrained.keys()
    assert any(not torch.equal(state[k].float(), untrained[k].half().float()) for k in state)  # trained
    bank.save(tmp_path / "bank")
    loaded = PromptBank.load(tmp_path / "bank", backbone=tiny_llama)
    assert loaded.config.method == method
    assert torch.equal(loaded.prompt_matrix("animals"), bank.prompt_matrix("animals"))
    texts = ANIMALS[0][:3]
    assert [p.scores for p in loaded.predict(texts)] == [p.scores for p in bank.predict(texts)]
