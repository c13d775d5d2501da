"""Text-to-text tasks: the target-only loss, per-example generation in mixed batches, banks that
hold both task types, and their errors."""

from __future__ import annotations

import pytest
import torch
from helpers import ANIMALS, FAST

from promptbank.backbone import PROMPT_SLOT, FrozenLM
from promptbank.bank import BankConfig, PromptBank
from promptbank.errors import InvalidDataError
from promptbank.generation import generate, generation_config
from promptbank.module_batch import Applied, ModuleBatch
from promptbank.objectives import TextToText
from promptbank.prompts import build_prompt
from promptbank.text_metrics import text_scores
from promptbank.trainer import TrainConfig, train_prompt

TEMPLATE = "Q: {text}\nA:"
TEXTS = ["the cat sat on the mat", "hello", "a dog barked loudly at night", "rain today", "x y"]
#: text-to-text data for banks on the tiny Llama
ECHO = (["red apple", "green pear", "blue sky", "red car", "green leaf", "blue sea"] * 2,
        ["red", "green", "blue", "red", "green", "blue"] * 2)  # fmt: skip


def _modules(lm: FrozenLM, kinds: list[str]) -> list[Applied]:
    """Modules of several kinds with large random trainable tensors, so that each one changes the answers."""
    out = []
    for i, kind in enumerate(kinds):
        m = build_prompt(kind, 4, lm.hidden_size, shapes=lm.linear_shapes(), seed=i)
        torch.manual_seed(100 + i)
        m.load_trainable_state({k: torch.randn_like(v) * 2 for k, v in m.trainable_state().items()})
        out.append(m.applied().frozen("cpu"))
    return out


def test_the_loss_is_the_cross_entropy_of_the_target_tokens_only(tiny_llama):
    """Hand-built: the loss equals the mean negative log-probability of the target tokens (and
    EOS) in one plain forward pass over prompt + input + target; the input's tokens do not count."""
    lm = tiny_llama
    prompt = torch.randn(3, lm.hidden_size)
    ids = lm.encode(["the cat sat"], TEMPLATE, 16).input_ids[0]
    target = lm.target_token_ids(["a small cat"])[0]
    assert target[-1] == lm.eos_token_id
    objective = TextToText()
    scores = lm.label_scores(prompt[None], [ids], objective.candidates([target]))
    loss = objective.loss(scores, [target])

    tokens = [t for t in ids if t != PROMPT_SLOT] + target
    emb = lm.model.get_input_embeddings()(torch.tensor(tokens))
    at = ids.index(PROMPT_SLOT)
    full = torch.cat([emb[:at], prompt, emb[at:]])[None]
    logp = torch.log_softmax(lm.model(inputs_embeds=full).logits[0].float(), -1)
    first = full.shape[1] - len(target)  # position of the first target token
    manual = -torch.stack([logp[first - 1 + j, t] for j, t in enumerate(target)]).mean()
    assert torch.allclose(loss, manual, atol=1e-5)


@pytest.mark.parametrize("backbone", ["tiny_llama", "tiny_t5"])
def test_a_mixed_batch_generates_what_each_input_generates_alone(backbone, request):
    lm = request.getfixturevalue(backbone)
    kinds = ["ulpt", "pt", "dept"] if lm.is_encoder_decoder else ["ulpt", "lora", "ia3", "dept", "vera"]
    modules = _modules(lm, kinds)
    ids = lm.encode(TEXTS, TEMPLATE, 16).input_ids
    index = [i % len(kinds) for i in range(len(TEXTS))]
    config = generation_config(lm, {"max_new_tokens": 5})
    mixed = generate(lm, modules, index, ids, config, batch_size=len(TEXTS))
    alone = [generate(lm, [modules[index[i]]], [0], [ids[i]], config)[0] for i in range(len(TEXTS))]
    assert [g.token_ids for g in mixed] == [g.token_ids for g in alone]
    assert [g.logprob for g in mixed] == pytest.approx([g.logprob for g in alone], abs=1e-4)
    assert len({tuple(g.token_ids) for g in mixed}) > 1, "setup: the modules must lead to different answers"


def test_an_answers_confidence_is_its_teacher_forced_log_probability(tiny_llama):
    """Generation and scoring agree: the mean log-probability of the greedy answer, scored as a
    target after the same module, is the confidence generate reports."""
    lm = tiny_llama
    modules = _modules(lm, ["ulpt", "lora"])
    ids = lm.encode(TEXTS[:2], TEMPLATE, 16).input_ids
    answers = generate(lm, modules, [0, 1], ids, generation_config(lm, {"max_new_tokens": 4}))
    batch = ModuleBatch.gather(modules, [0, 1])
    with torch.inference_mode():
        scored = lm.label_scores(batch, ids, [[g.token_ids] for g in answers])[:, 0]
    assert scored.tolist() == pytest.approx([g.logprob for g in answers], abs=1e-4)


def test_generation_options_are_checked(tiny_llama):
    assert generation_config(tiny_llama, {"num_beams": 2}).num_beams == 2
    with pytest.raises(InvalidDataError, match="unknown generation options"):
        generation_config(tiny_llama, {"max_tokens": 3})
    with pytest.raises(InvalidDataError, match="num_return_sequences"):
        generation_config(tiny_llama, {"num_return_sequences": 2, "num_beams": 2})


