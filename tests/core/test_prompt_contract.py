"""The contract every registered module kind keeps: a new registration is tested here without a new file."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from promptbank.errors import BankFormatError, InvalidDataError
from promptbank.prompts import PROMPTS, build_prompt, prompt_from_config

N, D = 6, 32
#: the tiny Llama's Linear shapes ([layers, in, out]), as ``FrozenLM.linear_shapes()`` gives them
SHAPES = {"q_proj": [2, 32, 32], "k_proj": [2, 32, 16], "v_proj": [2, 32, 16], "o_proj": [2, 32, 32],
          "gate_proj": [2, 32, 64], "up_proj": [2, 32, 64], "down_proj": [2, 64, 32]}  # fmt: skip
#: kinds that start as the identity whatever the seed (scales at 1, VeRA's b at 0)
SEEDLESS = {"ssb", "ssl", "ia3", "vera"}


def build(method: str, **options):
    return build_prompt(method, N, D, shapes=SHAPES, **options)


def parts(prompt) -> list[torch.Tensor]:
    """Every tensor the module's answer depends on."""
    applied = prompt.applied()
    out = [applied.prompt] + ([applied.offsets] if applied.offsets is not None else [])
    for site in applied.sites.values():
        out += [t for t in (site.in_scale, site.out_scale, site.down, site.up) if t is not None]
        if site.shared is not None:
            out += [site.shared.mid, site.shared.outer]
    return out


@pytest.mark.parametrize("method", PROMPTS.names())
def test_prompt_has_its_shape_and_trains_only_what_it_stores(method):
    prompt = build(method, seed=1)
    assert prompt.method == method and prompt().shape == (N if prompt.has_prompt else 0, D)
    stored = prompt.trainable_state()
    assert sum(v.numel() for v in stored.values()) == prompt.num_trainable() > 0
    assert all(not v.requires_grad and v.device.type == "cpu" for v in stored.values())
    sum(t.sum() for t in parts(prompt)).backward()  # every stored tensor gets a gradient
    assert all(p.grad is not None for p in prompt.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", PROMPTS.names())
def test_seed_decides_the_initialisation(method):
    a, b, c = (build(method, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(x, y) for x, y in zip(parts(a), parts(b)))
    if method not in SEEDLESS:
        assert not all(torch.equal(x, y) for x, y in zip(parts(a), parts(c)))


@pytest.mark.parametrize("method", PROMPTS.names())
def test_config_and_state_round_trip(method):
    prompt = build(method, seed=5)
    with torch.no_grad():
        for param in prompt.parameters():
            param.add_(torch.randn_like(param))
    config = json.loads(json.dumps(prompt.config_state()))  # plain JSON
    assert config["method"] == method
    assert set(config) == {"method"} | {f.name for f in dataclasses.fields(prompt.config_class)}
    again = prompt_from_config(config, prompt.trainable_state())
    assert type(again) is type(prompt) and again.config == prompt.config
    assert all(torch.equal(x, y) for x, y in zip(parts(again), parts(prompt)))


@pytest.mark.parametrize("method", PROMPTS.names())
def test_bad_configs_get_one_clear_error(method):
    if PROMPTS.get(method).has_prompt:
        with pytest.raises(InvalidDataError):
            build_prompt(method, 0, D, shapes=SHAPES)
    else:
        with pytest.raises(InvalidDataError, match="shapes"):
            build_prompt(method, N, D)  # built without the LLM's Linear shapes
    with pytest.raises(InvalidDataError, match="option"):
        build(method, colour="blue")
    with pytest.raises(BankFormatError):
        prompt_from_config({"method": method, "dim": D})  # n_tokens missing
    with pytest.raises(InvalidDataError):
        build(method).load_trainable_state({})


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
    assert loaded.config.method == method and loaded.task_info("animals").module["method"] == method
    assert torch.equal(loaded.prompt_matrix("animals"), bank.prompt_matrix("animals"))
    texts = ANIMALS[0][:3]
    assert [p.scores for p in loaded.predict(texts)] == [p.scores for p in bank.predict(texts)]
