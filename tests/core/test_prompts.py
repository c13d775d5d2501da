"""Each prompt method's own formula and parameter count (the shared contract: test_prompt_contract.py)."""

from __future__ import annotations

import pytest
import torch

from promptbank.errors import InvalidDataError
from promptbank.prompts import (
    ULPT,
    LoPT1,
    LoPT2,
    PromptTuning,
    build_prompt,
    frozen_xavier,
)

N, D, R = 20, 576, 2


def test_ulpt_parameter_count_matches_design():
    assert ULPT(N, D, rank=R).num_trainable() == N * R + 2 * D == 1192


@pytest.mark.parametrize(
    "method,expected",
    [("ulpt", N * R + 2 * D), ("pt", N * D), ("lopt1", R * (N + D)), ("lopt2", 2 * D * R)],
)
def test_parameter_counts(method, expected):
    prompt = build_prompt(method, N, D, **({} if method == "pt" else {"rank": R}))
    assert prompt.num_trainable() == expected
    assert sum(v.numel() for v in prompt.trainable_state().values()) == expected
    assert prompt().shape == (N, D)


def test_ulpt_formula():
    p = ULPT(N, D, rank=R, seed=3)
    with torch.no_grad():
        p.scale.uniform_(0.5, 1.5)
        p.shift.normal_()
    expected = (p.z @ frozen_xavier(R, D, p.proj_seed)) * p.scale + p.shift
    torch.testing.assert_close(p(), expected)


def test_frozen_projection_is_xavier_and_not_trainable_or_stored():
    p = ULPT(N, D, rank=R)
    bound = (6.0 / (R + D)) ** 0.5
    assert p.proj.abs().max() <= bound and p.proj.abs().max() > 0.9 * bound
    assert not p.proj.requires_grad
    assert "proj" not in p.trainable_state() and "proj" not in p.state_dict()


PINNED_SEED_7 = [0.0071162, -0.0613751, 0.0324427]  # frozen_xavier(2, 576, 7)[0, :3] with torch's CPU generator


def test_frozen_projection_is_bit_identical_for_a_seed():
    a, b = frozen_xavier(2, 576, 7), frozen_xavier(2, 576, 7)
    assert torch.equal(a, b)
    assert not torch.equal(a, frozen_xavier(2, 576, 8))
    torch.manual_seed(999)  # the global RNG state must not matter
    assert torch.equal(frozen_xavier(2, 576, 7), a)
    # pinned values: a saved ULPT bank stores no projection, so a machine or torch version that
    # drew other values would silently change every stored prompt
    assert a[0, :3].tolist() == pytest.approx(PINNED_SEED_7, abs=1e-6)


def test_lopt_formulas():
    p1 = LoPT1(N, D, rank=R)
    torch.testing.assert_close(p1(), p1.u @ p1.v)
    p2 = LoPT2(N, D, rank=R)
    torch.testing.assert_close(p2(), torch.nn.functional.elu(p2.x0 @ p2.u) @ p2.v)
    assert not p2.x0.requires_grad and "x0" not in p2.trainable_state()


def test_bad_state_and_method_are_refused():
    p = PromptTuning(4, 8)
    with pytest.raises(InvalidDataError, match="shape"):
        p.load_trainable_state({"weight": torch.zeros(3, 8)})
    with pytest.raises(InvalidDataError, match="missing"):
        p.load_trainable_state({})
    with pytest.raises(InvalidDataError, match="unknown module kind"):
        build_prompt("prefix-tuning", 4, 8)


def test_gradients_reach_only_trainable_tensors():
    p = ULPT(N, D, rank=R)
    p().sum().backward()
    assert all(param.grad is not None for param in p.parameters())
    assert p.proj.grad is None
