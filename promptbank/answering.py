"""Answers for inputs whose task is known: label scores for classification tasks, generated text
for text-to-text tasks. Inputs of different tasks (and module kinds) share each batch; the two
task types go through their own batches (one scores label words, the other decodes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .backbone import FrozenLM
from .errors import InvalidDataError
from .generation import generate
from .inputs import check_texts, label_indices
from .key_classes import fused, key_class_scores
from .module_batch import Applied
from .records import Prediction, TaskInfo, UnknownAnswer
from .text_metrics import text_scores
from .trainer import predict_scores

if TYPE_CHECKING:
    from transformers import GenerationConfig

    from .bank import PromptBank


def answer(
    bank: PromptBank,
    texts: list[str],
    assigned: list[str | None],
    route_scores: np.ndarray,
    batch_size: int,
    progress: bool,
    generation: GenerationConfig | None = None,
    keys: np.ndarray | None = None,
    key_classes: bool = True,
) -> list[Prediction]:
    """Each input answered by its assigned task (None: an empty, unknown answer).

    Args:
        bank: the bank holding the tasks.
        texts: the inputs.
        assigned: per input, its task's name or None.
        route_scores: per input, the router's score for that task (NaN when given).
        batch_size: inputs per forward pass.
        progress: show progress bars.
        generation: decoding settings for text-to-text tasks (``promptbank.generation``).
        keys: the inputs' routing keys if already computed; else encoded here for tasks whose
            answers weigh the router's class posterior (``promptbank.key_classes``).
        key_classes: False gives each module's own label scores, without the router's class
            posterior even where the task has a weight for it.

    Returns:
        One :class:`Prediction` per input.
    """
    out = [Prediction(None, None, {}, float(route_scores[i])) for i in range(len(texts))]
    infos = {n: bank.task_info(n) for n in set(assigned) - {None}}
    for generates in (False, True):
        rows = [i for i, t in enumerate(assigned) if t is not None and infos[t].generates == generates]
        if not rows:
            continue
        names = sorted({assigned[i] for i in rows})
        slot = {n: k for k, n in enumerate(names)}
        ids = _encoded(bank.backbone, texts, assigned, rows, infos, bank.config.max_input_tokens, bank.config.placement)
        modules: list[Applied] = [bank.applied(n) for n in names]
        index = [slot[assigned[i]] for i in rows]
        if generates:
            results = generate(bank.backbone, modules, index, ids, generation, batch_size, progress)
            for i, g in zip(rows, results):
                out[i] = Prediction(assigned[i], None, {}, float(route_scores[i]), text=g.text, confidence=g.logprob)
            continue
        labels = {n: bank.backbone.label_token_ids(infos[n].label_names) for n in names}
        scores = predict_scores(
            bank.backbone, modules, index, ids, [labels[assigned[i]] for i in rows], batch_size, progress
        )
        if key_classes:
            scores = with_key_classes(bank, texts, assigned, rows, list(scores), keys)
        for i, s in zip(rows, scores):
            label_names = infos[assigned[i]].label_names
            out[i] = Prediction(
                assigned[i],
                label_names[int(np.argmax(s))],
                dict(zip(label_names, map(float, s))),
                float(route_scores[i]),
            )
    return out


def with_key_classes(
    bank: PromptBank,
    texts: Sequence[str],
    assigned: Sequence[str | None],
    rows: list[int],
    scores: list[np.ndarray],
    keys: np.ndarray | None,
) -> list[np.ndarray]:
    """Modules' label scores as the bank answers with them: each task's router class posterior
    added at the task's validated weight (``promptbank.key_classes``).

    Args:
        bank: the bank.
        texts: the inputs.
        assigned: per input, its task's name (classification tasks at the ``rows``).
        rows: the inputs that ``scores`` answer, in order.
        scores: one row of module label scores per entry of ``rows``.
        keys: every input's routing key if already computed (else the ``rows`` are encoded).

    Returns:
        The scores, fused where the task has a weight; the others unchanged.
    """
    weight = {n: float(bank.task_info(n).metadata.get("key_class_weight", 0.0)) for n in {assigned[i] for i in rows}}
    fused_at = [k for k, i in enumerate(rows) if weight[assigned[i]] > 0]
    if not fused_at:
        return scores
    if keys is None:
        own = bank.key_encoder.encode([texts[rows[k]] for k in fused_at])
    else:
        own = keys[[rows[k] for k in fused_at]]
    for name in sorted({assigned[rows[k]] for k in fused_at}):
        members = [j for j, k in enumerate(fused_at) if assigned[rows[k]] == name]
        extra = key_class_scores(bank, name, own[members])
        if extra is None:
            continue
        for j, row in zip(members, extra):
            k = fused_at[j]
            scores[k] = fused(np.asarray(scores[k], dtype=np.float64), row, weight[name])
    return scores


def _encoded(
    backbone: FrozenLM,
    texts: list[str],
    assigned: list[str | None],
    rows: list[int],
    infos: dict[str, TaskInfo],
    max_input_tokens: int,
    placement: str,
) -> list[list[int]]:
    """The token lists of ``rows``, each input in its own task's template."""
    ids: dict[int, list[int]] = {}
    for name in sorted({assigned[i] for i in rows}):
        members = [i for i in rows if assigned[i] == name]
        encoded = backbone.encode([texts[i] for i in members], infos[name].template, max_input_tokens, placement)
        ids.update(zip(members, encoded.input_ids))
    return [ids[i] for i in rows]


