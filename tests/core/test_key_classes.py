"""The router's class posterior as a second opinion on a classification task's answers."""

from __future__ import annotations

import json

import numpy as np
from helpers import ANIMALS, FAST, WEATHER

from promptbank.backbone import FrozenLM
from promptbank.bank import BankConfig, PromptBank
from promptbank.key_classes import KEY_CLASS_WEIGHTS, chosen_weight, key_class_scores

CATS = ["a cat sleeps", "the cat meows", "cat on a sofa", "my old cat", "cat and yarn", "black cat"]
DOGS = ["a dog barks", "the dog fetches", "dog in the park", "my old dog", "dog and bone", "brown dog"]
VAL = (["the cat naps", "a dog runs", "cat in a box", "dog on a walk"], ["cat", "dog", "cat", "dog"])


def bank_with_keys(tiny_llama: FrozenLM, strategy: str = "lda") -> PromptBank:
    bank = PromptBank(
        tiny_llama,
        BankConfig(n_tokens=4, key_encoder="embedding-mean", router={"strategy": strategy}, key_classes=True),
    )
    for name, (texts, labels) in (("animals", ANIMALS), ("weather", WEATHER)):
        more = {"key_texts": CATS + DOGS, "key_labels": ["cat"] * 6 + ["dog"] * 6} if name == "animals" else {}
        val = {"val_texts": VAL[0], "val_labels": VAL[1]} if name == "animals" else {}
        bank.add_task(name, texts, labels, train_config=FAST, **val, **more)
    return bank


def test_the_weight_is_chosen_on_validation_and_the_answers_add_the_class_posterior(tiny_llama, tmp_path):
    bank = bank_with_keys(tiny_llama)
    info = bank.task_info("animals")
    assert info.metadata["key_class_weight"] in KEY_CLASS_WEIGHTS
    assert "key_class_weight" not in bank.task_info("weather").metadata  # no validation inputs: the prompt alone
    texts = ["a cat purrs here", "one dog barks there", "sunny and warm"]
    info.metadata["key_class_weight"] = 0.0
    alone = [list(p.scores.values()) for p in bank.predict(texts[:2], task="animals")]
    info.metadata["key_class_weight"] = 2.0
    with_keys = [list(p.scores.values()) for p in bank.predict(texts[:2], task="animals")]
    extra = key_class_scores(bank, "animals", bank.key_encoder.encode(texts[:2]))
    assert extra.shape == (2, 2) and np.allclose(np.exp(extra).sum(axis=1), 1.0)
    assert np.allclose(with_keys, np.asarray(alone) + 2.0 * extra)
    routed = bank.predict(texts)  # keys computed once for routing and reused for the posterior
    assert [p.task for p in routed] == ["animals", "animals", "weather"]
    assert np.allclose([list(p.scores.values()) for p in routed[:2]], with_keys)
    bank.save(tmp_path / "bank")
    loaded = PromptBank.load(tmp_path / "bank", backbone=tiny_llama)
    assert loaded.config.key_classes and loaded.task_info("animals").metadata["key_class_weight"] == 2.0
    assert [p.scores for p in loaded.predict(texts)] == [p.scores for p in routed]


def test_the_validated_weight_helps_where_the_prompt_is_weak(tiny_llama):
    """A 4-step prompt on a random LLM barely separates cat from dog; the keys of the words do,
    so validation picks a positive weight and the fused answers are right on the validation inputs."""
    bank = bank_with_keys(tiny_llama)
    weight = bank.task_info("animals").metadata["key_class_weight"]
    assert weight > 0
    preds = bank.predict(VAL[0], task="animals")
    assert [p.label for p in preds] == VAL[1]


def test_a_router_without_class_statistics_leaves_the_prompt_alone(tiny_llama):
    bank = bank_with_keys(tiny_llama, strategy="knn")
    assert bank.task_info("animals").metadata["key_class_weight"] == 0.0
    assert key_class_scores(bank, "animals", bank.key_encoder.encode(["a cat"])) is None


def test_ties_on_validation_keep_the_largest_weight():
    """16 validation inputs per class often leave several weights equally right: the largest is kept."""
    assert chosen_weight([1.0] * len(KEY_CLASS_WEIGHTS)) == KEY_CLASS_WEIGHTS[-1]
    assert chosen_weight([0.9, 0.8] + [0.7] * (len(KEY_CLASS_WEIGHTS) - 2)) == 0.0
    peak = [0.5, 0.6, 0.8, 0.8, 0.7, 0.6, 0.6, 0.6]
    assert chosen_weight(peak) == KEY_CLASS_WEIGHTS[3]


def test_a_bank_saved_before_key_classes_existed_keeps_answering_with_its_prompts(tiny_llama, tmp_path):
    bank = bank_with_keys(tiny_llama)
    bank.save(tmp_path / "bank")
    path = tmp_path / "bank" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["config"]["key_classes"]
    for task in manifest["tasks"]:
        task["metadata"].pop("key_class_weight", None)
    path.write_text(json.dumps(manifest))
    loaded = PromptBank.load(tmp_path / "bank", backbone=tiny_llama)
    assert not loaded.config.key_classes
    texts = ["a cat purrs here", "one dog barks there"]
    bank.task_info("animals").metadata["key_class_weight"] = 0.0
    assert [p.scores for p in loaded.predict(texts)] == [p.scores for p in bank.predict(texts)]
    loaded.add_task(
        "birds",
        ["a robin sings", "a crow caws"],
        ["robin", "crow"],
        train_config=FAST,
        val_texts=["the robin", "the crow"],
        val_labels=["robin", "crow"],
    )
    assert "key_class_weight" not in loaded.task_info("birds").metadata
