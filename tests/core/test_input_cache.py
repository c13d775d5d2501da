"""The input cache: scores and gradients equal to the uncached forward, bounded memory."""

from __future__ import annotations

import pytest
import torch

from promptbank.backbone import FrozenLM
from promptbank.errors import InvalidDataError
from promptbank.input_cache import InputCache
from promptbank.prompts import ULPT

TEXTS = ["a short text", "a much longer text with many more words in it", "rain again today", "one more"]
TEMPLATE = "In: {text} Out:"


def _both(lm: FrozenLM, labels: list[list[int]], dtype: torch.dtype | None = None):
    ids = lm.encode(TEXTS, TEMPLATE, 64, placement="suffix").input_ids
    prompt = ULPT(3, lm.hidden_size, rank=2, seed=1)
    rows = [1, 0, 3, 2]
    per_row = [labels] * len(rows)
    reference = lm.label_scores(prompt().unsqueeze(0).expand(4, -1, -1), [ids[i] for i in rows], per_row)
    (grad_ref,) = torch.autograd.grad(
        torch.nn.functional.cross_entropy(reference, torch.tensor([0, 1, 0, 1])), [prompt.z]
    )
    cache = InputCache(lm, ids, dtype=dtype)
    cached = cache.label_scores(rows, prompt().unsqueeze(0).expand(4, -1, -1), per_row)
    (grad_cached,) = torch.autograd.grad(
        torch.nn.functional.cross_entropy(cached, torch.tensor([0, 1, 0, 1])), [prompt.z]
    )
    return reference, cached, grad_ref, grad_cached, cache


@pytest.mark.parametrize("words", [["cat", "dog"], ["cat", "hot dog stand", "rain"]])
def test_cached_scores_and_gradients_equal_the_full_forward(tiny_llama: FrozenLM, words: list[str]):
    reference, cached, grad_ref, grad_cached, cache = _both(tiny_llama, tiny_llama.label_token_ids(words))
    torch.testing.assert_close(cached, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_cached, grad_ref, atol=1e-5, rtol=1e-4)
    assert cache.encoded == len(TEXTS)


def test_bf16_storage_halves_memory_and_stays_close(tiny_llama: FrozenLM):
    labels = tiny_llama.label_token_ids(["cat", "dog"])
    *_, exact = _both(tiny_llama, labels)
    reference, cached, grad_ref, grad_cached, half = _both(tiny_llama, labels, dtype=torch.bfloat16)
    assert half.nbytes() * 2 == exact.nbytes()
    torch.testing.assert_close(cached, reference, atol=2e-2, rtol=2e-2)
    assert torch.nn.functional.cosine_similarity(grad_cached.flatten(), grad_ref.flatten(), dim=0) > 0.99


def test_the_budget_drops_the_least_recently_used_and_recomputes_them(tiny_llama: FrozenLM):
    ids = tiny_llama.encode(TEXTS, TEMPLATE, 64, placement="suffix").input_ids
    one = InputCache(tiny_llama, ids).contexts([0])[0]
    cache = InputCache(tiny_llama, ids, budget_bytes=one.numel() * one.element_size() * 2)
    cache.contexts([0, 1, 2])  # 0 is the least recently used: dropped
    assert cache.encoded == 3 and cache.nbytes() <= cache.budget_bytes
    again = cache.contexts([0])[0]
    assert cache.encoded == 4
    torch.testing.assert_close(again, one)


def test_prefix_tokens_or_an_encoder_decoder_are_refused(tiny_llama: FrozenLM, tiny_t5: FrozenLM):
    prefix_ids = tiny_llama.encode(TEXTS, TEMPLATE, 64, placement="prefix").input_ids
    with pytest.raises(InvalidDataError, match="placement='suffix'"):
        InputCache(tiny_llama, prefix_ids)
    with pytest.raises(InvalidDataError, match="decoder-only"):
        InputCache(tiny_t5, tiny_t5.encode(TEXTS, TEMPLATE, 64).input_ids)


def test_unknown_placement_is_refused(tiny_llama: FrozenLM):
    with pytest.raises(InvalidDataError, match="placement must be one of"):
        tiny_llama.encode(TEXTS, TEMPLATE, 64, placement="middle")
