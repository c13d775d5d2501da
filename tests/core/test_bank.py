"""PromptBank on a tiny random Llama: API, mixed batches, persistence, atomicity, refusals."""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ANIMALS, FAST, WEATHER

from promptbank import storage
from promptbank.backbone import FrozenLM, count_frozen_grads
from promptbank.bank import BankConfig, PromptBank
from promptbank.errors import (
    BackboneMismatchError,
    BankFormatError,
    InvalidDataError,
    TaskExistsError,
    UnknownTaskError,
)
from promptbank.prompts import ULPT, PromptTuning
from promptbank.records import Prediction, UnknownAnswer
from promptbank.routing import make_router


def test_add_task_records_labels_and_params(bank: PromptBank):
    assert bank.tasks == ["animals", "weather"]
    info = bank.task_info("animals")
    assert info.label_names == ["cat", "dog"]
    assert info.metadata["trainable_params"] == 4 * 2 + 2 * 32
    assert bank.prompt_matrix("animals").shape == (4, 32)
    assert count_frozen_grads(bank.backbone.model) == 0


def test_predict_routes_each_input_and_uses_task_labels(bank: PromptBank):
    texts = ["the cat sat on the mat", "heavy rain today", "a dog barked loudly", "sunny and warm"]
    preds = bank.predict(texts)
    assert [p.task for p in preds] == ["animals", "weather", "animals", "weather"]
    for p in preds:
        assert p.label in bank.task_info(p.task).label_names
        assert set(p.scores) == set(bank.task_info(p.task).label_names)


def test_label_index_points_into_the_label_names(bank: PromptBank):
    preds = bank.predict(["my cat purrs", "heavy rain today"], task=["animals", "weather"])
    for p in preds:
        names = bank.task_info(p.task).label_names
        assert names[p.label_index] == p.label and p.label == max(p.scores, key=p.scores.get)
    assert Prediction(None, None, {}).label_index == -1


def test_a_task_list_with_none_answers_only_the_named_inputs(bank: PromptBank):
    texts = ["my cat purrs", "no task for me", "heavy rain today"]
    preds = bank.predict(texts, task=["animals", None, "weather"])
    assert [p.task for p in preds] == ["animals", None, "weather"]
    assert preds[1].label is None and preds[1].scores == {} and preds[1].label_index == -1
    alone = bank.predict([texts[2]], task="weather")[0]
    assert preds[2].scores == pytest.approx(alone.scores, abs=1e-5)


def test_evaluate_scores_routed_and_given_task_answers(bank: PromptBank):
    texts, labels = ANIMALS[0][:4], ANIMALS[1][:4]
    result = bank.evaluate(texts, labels, task="animals")
    routed, given = bank.predict(texts), bank.predict(texts, task="animals")
    assert result["n"] == 4
    assert result["routing_accuracy"] == np.mean([p.task == "animals" for p in routed])
    assert result["accuracy"] == np.mean([p.task == "animals" and p.label == y for p, y in zip(routed, labels)])
    assert result["oracle_accuracy"] == np.mean([p.label == y for p, y in zip(given, labels)])
    by_index = bank.evaluate(texts, [["cat", "dog"].index(y) for y in labels], task="animals")
    assert by_index == result  # labels as indices into label_names
    with pytest.raises(InvalidDataError, match="true task"):
        bank.evaluate(texts, labels)
    with pytest.raises(InvalidDataError):
        bank.evaluate(texts, labels[:2], task="animals")


def test_mixed_batch_is_one_forward_and_matches_per_task(bank: PromptBank, monkeypatch):
    texts = ["my cat purrs", "rain again tonight", "the dog runs fast", "bright sun outside"]
    tasks = ["animals", "weather", "animals", "weather"]
    separate = [bank.predict([t], task=k)[0].scores for t, k in zip(texts, tasks)]
    calls = []
    original = FrozenLM.label_scores
    monkeypatch.setattr(FrozenLM, "label_scores", lambda self, *a, **kw: calls.append(1) or original(self, *a, **kw))
    mixed = bank.predict(texts, task=tasks, batch_size=8)
    assert len(calls) == 1
    for m, s in zip(mixed, separate):
        for label in s:
            assert m.scores[label] == pytest.approx(s[label], abs=1e-4)


