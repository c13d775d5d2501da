"""The bank's plain data: its configuration, what it knows of each task, and one answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .backbone import PLACEMENTS, TEXT_FIELD
from .errors import InvalidDataError
from .keys import DEFAULT_KEY_ENCODER
from .manifest import TASK_TYPES  # noqa: F401  (what a task answers with)
from .rescore import Rescorer
from .routing import DEFAULT_ROUTER

DEFAULT_TEMPLATE = "Input: {text}\nLabel:"
PROMPT_INITS = ("random", "labels")
STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


#: The value a bank saved before a ``BankConfig`` field existed gets for it, where that differs
#: from a new bank's default: such a bank keeps answering as it did.
FIELDS_OF_OLDER_BANKS = {"key_classes": False, "placement": "prefix"}


@dataclass
class BankConfig:
    """Bank-wide choices, fixed at creation.

    Args:
        method: the default module kind, a name in ``promptbank.prompts.PROMPTS`` (a task may
            pick another: ``add_task(..., method=...)``).
        n_tokens: soft tokens per prompt.
        prompt_options: the method's config fields, e.g. ``{"rank": 2}`` (its defaults otherwise).
        key_encoder: what turns a text into a routing key (``promptbank.keys.KEY_ENCODERS``,
            several joined with "+").
        router: ``{"strategy": name, **options}`` of a router in ``promptbank.routing.ROUTERS``.
        rescore: candidate re-scoring (``promptbank.rescore.Rescorer`` fields); top 1 routes on keys alone.
        storage_dtype: dtype prompts are stored in.
        max_input_tokens: inputs are truncated to this many tokens (the template never is).
        placement: where each prompt goes: ``suffix`` (after the input text, before the template's
            remainder; training computes the input's keys and values once, ``promptbank.input_cache``,
            so a step runs the LLM over the prompt, the template's remainder and the label only) or
            ``prefix`` (before the input, as in prompt tuning and PEFT: what ``export_peft`` needs).
        prompt_init: ``random`` (the method's seeded initialisation) or ``labels`` (its tokens
            start around the mean embedding of the task's label words; ULPT and PT).
        seed: seed of each new prompt's initialisation.
        key_classes: a classification task's answers also weigh the router's own class posterior
            (LDA over the task's labelled keys, ``GaussianRouter.class_log_posterior``): label score
            + w x class log-posterior, w chosen per task on its validation inputs (0, the prompt
            alone, where nothing helps; also without validation inputs or an ``lda``/``gaussian``
            router).

    Example:
        >>> BankConfig(method="lopt1", n_tokens=10, prompt_options={"rank": 4}, router={"strategy": "lda", "nprobe": 4})
    """

    method: str = "ulpt"
    n_tokens: int = 20
    prompt_options: dict[str, Any] = field(default_factory=dict)
    key_encoder: str = DEFAULT_KEY_ENCODER
    router: dict[str, Any] = field(default_factory=lambda: {"strategy": DEFAULT_ROUTER})
    rescore: dict[str, Any] = field(default_factory=lambda: Rescorer().to_dict())
    storage_dtype: str = "float16"
    max_input_tokens: int = 64
    placement: str = "suffix"
    prompt_init: str = "random"
    seed: int = 0
    key_classes: bool = True

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise InvalidDataError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.prompt_init not in PROMPT_INITS:
            raise InvalidDataError(f"prompt_init must be one of {PROMPT_INITS}, got {self.prompt_init!r}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise InvalidDataError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {self.storage_dtype!r}")
        self.rescorer()  # validate early

    def rescorer(self) -> Rescorer:
        try:
            return Rescorer(**self.rescore)
        except TypeError as exc:
            raise InvalidDataError(
                f"bad rescore options {self.rescore!r}: {exc}; use fields of promptbank.rescore.Rescorer"
            ) from None


@dataclass
class TaskInfo:
    """What the bank knows about one task; ``module`` is its module's ``config_state()`` (kind and
    options). A text-to-text task has no label names."""

    name: str
    task_id: int
    label_names: list[str]
    template: str
    metadata: dict[str, Any] = field(default_factory=dict)
    module: dict[str, Any] = field(default_factory=dict)
    task_type: str = "classification"

    @property
    def generates(self) -> bool:
        return self.task_type == "text-to-text"


@dataclass
class UnknownAnswer:
    """How the bank answers an input the router finds no task for (``Prediction.task`` None):
    with the bare LLM, no module applied.

    Args:
        template: how the input is shown to the LLM; ``{text}`` marks it.
        labels: label words for a zero-shot classification; None (default) generates a continuation.
    """

    template: str = TEXT_FIELD
    labels: list[str] | None = None

    def __post_init__(self) -> None:
        if TEXT_FIELD not in self.template:
            raise InvalidDataError(f"unknown_answer template {self.template!r} must contain '{TEXT_FIELD}'")
        if self.labels is not None:
            self.labels = [str(w) for w in self.labels]
            if not self.labels or len(set(self.labels)) != len(self.labels) or not all(w.strip() for w in self.labels):
                raise InvalidDataError(f"unknown_answer labels must be distinct non-empty words, got {self.labels!r}")


@dataclass
class Prediction:
    """One input's answer: the routed task (None = unknown) and either a label with every label's
    score (classification) or generated ``text`` with its ``confidence``, the mean log-probability
    of its tokens (text-to-text)."""

    task: str | None
    label: str | None
    scores: dict[str, float]
    route_score: float = float("nan")
    text: str | None = None
    confidence: float = float("nan")

    @property
    def label_index(self) -> int:
        return -1 if self.label is None else list(self.scores).index(self.label)

    @property
    def answer(self) -> str | None:
        """The label, or the generated text."""
        return self.text if self.text is not None else self.label