def test_training_learns_an_answer_the_untrained_module_does_not_give(tiny_llama):
    """A random tiny LM cannot learn a rule in a few steps, but it must learn to answer 'blue'
    (a LoRA module: a soft prompt barely moves this 32-wide random model's vocabulary-wide output)."""
    lm = tiny_llama
    prompt = build_prompt("lora", 4, lm.hidden_size, shapes=lm.linear_shapes(), seed=0, rank=8, targets="all")
    ids = lm.encode(TEXTS, TEMPLATE, 16).input_ids
    targets = lm.target_token_ids(["blue"] * len(TEXTS))
    config = generation_config(lm, {"max_new_tokens": 3})
    before = generate(lm, [prompt.applied().frozen("cpu")], [0] * len(ids), ids, config)
    result = train_prompt(
        lm,
        prompt,
        ids,
        targets,
        TextToText(),
        ids,
        targets,
        TrainConfig(steps=40, batch_size=5, lr=0.05, grad_clip=0, progress=False),
    )
    after = generate(lm, [prompt.applied().frozen("cpu")], [0] * len(ids), ids, config)
    assert result.val_metric == "val_logp" and result.history[-1]["loss"] < result.history[0]["loss"]
    assert {g.text for g in after} == {"blue"} and {g.text for g in before} != {"blue"}


@pytest.fixture
def mixed_bank(tiny_llama: FrozenLM) -> PromptBank:
    bank = PromptBank(tiny_llama, BankConfig(n_tokens=4, key_encoder="embedding-mean", router={"strategy": "knn"}))
    bank.add_task("animals", *ANIMALS, template="Text: {text}\nAnimal:", train_config=FAST)
    bank.add_task("colour", ECHO[0], targets=ECHO[1], template="Thing: {text}\nColour:", train_config=FAST)
    return bank


def test_a_bank_answers_a_batch_mixing_classification_and_text_to_text(mixed_bank, tmp_path):
    info = mixed_bank.task_info("colour")
    assert (
        info.task_type == "text-to-text"
        and info.label_names == []
        and "best_val_logp" in info.metadata
        and "best_val_acc" not in info.metadata
    )
    texts = [ANIMALS[0][0], ECHO[0][0], ANIMALS[0][1], ECHO[0][2]]
    tasks = ["animals", "colour", "animals", "colour"]
    both = mixed_bank.predict(texts, task=tasks, generation={"max_new_tokens": 4})
    assert [p.label is not None for p in both] == [True, False, True, False]
    assert [p.text is not None for p in both] == [False, True, False, True]
    alone = [mixed_bank.predict([x], task=t, generation={"max_new_tokens": 4})[0] for x, t in zip(texts, tasks)]
    assert [(p.label, p.text) for p in both] == [(p.label, p.text) for p in alone]

    loaded = PromptBank.load(mixed_bank.save(tmp_path / "bank"), backbone=mixed_bank.backbone)
    assert loaded.task_info("colour").task_type == "text-to-text"
    again = loaded.predict(texts, task=tasks, generation={"max_new_tokens": 4})
    assert [(p.label, p.text, p.scores) for p in again] == [(p.label, p.text, p.scores) for p in both]
    assert [p.confidence for p in again] == pytest.approx([p.confidence for p in both], nan_ok=True)

    routed = loaded.predict(texts, generation={"max_new_tokens": 4})
    assert [p.task for p in routed] == tasks
    scores = loaded.evaluate(ECHO[0][:4], targets=ECHO[1][:4], task="colour")
    assert set(scores) >= {"rouge_l", "oracle_rouge_l", "exact_match", "token_f1", "routing_accuracy"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": ["red", ""]}, r"targets\[1\] is empty"),
        ({"targets": ["red"]}, "2 texts but 1 targets"),
        ({"targets": ["red", "blue"], "labels": ["a", "b"]}, "not both"),
        ({}, "needs labels"),
        ({"targets": ["red", "blue"], "val_texts": ["x"]}, "both val_texts and val_targets"),
        ({"labels": ["a", "b"], "val_targets": ["x"]}, "val_targets belong to a text-to-text task"),
    ],
)
def test_bad_text_to_text_input_gets_one_clear_error(tiny_llama, kwargs, message):
    bank = PromptBank(tiny_llama, BankConfig(n_tokens=4, key_encoder="embedding-mean"))
    with pytest.raises(InvalidDataError, match=message):
        bank.add_task("t", ["red apple", "blue sky"], **kwargs)
    assert bank.tasks == []


def test_evaluate_asks_for_the_task_types_own_references(mixed_bank):
    with pytest.raises(InvalidDataError, match="text-to-text: evaluate it with targets"):
        mixed_bank.evaluate(ECHO[0][:2], labels=[0, 1], task="colour")
    with pytest.raises(InvalidDataError, match="classification: evaluate it with labels"):
        mixed_bank.evaluate(ANIMALS[0][:2], targets=["a", "b"], task="animals")


def test_text_scores_match_known_values():
    scores = text_scores(["The cat sat.", "a dog", None], ["the cat sat", "the dog ran", "anything"])
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["token_f1"] == pytest.approx((1 + 2 / 3) / 3)  # "dog" vs "dog ran": P 1, R 1/2
    assert scores["rouge_l"] == pytest.approx((1 + 0.4) / 3)  # ROUGE-L keeps articles: P 1/2, R 1/3