def test_save_load_round_trip_predicts_identically(bank: PromptBank, tmp_path: Path):
    texts = ["my cat purrs", "rain again tonight", "the dog runs fast"]
    before = bank.predict(texts)
    bank.save(tmp_path / "bank")
    loaded = PromptBank.load(tmp_path / "bank", backbone=bank.backbone)
    after = loaded.predict(texts)
    assert [(p.task, p.label) for p in before] == [(p.task, p.label) for p in after]
    for a, b in zip(before, after):
        assert a.scores == pytest.approx(b.scores, abs=1e-5)
    assert torch.equal(loaded.prompt_matrix("animals"), bank.prompt_matrix("animals"))
    manifest = json.loads((tmp_path / "bank" / "manifest.json").read_text())
    assert manifest["schema_version"] == storage.SCHEMA_VERSION
    assert [t["name"] for t in manifest["tasks"]] == ["animals", "weather"]
    assert not list((tmp_path / "bank").glob("*.pkl")) and not list((tmp_path / "bank").glob("*.pt"))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_prompts_are_stored_in_the_storage_dtype_and_predictions_use_them(tiny_llama, dtype, tmp_path: Path):
    template = "Text: {text}\nAnimal:"
    banks = {}
    for d in {dtype, "float32"}:  # trained identically; only the storage dtype differs
        banks[d] = PromptBank(tiny_llama, BankConfig(n_tokens=4, key_encoder="embedding-mean", storage_dtype=d))
        banks[d].add_task("animals", *ANIMALS, template=template, train_config=FAST)
    bank = banks[dtype]
    state = bank.prompt_state("animals")
    exact = banks["float32"].prompt_state("animals")
    assert all(v.dtype == getattr(torch, dtype) for v in state.values())
    assert all(torch.equal(state[k], exact[k].to(state[k].dtype)) for k in state)  # rounded from the same training

    rebuilt = bank.new_prompt()
    rebuilt.load_trainable_state({k: v.float() for k, v in state.items()})
    with torch.no_grad():
        matrix = rebuilt().float()
    assert torch.equal(bank.prompt_matrix("animals"), matrix)  # built from the stored (rounded) tensors
    if dtype != "float32":
        assert not torch.equal(matrix, banks["float32"].prompt_matrix("animals"))

    texts = ANIMALS[0][:4]
    ids = tiny_llama.encode(texts, template, bank.config.max_input_tokens, bank.config.placement).input_ids
    label_ids = tiny_llama.label_token_ids(["cat", "dog"])
    with torch.no_grad():
        expected = tiny_llama.label_scores(matrix.expand(len(texts), -1, -1), ids, [label_ids] * len(texts))
    got = [list(p.scores.values()) for p in bank.predict(texts, task="animals")]
    assert np.allclose(got, expected.float().numpy(), atol=1e-5)

    bank.save(tmp_path / "bank")
    loaded = PromptBank.load(tmp_path / "bank", backbone=tiny_llama).prompt_state("animals")
    assert all(loaded[k].dtype == state[k].dtype and torch.equal(loaded[k], state[k]) for k in state)


def test_matrix_cache_keeps_the_most_recent_and_rebuilds_evicted_ones_exactly(bank: PromptBank):
    built = {n: bank.prompt_matrix(n).clone() for n in bank.tasks}
    bank.matrix_cache.size = 1
    assert bank.matrix_cache.names() == ["weather"]  # the most recently used one stays
    assert torch.equal(bank.prompt_matrix("animals"), built["animals"])
    assert bank.matrix_cache.names() == ["animals"]
    preds = bank.predict(["my cat purrs", "heavy rain today"])  # both tasks in one batch, one slot
    assert [p.task for p in preds] == ["animals", "weather"]
    assert len(bank.matrix_cache.names()) == 1 and torch.equal(bank.prompt_matrix("weather"), built["weather"])
    bank.remove_task("weather")
    assert bank.matrix_cache.names() == []
    with pytest.raises(InvalidDataError, match="at least one"):
        bank.matrix_cache.size = 0


