"""PEFT interop: an exported prompt loads with PeftModel and answers like the bank; adapters import back."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from helpers import ANIMALS, FAST
from peft import PeftModel

from promptbank.backbone import FrozenLM
from promptbank.bank import BankConfig, PromptBank
from promptbank.errors import BankFormatError, InvalidDataError

TEMPLATE = "Text: {text}\nAnimal:"
TEXTS = ["my cat purrs", "the dog runs fast", "a cat and a dog"]


def _bank(lm: FrozenLM, **options) -> PromptBank:
    """A one-task bank; prompts before the input (as PEFT's prompt tuning) unless ``placement`` says otherwise."""
    options = {"placement": "prefix", **options}
    bank = PromptBank(lm, BankConfig(n_tokens=4, key_encoder="embedding-mean", **options))
    bank.add_task("animals", *ANIMALS, template=TEMPLATE, train_config=FAST)
    return bank


def _peft_scores(lm: FrozenLM, folder: Path, text: str, labels: list[list[int]]) -> list[float]:
    """Mean log-probability of each label after the text, through PEFT's own prompt-tuning forward."""
    model = PeftModel.from_pretrained(copy.deepcopy(lm.model), folder).eval()
    ids = [t for t in lm.encode([text], TEMPLATE, 64).input_ids[0] if t >= 0]
    scores = []
    for label in labels:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + label])).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        start = logits.shape[0] - len(label) - 1
        scores.append(float(sum(logp[start + k, t] for k, t in enumerate(label)) / len(label)))
    return scores


@pytest.mark.parametrize("method", ["ulpt", "pt"])
def test_an_exported_prompt_answers_in_peft_like_in_the_bank(tiny_llama: FrozenLM, tmp_path: Path, method: str):
    bank = _bank(tiny_llama, method=method)
    out = bank.export_peft("animals", tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 4
    labels = tiny_llama.label_token_ids(["cat", "dog"])
    for text, pred in zip(TEXTS, bank.predict(TEXTS, task="animals")):
        assert list(pred.scores.values()) == pytest.approx(_peft_scores(tiny_llama, out, text, labels), abs=1e-4)


def test_a_peft_adapter_imports_as_a_routed_task(tiny_llama: FrozenLM, tmp_path: Path):
    source = _bank(tiny_llama, method="pt")
    out = source.export_peft("animals", tmp_path / "adapter")
    bank = PromptBank(tiny_llama, BankConfig(method="pt", n_tokens=4, key_encoder="embedding-mean", placement="prefix"))
    info = bank.add_task("imported", *ANIMALS, template=TEMPLATE, from_peft=out)
    assert "train_seconds" not in info.metadata  # nothing was trained
    assert torch.equal(bank.prompt_matrix("imported"), source.prompt_matrix("animals"))
    assert [p.scores for p in bank.predict(TEXTS)] == [p.scores for p in source.predict(TEXTS, task="animals")]


def test_peft_refusals_name_the_fix(tiny_llama: FrozenLM, tmp_path: Path):
    out = _bank(tiny_llama, method="pt").export_peft("animals", tmp_path / "adapter")
    with pytest.raises(InvalidDataError, match="already exists"):
        _bank(tiny_llama, method="pt").export_peft("animals", out)
    with pytest.raises(InvalidDataError, match="placement='prefix'"):
        _bank(tiny_llama, placement="suffix").export_peft("animals", tmp_path / "other")
    ulpt = PromptBank(tiny_llama, BankConfig(n_tokens=4, key_encoder="embedding-mean"))
    with pytest.raises(InvalidDataError, match="method='pt', n_tokens=4"):
        ulpt.add_task("imported", *ANIMALS, template=TEMPLATE, from_peft=out)
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LORA"}))
    with pytest.raises(BankFormatError, match="only PROMPT_TUNING"):
        ulpt.add_task("imported", *ANIMALS, template=TEMPLATE, from_peft=out)
    with pytest.raises(BankFormatError, match="not a readable PEFT adapter"):
        ulpt.add_task("imported", *ANIMALS, template=TEMPLATE, from_peft=tmp_path / "missing")
