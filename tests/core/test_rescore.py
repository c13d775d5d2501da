"""Candidate re-scoring: which inputs pay extra passes, how the final task is chosen, bank wiring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from promptbank.backbone import FrozenLM
from promptbank.bank import BankConfig, PromptBank
from promptbank.errors import InvalidDataError
from promptbank.rescore import Rescorer, max_label_prob, max_logprob
from promptbank.routing import Routing
from promptbank.trainer import TrainConfig

FAST = TrainConfig(steps=3, batch_size=4, eval_every=3, progress=False)


def _routing(candidates, scores, chosen=None) -> Routing:
    c = np.asarray(candidates, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float32)
    ids = c[:, 0].copy() if chosen is None else np.asarray(chosen, dtype=np.int64)
    return Routing(
        task_ids=ids, scores=s[:, 0], candidates=c, candidate_scores=s, closeness=np.zeros(len(c), np.float32)
    )


def test_only_uncertain_inputs_get_extra_candidates():
    routing = _routing(
        [[0, 1, 2], [1, 0, 2], [2, 0, 1]], [[0.999, 0.001, 0.0], [0.6, 0.35, 0.05], [0.5, 0.0, 0.0]], chosen=[0, 1, -1]
    )
    cands = Rescorer(top=3, min_posterior=0.01).candidates(routing)
    assert cands == [[0], [1, 0, 2], []]  # sure, uncertain, unknown (never overridden)
    assert Rescorer(top=2).candidates(routing)[1] == [1, 0]
    assert Rescorer(top=1).candidates(routing) == [[0], [1], []]


def test_choose_trades_router_posterior_against_prompt_confidence():
    routing = _routing([[0, 1], [0, 1]], [[0.6, 0.4], [0.9, 0.1]])
    cands = [[0, 1], [0, 1]]
    # input 0: task 1's prompt is far more confident; input 1: the router is sure enough to keep task 0
    scores = {
        (0, 0): np.array([-6.0, -7.0]),
        (0, 1): np.array([-0.5, -3.0]),
        (1, 0): np.array([-2.0, -3.0]),
        (1, 1): np.array([-1.5, -4.0]),
    }
    chosen = Rescorer(top=2, weight=1.0).choose(routing, cands, lambda i, t: scores[(i, t)])
    assert chosen.tolist() == [1, 0]
    assert Rescorer(top=2, weight=0.0).choose(routing, cands, lambda i, t: scores[(i, t)]).tolist() == [0, 0]


def test_signals():
    s = np.log(np.array([0.2, 0.1]))
    assert max_logprob(s) == pytest.approx(np.log(0.2))
    assert max_label_prob(s) == pytest.approx(np.log(2 / 3))


@pytest.mark.parametrize("bad", [{"top": 0}, {"weight": -1.0}, {"min_posterior": 2.0}, {"signal": "vibes"}, {"tpo": 3}])
def test_bad_options_are_refused(bad):
    with pytest.raises(InvalidDataError, match="rescore"):
        BankConfig(rescore=bad)


@pytest.fixture
def ambiguous_bank(tiny_llama: FrozenLM) -> PromptBank:
    """Three tasks whose inputs share words, so several inputs have more than one plausible task."""
    bank = PromptBank(
        tiny_llama,
        BankConfig(
            n_tokens=4,
            key_encoder="embedding-mean",
            router={"strategy": "gaussian"},
            rescore={"top": 3, "weight": 5.0, "min_posterior": 0.0},
        ),
    )
    bank.add_task(
        "animals", ["the cat sat", "a dog ran", "cat in rain", "dog in sun"] * 2, ["cat", "dog"] * 4, train_config=FAST
    )
    bank.add_task(
        "weather",
        ["rain today", "sun today", "rain and cat", "sun and dog"] * 2,
        ["rain", "sun"] * 4,
        train_config=FAST,
    )
    bank.add_task(
        "food", ["cat food", "dog food", "hot soup rain", "cold salad sun"] * 2, ["hot", "cold"] * 4, train_config=FAST
    )
    return bank


TEXTS = ["the cat sat in the rain", "dog food today", "sun and soup", "a dog ran", "rain today"]


def test_bank_predict_rescoring_matches_manual_computation(ambiguous_bank: PromptBank):
    bank = ambiguous_bank
    rescorer = bank.config.rescorer()
    _, routing = bank.route(TEXTS, top=3)
    cands = rescorer.candidates(routing)
    assert max(len(c) for c in cands) >= 2  # the test needs uncertain inputs
    names = {bank.task_info(n).task_id: n for n in bank.tasks}
    scores = {
        (i, t): np.fromiter(bank.predict([TEXTS[i]], task=names[t])[0].scores.values(), float)
        for i, c in enumerate(cands)
        for t in c
    }
    expected = rescorer.choose(routing, cands, lambda i, t: scores[(i, t)])
    preds = bank.predict(TEXTS)
    assert [p.task for p in preds] == [names[int(t)] for t in expected]
    for i, p in enumerate(preds):
        assert np.fromiter(p.scores.values(), float) == pytest.approx(scores[(i, int(expected[i]))], abs=1e-4)


def test_rescoring_off_routes_on_keys_alone(ambiguous_bank: PromptBank):
    bank = ambiguous_bank
    key_only, _ = bank.route(TEXTS)
    bank.config.rescore = {"top": 1}
    assert [p.task for p in bank.predict(TEXTS)] == key_only


def test_rescore_options_survive_save_and_load(ambiguous_bank: PromptBank, tmp_path: Path):
    ambiguous_bank.save(tmp_path / "bank")
    loaded = PromptBank.load(tmp_path / "bank", backbone=ambiguous_bank.backbone)
    assert loaded.config.rescorer() == ambiguous_bank.config.rescorer()
    assert [p.task for p in loaded.predict(TEXTS)] == [p.task for p in ambiguous_bank.predict(TEXTS)]