def test_bytes_per_task_is_what_a_save_writes(bank: PromptBank, tmp_path: Path):
    per_task = bank.bytes_per_task()
    bank.save(tmp_path / "bank")
    files = {f.name: f.stat().st_size for f in (tmp_path / "bank").iterdir() if f.name != storage.LOCK}
    assert per_task["total"] == pytest.approx(sum(files.values()) / 2)
    assert per_task["manifest"] == files["manifest.json"] / 2
    assert per_task["prompt"] == sum(v for n, v in files.items() if n.startswith("prompts-")) / 2
    assert per_task["total"] == pytest.approx(per_task["prompt"] + per_task["routing"] + per_task["manifest"])
    empty = PromptBank(bank.backbone, BankConfig(n_tokens=4, key_encoder="embedding-mean"))
    assert empty.bytes_per_task()["total"] == 0.0


def test_crash_during_save_leaves_previous_bank_loadable(bank: PromptBank, tmp_path: Path, monkeypatch):
    path = tmp_path / "bank"
    bank.save(path)
    bank.remove_task("weather")
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith("manifest.json"):
            raise KeyboardInterrupt("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        bank.save(path)
    monkeypatch.setattr(os, "replace", real_replace)
    survivor = PromptBank.load(path, backbone=bank.backbone)
    assert survivor.tasks == ["animals", "weather"]
    assert not list(path.glob(".*.tmp"))


def test_damaged_or_missing_files_are_refused(bank: PromptBank, tmp_path: Path):
    path = tmp_path / "bank"
    bank.save(path)
    prompts = next(path.glob("prompts-*.safetensors"))
    data = bytearray(prompts.read_bytes())
    data[-3] ^= 0xFF
    prompts.write_bytes(bytes(data))
    with pytest.raises(BankFormatError, match="damaged"):
        PromptBank.load(path, backbone=bank.backbone)
    prompts.unlink()
    with pytest.raises(BankFormatError, match="missing"):
        PromptBank.load(path, backbone=bank.backbone)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(BankFormatError, match="damaged"):
        PromptBank.load(path, backbone=bank.backbone)
    with pytest.raises(BankFormatError, match="does not exist"):
        PromptBank.load(tmp_path / "nowhere", backbone=bank.backbone)


def test_bank_from_another_backbone_is_refused(bank: PromptBank, tiny_t5: FrozenLM, tmp_path: Path):
    bank.save(tmp_path / "bank")
    with pytest.raises(BackboneMismatchError, match="tiny-llama"):
        PromptBank.load(tmp_path / "bank", backbone=tiny_t5)


def _with_weights(lm: FrozenLM, change) -> FrozenLM:
    model = copy.deepcopy(lm.model)
    with torch.no_grad():
        change(model.get_input_embeddings().weight)
    return FrozenLM(model, lm.tokenizer, name=lm.name, device="cpu")


@pytest.mark.parametrize(
    "change",
    [
        lambda w: w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(1)) * 0.02),  # another init
        lambda w: w[3].add_(1e-2),  # one row fine-tuned a little
    ],
    ids=["other-checkpoint", "fine-tuned-row"],
)
def test_same_architecture_with_other_weights_is_refused(bank: PromptBank, tmp_path: Path, change):
    bank.save(tmp_path / "bank")
    other = _with_weights(bank.backbone, change)
    assert other.identity()["model_type"] == bank.backbone.identity()["model_type"]
    with pytest.raises(BackboneMismatchError, match="embedding weights differ"):
        PromptBank.load(tmp_path / "bank", backbone=other)
    same = _with_weights(bank.backbone, lambda w: None)  # a copy of the same weights loads
    assert PromptBank.load(tmp_path / "bank", backbone=same).tasks == bank.tasks


