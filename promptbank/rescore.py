"""Candidate re-scoring: let the prompts themselves settle routing ties.

Keys alone misroute a few percent of inputs between near-neighbour tasks (two news
corpora, two sentiment corpora), yet the true task is almost always among the router's
top three. For inputs the router is unsure about, the bank answers with each plausible
candidate's prompt and keeps the candidate whose combined evidence is highest:

    log posterior(task | key) + weight * confidence(task's prompt on the input)

``confidence`` (``signal``) is by default the largest label log-probability under the full vocabulary: a prompt
trained on a task drives the LLM to put its mass on that task's label words for inputs
like its own. Only inputs whose runner-up candidate reaches ``min_posterior`` pay extra
forward passes, so confident routing stays as cheap as plain routing.

Measured on offline-5 (docs/routing.md, "Why these defaults") it does not pay: the LDA
router's wrong picks are mostly confident (median posterior 0.999), and even where both
prompts were run, the true task's prompt was the more confident one on only 35-56% of
misrouted inputs while a runner-up beat the true prompt on 22-43% of correctly routed
ones. So it is off by default (``top=1``) and kept as an option with its measurement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import InvalidDataError
from .routing import Routing


@dataclass(frozen=True)
class Rescorer:
    """How many router candidates to re-score, and how much the prompts' answers count.

    Off by default (``top=1``): measured on offline-5 (docs/routing.md), a prompt's confidence
    does not tell its own task's inputs from a neighbour's well enough to fix routing.
    """

    top: int = 1
    weight: float = 1.0
    min_posterior: float = 0.01
    signal: str = "max_logprob"

    def __post_init__(self) -> None:
        if self.top < 1:
            raise InvalidDataError(f"rescore top must be >= 1, got {self.top}")
        if self.weight < 0 or not np.isfinite(self.weight):
            raise InvalidDataError(f"rescore weight must be a finite number >= 0, got {self.weight}")
        if not 0 <= self.min_posterior <= 1:
            raise InvalidDataError(f"rescore min_posterior must be in [0, 1], got {self.min_posterior}")
        if self.signal not in SIGNALS:
            raise InvalidDataError(f"rescore signal must be one of {sorted(SIGNALS)}, got {self.signal!r}")

    @property
    def enabled(self) -> bool:
        return self.top > 1 and self.weight > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def candidates(self, routing: Routing) -> list[list[int]]:
        """Per input, the task ids worth answering with (just the router's pick when it is sure).

        Inputs the router calls unknown keep no candidates: re-scoring never overrides the
        unknown-task decision.
        """
        out: list[list[int]] = []
        for i, chosen in enumerate(routing.task_ids):
            if chosen < 0:
                out.append([])
                continue
            if not self.enabled:
                out.append([int(chosen)])
                continue
            keep = [
                int(t)
                for t, p in zip(routing.candidates[i, : self.top], routing.candidate_scores[i, : self.top])
                if t >= 0 and (t == chosen or p >= self.min_posterior)
            ]
            out.append(keep)
        return out

    def choose(
        self, routing: Routing, candidates: list[list[int]], label_scores: Callable[[int, int], np.ndarray]
    ) -> np.ndarray:
        """Final task id per input; ``label_scores(i, task_id)`` gives input i's scores under that prompt."""
        chosen = np.asarray(routing.task_ids, dtype=np.int64).copy()
        for i, cands in enumerate(candidates):
            if len(cands) < 2:
                continue
            posterior = dict(zip(routing.candidates[i].tolist(), routing.candidate_scores[i].tolist()))
            evidence = [
                np.log(max(posterior.get(t, 0.0), 1e-12)) + self.weight * SIGNALS[self.signal](label_scores(i, t))
                for t in cands
            ]
            chosen[i] = cands[int(np.argmax(evidence))]
        return chosen


def max_logprob(scores: np.ndarray) -> float:
    """Largest label log-probability (full vocabulary): how strongly the prompt claims the input."""
    return float(np.max(scores))


def max_label_prob(scores: np.ndarray) -> float:
    """Probability of the best label among the task's own labels (ignores mass off the labels)."""
    s = np.asarray(scores, dtype=np.float64)
    p = np.exp(s - s.max())
    return float(np.log(1.0 / p.sum()))


SIGNALS: dict[str, Callable[[np.ndarray], float]] = {"max_logprob": max_logprob, "max_label_prob": max_label_prob}
