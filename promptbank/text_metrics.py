"""How close a generated answer is to its reference: exact match and token F1 (SQuAD's, for
short answers) and ROUGE-L F-measure (Google's ``rouge-score`` package, for headlines and replies).

All three lie in [0, 1]; a task's score is their mean over its inputs.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

#: The metric a text-to-text task is ranked by (its entry in a stream's accuracy matrix).
PRIMARY = "rouge_l"
METRICS = ("exact_match", "token_f1", "rouge_l")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's answer normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def text_scores(predictions: Sequence[str | None], references: Sequence[str]) -> dict[str, float]:
    """Mean exact match, token F1 and ROUGE-L of ``predictions`` (None, an unanswered input, scores 0).

    Args:
        predictions: generated answers.
        references: the reference answers, one per prediction.

    Returns:
        ``{"exact_match": ..., "token_f1": ..., "rouge_l": ...}``.
    """
    from rouge_score import rouge_scorer  # imported here: only text-to-text evaluation needs it

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rows = []
    for p, r in zip(predictions, references, strict=True):
        p = p or ""
        rows.append((exact_match(p, r), token_f1(p, r), scorer.score(r, p)["rougeL"].fmeasure))
    means = np.mean(rows, axis=0) if rows else np.full(3, np.nan)
    return dict(zip(METRICS, map(float, means)))