def test_remove_task_stops_routing_to_it(bank: PromptBank):
    bank.remove_task("weather")
    assert bank.tasks == ["animals"]
    assert {p.task for p in bank.predict(["heavy rain today", "sunny and warm"])} == {"animals"}
    with pytest.raises(UnknownTaskError):
        bank.remove_task("weather")


@pytest.mark.parametrize(
    "texts,labels,kwargs,match",
    [
        ([], [], {"label_names": ["a", "b"]}, "empty"),
        ("one string", ["a"], {"label_names": ["a", "b"]}, "single string"),
        (["x", 3], ["a", "b"], {"label_names": ["a", "b"]}, "not str"),
        (["x", "  "], ["a", "b"], {"label_names": ["a", "b"]}, "whitespace"),
        (["x", "y"], ["a", "a"], {"label_names": ["a", "b"]}, "only one class"),
        (["x", "y"], ["a", "c"], {"label_names": ["a", "b"]}, "not one of label_names"),
        (["x", "y"], [0, 2], {"label_names": ["a", "b"]}, "outside"),
        (["x", "y"], [0, 1], {}, "label_names is required"),
        (["x", "y"], ["a"], {"label_names": ["a", "b"]}, "2 texts but 1 labels"),
        (["x", "y"], ["a", "b"], {"label_names": ["a", "a"]}, "unique"),
        (["x", "y"], ["a", "b"], {"label_names": ["a", "b"], "template": "no slot"}, "must contain"),
    ],
)
def test_bad_task_data_is_refused_before_training(tiny_llama, texts, labels, kwargs, match):
    b = PromptBank(tiny_llama, BankConfig(n_tokens=2, key_encoder="embedding-mean"))
    with pytest.raises(InvalidDataError, match=match):
        b.add_task("t", texts, labels, train_config=FAST, **kwargs)
    assert b.tasks == []


def test_duplicate_task_name_is_refused(bank: PromptBank):
    with pytest.raises(TaskExistsError, match="already in the bank"):
        bank.add_task("animals", *ANIMALS, train_config=FAST)


def test_unknown_task_and_empty_bank(tiny_llama, bank: PromptBank):
    with pytest.raises(UnknownTaskError, match="known tasks"):
        bank.predict(["x"], task="nope")
    empty = PromptBank(tiny_llama, BankConfig(n_tokens=2, key_encoder="embedding-mean"))
    with pytest.raises(InvalidDataError, match="no tasks"):
        empty.predict(["x"])


def test_long_inputs_are_truncated_with_one_warning(tiny_llama):
    b = PromptBank(tiny_llama, BankConfig(n_tokens=2, key_encoder="embedding-mean", max_input_tokens=8))
    long = " ".join(["word"] * 50)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b.add_task("t", [long, "short one", long + " x", "short two"], ["a", "b", "a", "b"], train_config=FAST)
    truncation = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert len(truncation) == 1 and truncation[0].startswith("2 of 4 texts"), truncation
    enc = tiny_llama.encode([long], "A {text} B", 8).input_ids[0]
    assert len(enc) <= 8 + len(tiny_llama.encode(["x"], "A {text} B", 8).input_ids[0])


def test_prompt_state_reuse_skips_training(bank: PromptBank, tiny_llama):
    other = PromptBank(tiny_llama, BankConfig(n_tokens=4, key_encoder="embedding-mean"))
    info = other.add_task(
        "animals", *ANIMALS, template="Text: {text}\nAnimal:", prompt_state=bank.prompt_state("animals")
    )
    assert "train_seconds" not in info.metadata
    assert torch.equal(other.prompt_matrix("animals"), bank.prompt_matrix("animals"))