def candidate_scores(prediction: Prediction) -> np.ndarray:
    """What re-scoring compares across candidate tasks: label scores, or a generated answer's confidence."""
    if prediction.text is not None:
        return np.array([prediction.confidence])
    return np.fromiter(prediction.scores.values(), float)


def evaluate_task(
    bank: PromptBank,
    texts: Sequence[str],
    labels: Sequence[Any] | None,
    task: str | None,
    batch_size: int,
    targets: Sequence[str] | None,
    generation: GenerationConfig | dict[str, Any] | None = None,
) -> dict[str, float]:
    """``PromptBank.evaluate``: routed and task-given scores on inputs of one task."""
    texts = check_texts(texts)
    if task is None:
        raise InvalidDataError("evaluate needs the true task name to score answers; routing is measured against it")
    info = bank.task_info(task)
    given = targets if info.generates else labels
    if given is None or (targets is not None and labels is not None):
        kind = "targets=[...]" if info.generates else "labels=[...]"
        raise InvalidDataError(f"task {task!r} is {info.task_type}: evaluate it with {kind} only")
    oracle = bank.predict(texts, task=task, batch_size=batch_size, generation=generation)
    routed = bank.predict(texts, batch_size=batch_size, generation=generation)
    on_task = [p.task == task for p in routed]
    result = {"routing_accuracy": float(np.mean(on_task)), "n": len(texts)}
    if info.generates:
        refs = check_texts(targets, "targets")
        if len(refs) != len(texts):
            raise InvalidDataError(f"targets: {len(texts)} texts but {len(refs)} targets")
        routed_scores = text_scores([p.text if ok else None for p, ok in zip(routed, on_task)], refs)
        oracle_scores = text_scores([p.text for p in oracle], refs)
        return {**result, **routed_scores, **{f"oracle_{k}": v for k, v in oracle_scores.items()}}
    y = label_indices(labels, info.label_names, len(texts), "labels")
    correct = lambda preds: [p.task == task and p.label == info.label_names[t] for p, t in zip(preds, y)]
    return {
        **result,
        "accuracy": float(np.mean(correct(routed))),
        "oracle_accuracy": float(np.mean(correct(oracle))),
    }


