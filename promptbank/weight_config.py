"""The config every weight-space kind shares: which Linear layers it changes, and their shapes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import InvalidDataError
from .prompts import PromptConfig, TaskModule
from .weight_hooks import TARGETS


def parse_targets(targets: str | Sequence[str]) -> list[str]:
    """``"all"``, ``"q_proj,v_proj"`` or a list of names in ``TARGETS``, as a list.

    Raises:
        InvalidDataError: an unknown or repeated name, or none.
    """
    names = list(TARGETS) if targets == "all" else (targets.split(",") if isinstance(targets, str) else list(targets))
    names = [str(n).strip() for n in names]
    unknown = [n for n in names if n not in TARGETS]
    if unknown or not names or len(set(names)) != len(names):
        raise InvalidDataError(f"targets must be 'all' or distinct names among {', '.join(TARGETS)}; got {targets!r}")
    return names


@dataclass
class WeightConfig(PromptConfig):
    """A kind that changes Linear layers and has no soft prompt (``n_tokens`` is 0).

    Args:
        targets: the Linears it changes in every layer ("all" or names like ``k_proj``).
        shapes: each target's ``[layers, in, out]``, from ``FrozenLM.linear_shapes()``.
    """

    targets: list[str] = field(default_factory=lambda: ["k_proj", "v_proj", "up_proj"])
    shapes: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.n_tokens) != 0 or int(self.dim) < 1:
            raise InvalidDataError(f"a weight-space module has no soft prompt (n_tokens 0) and dim >= 1, "
                                   f"got {self.n_tokens}, {self.dim}")  # fmt: skip
        self.n_tokens, self.dim, self.seed = 0, int(self.dim), int(self.seed)
        self.targets = parse_targets(self.targets)
        missing = [t for t in self.targets if t not in (self.shapes or {})]
        if missing:
            raise InvalidDataError(
                f"the LLM has no {', '.join(missing)} Linear layers (shapes: {sorted(self.shapes or {})}); "
                "weight-space modules need a Llama-style model"
            )
        shapes: dict[str, list[int]] = {}
        for t in self.targets:
            dims = [int(x) for x in self.shapes[t]]
            if len(dims) != 3 or min(dims) < 1:
                raise InvalidDataError(f"shape of {t} must be [layers, in, out] > 0, got {self.shapes[t]!r}")
            shapes[t] = dims
        self.shapes = shapes

    def positive(self, **values: Any) -> None:
        """Refuse values that must be > 0, naming them."""
        for name, v in values.items():
            if not v > 0:
                raise InvalidDataError(f"{name} must be > 0, got {v!r}")


class WeightModule(TaskModule):
    """Base of the kinds that change Linear layers and have no soft prompt."""

    config_class = WeightConfig
    has_prompt = False
    needs_shapes = True

    def forward(self) -> torch.Tensor:
        return next(self.parameters()).new_zeros(0, self.dim)