def test_calibrate_unknown_rejects_the_requested_share_and_persists(bank: PromptBank, tmp_path: Path):
    # Unseen inputs of the bank's tasks: training inputs would all sit at cosine ~1.0, where
    # float32 ties make "the two least close" ill-defined.
    known = [
        "a cat on the sofa",
        "dogs bark at night",
        "kittens purr softly",
        "the dog fetched a ball",
        "rain falls heavily",
        "a warm sunny afternoon",
        "more rain expected",
        "the sun is shining",
    ]
    _, routing = bank.route(known, top=1)
    assert len(set(np.round(routing.closeness, 5).tolist())) == len(known), "closeness ties: pick other texts"
    threshold = bank.calibrate_unknown(known, reject_rate=0.25)
    assert bank.router.unknown_threshold == threshold
    preds = bank.predict(known)
    assert sum(p.task is None for p in preds) == 2  # the two least close of eight (quantile 0.25)
    unknown = [i for i, p in enumerate(preds) if p.task is None]
    # by default the bare LLM continues the text (no module: it is no task's)
    assert all(preds[i].label is None and isinstance(preds[i].text, str) for i in unknown)
    assert all(np.isfinite(preds[i].route_score) for i in unknown)
    zero_shot = bank.predict(known, unknown_answer={"labels": ["sun", "cat"], "template": "Text: {text}\nTopic:"})
    for i, p in enumerate(zero_shot):
        if i in unknown:
            assert p.task is None and p.label in ("sun", "cat") and list(p.scores) == ["sun", "cat"]
        else:
            assert p == preds[i]  # known inputs are answered as before
    with pytest.raises(InvalidDataError, match="template"):
        bank.predict(known, unknown_answer={"template": "no slot"})
    with pytest.raises(InvalidDataError, match="labels"):
        bank.predict(known, unknown_answer=UnknownAnswer(labels=[]))
    bank.save(tmp_path / "bank")
    assert PromptBank.load(tmp_path / "bank", backbone=bank.backbone).router.unknown_threshold == threshold
    bank.calibrate_unknown(known, reject_rate=0)
    assert all(p.task is not None for p in bank.predict(known))
    with pytest.raises(InvalidDataError, match="reject_rate"):
        bank.calibrate_unknown(known, reject_rate=1.5)


def test_router_learns_from_validation_inputs_too(tiny_llama):
    """Validation inputs are labelled task inputs: their keys join the router's class statistics."""
    b = PromptBank(tiny_llama, BankConfig(n_tokens=2, key_encoder="embedding-mean"))
    val = (["a cat naps", "the dog sleeps"], ["cat", "dog"])
    b.add_task("animals", *ANIMALS, val_texts=val[0], val_labels=val[1], train_config=FAST)
    b.add_task("weather", *WEATHER, train_config=FAST)
    counts = {t: int(s.counts.sum()) for t, s in b.router._tasks.items()}
    assert counts == {0: len(ANIMALS[0]) + 2, 1: len(WEATHER[0])}


def test_router_learns_from_extra_key_inputs_the_prompt_does_not_train_on(tiny_llama, monkeypatch):
    """``key_texts``: more labelled inputs for the router only; the trainer never sees them."""
    import promptbank.bank as bank_mod

    trained_on = []
    train = bank_mod.train_prompt
    monkeypatch.setattr(
        bank_mod, "train_prompt", lambda bb, p, ids, *a, **k: trained_on.append(len(ids)) or train(bb, p, ids, *a, **k)
    )
    b = PromptBank(tiny_llama, BankConfig(n_tokens=2, key_encoder="embedding-mean"))
    extra = (["a kitten sleeps", "the puppy plays", "cats climb"], ["cat", "dog", "cat"])
    info = b.add_task("animals", *ANIMALS, key_texts=extra[0], key_labels=extra[1], train_config=FAST)
    assert trained_on == [len(ANIMALS[0])]
    assert info.metadata["n_keys"] == len(ANIMALS[0]) + 3
    assert b.router._tasks[0].counts.tolist() == [6 + 2, 6 + 1]  # cat, dog: train + extra keys
    with pytest.raises(InvalidDataError, match="key_texts and key_labels"):
        b.add_task("weather", *WEATHER, key_texts=extra[0], train_config=FAST)
    with pytest.raises(InvalidDataError, match="key_labels"):
        b.add_task("weather", *WEATHER, key_texts=["sunny"], key_labels=["cat"], train_config=FAST)
    assert b.tasks == ["animals"]


