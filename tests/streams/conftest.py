"""Fixtures of the stream tests: the tiny random Llama saved as a model folder, and a tiny run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, tiny_llama) -> str:
    """The tiny random Llama as a local model folder (what ``--backbone`` takes)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    return str(folder)
