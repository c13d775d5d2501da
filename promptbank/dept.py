"""DePT: a shorter soft prompt plus low-rank offsets on the input's token embeddings.

The input becomes [P ; E(x) + scaling · (A B)[:len(x)]]: P (n, d) is a prompt as in prompt
tuning; A (s, r) and B (r, d) give an offset for each of the first s input positions (template
and text, not the prompt); scaling = alpha / sqrt(r). A starts Kaiming-uniform and B at zero, so
the untrained offsets are zero. The prompt and the offsets learn at different rates
(``offset_lr_scale``), as in the DePT code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import InvalidDataError
from .module_batch import Applied
from .prompts import PROMPTS, PromptConfig, TaskModule, seeded_normal, seeded_uniform


@dataclass
class DePTConfig(PromptConfig):
    """DePT's options: offsets of ``rank`` r over ``positions`` s input tokens, ``alpha`` (scaling
    alpha / sqrt(r)), the offsets' learning rate relative to the prompt's, and the prompt's init scale."""

    rank: int = 4
    positions: int = 128
    alpha: float = 1.0
    offset_lr_scale: float = 0.01
    init_std: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("rank", "positions", "alpha", "offset_lr_scale", "init_std"):
            if not getattr(self, name) > 0:
                raise InvalidDataError(f"DePT's {name} must be > 0, got {getattr(self, name)!r}")
        self.rank, self.positions = int(self.rank), int(self.positions)
        self.alpha, self.offset_lr_scale, self.init_std = (
            float(self.alpha),
            float(self.offset_lr_scale),
            float(self.init_std),
        )


@PROMPTS.register("dept")
class DePT(TaskModule):
    """A prompt P plus position offsets scaling · A B on the input's token embeddings."""

    method = "dept"
    config_class = DePTConfig

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        seed: int = 0,
        rank: int = 4,
        positions: int = 128,
        alpha: float = 1.0,
        offset_lr_scale: float = 0.01,
        init_std: float = 0.02,
    ) -> None:
        super().__init__(DePTConfig(n_tokens, dim, seed, rank, positions, alpha, offset_lr_scale, init_std))
        c = self.config
        self.scaling = c.alpha / math.sqrt(c.rank)
        self.weight = nn.Parameter(seeded_normal((n_tokens, dim), c.init_std, seed))
        self.offset_a = nn.Parameter(seeded_uniform((c.positions, c.rank), 1 / math.sqrt(c.rank), seed + 1))
        self.offset_b = nn.Parameter(torch.zeros(c.rank, dim))

    def forward(self) -> torch.Tensor:
        return self.weight

    def applied(self) -> Applied:
        return Applied(self.weight, self.scaling * (self.offset_a @ self.offset_b))

    def start_near(self, center: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.add_(center.to(self.weight).reshape(1, -1))

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [
            {"params": [self.weight], "lr": lr},
            {"params": [self.offset_a, self.offset_b], "lr": lr * self.config.offset_lr_scale},
        ]