def test_router_keys_are_encoded_and_added_a_block_of_texts_at_a_time(tiny_llama, monkeypatch):
    """Memory while a task is added is one block of keys, not all of them; each block must
    reach the router with its own labels."""
    import promptbank.keys as keys_mod

    monkeypatch.setattr(keys_mod, "KEY_BLOCK_TEXTS", 5)
    b = PromptBank(tiny_llama, BankConfig(n_tokens=2, key_encoder="embedding-mean"))
    sizes, add = [], b.router.add_task_blocks
    monkeypatch.setattr(
        b.router, "add_task_blocks", lambda tid, blocks: add(tid, (sizes.append(len(k)) or (k, y) for k, y in blocks))
    )
    extra = (["a kitten sleeps", "the puppy plays", "cats climb"], ["cat", "dog", "cat"])
    b.add_task("animals", *ANIMALS, key_texts=extra[0], key_labels=extra[1], train_config=FAST)
    assert sizes == [5, 5, 5]
    whole = make_router(dim=b.key_encoder.dim, **b.config.router)
    labels = np.array([["cat", "dog"].index(y) for y in ANIMALS[1] + extra[1]])
    whole.add_task(0, b.key_encoder.encode(ANIMALS[0] + extra[0]), labels)
    (_, mine), (_, theirs) = b.router.state(), whole.state()
    for name in theirs:
        np.testing.assert_allclose(
            mine[name].astype(np.float64), theirs[name].astype(np.float64), atol=1e-5, err_msg=name
        )


@pytest.mark.slow
def test_bank_with_the_default_concatenated_keys_saves_and_refuses_other_keys(tiny_llama, tmp_path: Path):
    from promptbank.keys import make_key_encoder

    b = PromptBank(tiny_llama, BankConfig(n_tokens=2))  # default keys: minilm+embedding-set-mean
    assert b.key_encoder.name == "minilm+embedding-set-mean" and b.router.dim == 384 + tiny_llama.hidden_size
    b.add_task("animals", *ANIMALS, train_config=FAST)
    b.add_task("weather", *WEATHER, train_config=FAST)
    texts = ["a cat on the mat", "rain again tonight"]
    before = [p.task for p in b.predict(texts)]
    b.save(tmp_path / "bank")
    loaded = PromptBank.load(tmp_path / "bank", backbone=tiny_llama, key_encoder=b.key_encoder)
    assert [p.task for p in loaded.predict(texts)] == before == ["animals", "weather"]
    with pytest.raises(BackboneMismatchError, match="pass the same encoder"):
        PromptBank.load(
            tmp_path / "bank", backbone=tiny_llama, key_encoder=make_key_encoder("embedding-mean", backbone=tiny_llama)
        )


def test_a_given_key_encoder_is_recorded_so_load_rebuilds_it(tiny_llama, tmp_path: Path):
    from promptbank.keys import make_key_encoder

    b = PromptBank(
        tiny_llama, BankConfig(n_tokens=2), key_encoder=make_key_encoder("embedding-mean", backbone=tiny_llama)
    )
    assert b.config.key_encoder == "embedding-mean"
    b.add_task("animals", *ANIMALS, train_config=FAST)
    b.add_task("weather", *WEATHER, train_config=FAST)
    b.save(tmp_path / "bank")
    loaded = PromptBank.load(tmp_path / "bank", backbone=tiny_llama)  # no encoder passed: rebuilt from the manifest
    assert loaded.key_encoder.name == "embedding-mean"
    assert [p.task for p in loaded.predict(["a cat on the mat"])] == [p.task for p in b.predict(["a cat on the mat"])]


def test_key_encoder_and_router_options_by_name(tiny_llama):
    """The footprint-bound setting of BENCHMARKS.md, written the way the docs write it."""
    b = PromptBank(tiny_llama, key_encoder="embedding-mean", n_tokens=2, router={"strategy": "lda", "per_class": False})
    assert b.config.key_encoder == "embedding-mean" and b.key_encoder.name == "embedding-mean"
    assert b.router.dim == tiny_llama.hidden_size and b.router.config.per_class is False
    b.add_task("animals", *ANIMALS, train_config=FAST)
    b.add_task("weather", *WEATHER, train_config=FAST)
    assert [p.task for p in b.predict(["a cat on the mat"])] == ["animals"]