def answer_routed(
    bank: PromptBank,
    texts: list[str],
    batch_size: int,
    progress: bool,
    decoding: GenerationConfig,
    key_classes: bool = True,
    unknown_answer: UnknownAnswer | None = None,
) -> list[Prediction]:
    """``bank.predict`` without a task: each input goes to the task its key routes it to, or to
    the best of the router's candidates re-scored by their modules (``BankConfig.rescore``); the
    keys are computed once and reused by ``key_classes`` answers. Inputs the router finds no
    task for (``unknown_threshold``) get the bare LLM's answer (``answer_unknown``).

    Args:
        bank: the bank.
        texts: the inputs (checked).
        batch_size: inputs per forward pass.
        progress: show a progress bar.
        decoding: how text-to-text answers are decoded.
        key_classes: False answers with the modules' own label scores (``answer``).
        unknown_answer: how inputs of no known task are answered (``answer_unknown``).

    Returns:
        One :class:`Prediction` per input, ``task`` None where the router finds none.
    """
    rescorer = bank.config.rescorer()
    keys, routing = bank._keys_and_routing(texts, max(rescorer.top, 1))
    candidates = rescorer.candidates(routing)
    pairs = [(i, t) for i, cands in enumerate(candidates) for t in cands]
    by_id = bank._names_by_id()
    answers = answer(
        bank,
        [texts[i] for i, _ in pairs],
        [by_id[t] for _, t in pairs],
        np.full(len(pairs), np.nan),
        batch_size,
        progress,
        decoding,
        keys=keys[[i for i, _ in pairs]] if pairs else None,
        key_classes=key_classes,
    )
    by_pair = dict(zip(pairs, answers))
    chosen = rescorer.choose(routing, candidates, lambda i, t: candidate_scores(by_pair[(i, t)]))
    unknown = [i for i, t in enumerate(chosen) if t < 0]
    bare = iter(answer_unknown(bank, [texts[i] for i in unknown], batch_size, progress, decoding, unknown_answer))
    out = []
    for i, t in enumerate(chosen):
        if t < 0:
            out.append(dataclasses.replace(next(bare), route_score=float(routing.scores[i])))
            continue
        p = by_pair[(i, int(t))]
        posterior = routing.candidate_scores[i][routing.candidates[i] == t]
        out.append(dataclasses.replace(p, route_score=float(posterior[0]) if len(posterior) else float("nan")))
    return out


def answer_unknown(
    bank: PromptBank,
    texts: list[str],
    batch_size: int,
    progress: bool,
    decoding: GenerationConfig,
    how: UnknownAnswer | None = None,
) -> list[Prediction]:
    """What inputs of no known task get: the bare LLM's answer, ``task`` None.

    No module of the bank was trained for them, so none is applied: with ``how.labels`` the
    LLM scores those label words (a zero-shot classification), else it generates a
    continuation of ``how.template`` (decoded as ``decoding`` says).

    Args:
        bank: the bank (its LLM and input length limit).
        texts: the unknown inputs.
        batch_size: inputs per forward pass.
        progress: show a progress bar.
        decoding: how a generated answer is decoded.
        how: the template and, optionally, label words (default: generate after the bare text).

    Returns:
        One :class:`Prediction` per input, ``task`` None.
    """
    if not texts:
        return []
    how = how or UnknownAnswer()
    backbone = bank.backbone
    bare = [Applied(torch.zeros(0, backbone.hidden_size, device=backbone.device))]
    ids = backbone.encode(texts, how.template, bank.config.max_input_tokens, bank.config.placement).input_ids
    index = [0] * len(texts)
    if not how.labels:
        return [
            Prediction(None, None, {}, float("nan"), text=g.text, confidence=g.logprob)
            for g in generate(backbone, bare, index, ids, decoding, batch_size, progress)
        ]
    label_ids = backbone.label_token_ids(how.labels)
    scores = predict_scores(backbone, bare, index, ids, [label_ids] * len(texts), batch_size, progress)
    return [
        Prediction(None, how.labels[int(np.argmax(s))], dict(zip(how.labels, map(float, s))), float("nan"))
        for s in scores
    ]