def test_a_suffix_bank_answers_like_its_prompts_after_the_input_and_round_trips(tiny_llama, tmp_path: Path):
    bank = PromptBank(tiny_llama, BankConfig(n_tokens=4, key_encoder="embedding-mean", placement="suffix"))
    bank.add_task("animals", *ANIMALS, template="Text: {text}\nAnimal:", train_config=FAST)
    texts = ["my cat purrs", "the dog runs fast"]
    preds = bank.predict(texts, task="animals")
    ids = tiny_llama.encode(texts, "Text: {text}\nAnimal:", 64, placement="suffix").input_ids
    matrix = bank.prompt_matrix("animals")
    with torch.no_grad():
        direct = tiny_llama.label_scores(
            matrix.expand(2, -1, -1), ids, [tiny_llama.label_token_ids(["cat", "dog"])] * 2
        )
    for p, row in zip(preds, direct):
        assert list(p.scores.values()) == pytest.approx(row.tolist(), abs=1e-5)
    bank.save(tmp_path / "bank")
    assert json.loads((tmp_path / "bank" / "manifest.json").read_text())["config"]["placement"] == "suffix"
    loaded = PromptBank.load(tmp_path / "bank", backbone=tiny_llama)
    assert loaded.config.placement == "suffix"
    assert [p.scores for p in loaded.predict(texts, task="animals")] == [p.scores for p in preds]


def test_a_bank_saved_before_placements_existed_loads_as_prefix(tiny_llama, tmp_path: Path):
    assert BankConfig().placement == "suffix"  # what a new bank gets
    bank = PromptBank(tiny_llama, BankConfig(n_tokens=4, key_encoder="embedding-mean", placement="prefix"))
    bank.add_task("animals", *ANIMALS, train_config=FAST)
    bank.add_task("weather", *WEATHER, train_config=FAST)
    texts = ["my cat purrs", "rain again tonight"]
    before = bank.predict(texts)
    bank.save(tmp_path / "bank")
    path = tmp_path / "bank" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["config"]["placement"]
    path.write_text(json.dumps(manifest))
    loaded = PromptBank.load(tmp_path / "bank", backbone=bank.backbone)
    assert loaded.config.placement == "prefix"
    assert [p.scores for p in loaded.predict(texts)] == [p.scores for p in before]


def test_label_init_starts_the_prompt_at_the_label_words_mean(tiny_llama):
    bank = PromptBank(tiny_llama, BankConfig(n_tokens=4, key_encoder="embedding-mean", prompt_init="labels"))
    seen = []
    original = ULPT.start_near

    def spy(self, center):
        seen.append(center.clone())
        original(self, center)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ULPT, "start_near", spy)
        bank.add_task("animals", *ANIMALS, template="Text: {text}\nAnimal:", train_config=FAST)
    words = [t for ids in tiny_llama.label_token_ids(["cat", "dog"]) for t in ids]
    expected = tiny_llama.model.get_input_embeddings().weight[words].detach().mean(0)
    assert len(seen) == 1 and torch.allclose(seen[0], expected)
    prompt = ULPT(4, 32, seed=1)
    prompt.start_near(expected)
    assert torch.equal(prompt.shift.detach(), expected)
    pt = PromptTuning(4, 32, seed=1)
    spread = pt().detach().clone()
    pt.start_near(expected)
    torch.testing.assert_close(pt().detach(), spread + expected)
    with pytest.raises(InvalidDataError, match="prompt_init='random'"):
        PromptBank(tiny_llama, BankConfig(method="lopt1", key_encoder="embedding-mean", prompt_init="labels"))
    with pytest.raises(InvalidDataError, match="prompt_init must be one of"):
        BankConfig(prompt_init="zeros")
