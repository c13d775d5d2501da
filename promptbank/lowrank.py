"""Low-rank kinds on the frozen Linears: LoRA (with the optional MPC regulariser) and VeRA.

LoRA adds ``scaling * B A`` to each targeted weight (A (r, in) seeded Kaiming-uniform, B (out, r)
zero, so the untrained module is the identity; scaling = alpha / r). MPC (``mpc``) pulls the
factors towards orthogonality during training only: ``orthogonal`` adds
λ(‖A Aᵀ − I‖² + ‖Bᵀ B − I‖²), ``diagonal`` λ(‖A Aᵀ − I‖² + ‖Bᵀ B − diag(Bᵀ B)‖²); answering
costs nothing more. VeRA keeps A and B frozen, random and shared by every layer and task of one
seed, and trains two vectors per layer: ΔW = diag(b) B diag(d) A (d starts at ``d_init``, b at 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import InvalidDataError
from .module_batch import Applied
from .prompts import PROMPTS, frozen_xavier, seeded_uniform
from .weight_config import WeightConfig, WeightModule
from .weight_hooks import TARGETS, SharedLowRank, SiteDelta

MPC_OPTIONS = ("none", "orthogonal", "diagonal")


def _qv() -> list[str]:
    return ["q_proj", "v_proj"]


@dataclass
class LoRAConfig(WeightConfig):
    """LoRA's options: ``rank`` r, ``alpha`` (scaling alpha / r), and the MPC regulariser and its weight."""

    targets: list[str] = field(default_factory=_qv)
    rank: int = 8
    alpha: float = 16.0
    mpc: str = "none"
    mpc_weight: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive(rank=int(self.rank), alpha=float(self.alpha))
        if self.mpc not in MPC_OPTIONS:
            raise InvalidDataError(f"mpc must be one of {MPC_OPTIONS}, got {self.mpc!r}")
        if not float(self.mpc_weight) >= 0:
            raise InvalidDataError(f"mpc_weight must be >= 0, got {self.mpc_weight!r}")
        self.rank, self.alpha, self.mpc_weight = int(self.rank), float(self.alpha), float(self.mpc_weight)


@PROMPTS.register("lora")
class LoRA(WeightModule):
    """W' = W + (alpha / r) B A on each targeted Linear of every layer."""

    method = "lora"
    config_class = LoRAConfig
    low_rank = True

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        seed: int = 0,
        targets: str | Sequence[str] = ("q_proj", "v_proj"),
        shapes: dict[str, Sequence[int]] | None = None,
        rank: int = 8,
        alpha: float = 16.0,
        mpc: str = "none",
        mpc_weight: float = 1e-3,
    ) -> None:
        super().__init__(LoRAConfig(n_tokens, dim, seed, targets, dict(shapes or {}), rank, alpha, mpc, mpc_weight))
        c = self.config
        self.scaling = c.alpha / c.rank
        self.lora_a, self.lora_b = nn.ParameterDict(), nn.ParameterDict()
        for t in c.targets:
            layers, n_in, n_out = c.shapes[t]
            # Kaiming-uniform (a = sqrt(5)), as nn.Linear and PEFT initialise A: bound 1 / sqrt(in)
            self.lora_a[t] = nn.Parameter(
                seeded_uniform((layers, c.rank, n_in), 1 / math.sqrt(n_in), c.seed * len(TARGETS) + TARGETS.index(t))
            )
            self.lora_b[t] = nn.Parameter(torch.zeros(layers, n_out, c.rank))

    def applied(self) -> Applied:
        sites = {t: SiteDelta(down=self.lora_a[t], up=self.lora_b[t] * self.scaling) for t in self.config.targets}
        return Applied(self(), None, sites)

    def regularization(self) -> torch.Tensor | None:
        if self.config.mpc == "none" or self.config.mpc_weight == 0:
            return None
        eye = torch.eye(self.config.rank, device=next(self.parameters()).device)
        total = 0.0
        for t in self.config.targets:
            a, b = self.lora_a[t], self.lora_b[t]
            btb = b.mT @ b
            target_b = (
                eye if self.config.mpc == "orthogonal" else torch.diag_embed(torch.diagonal(btb, dim1=-2, dim2=-1))
            )
            total = total + ((a @ a.mT - eye) ** 2).sum() + ((btb - target_b) ** 2).sum()
        return self.config.mpc_weight * total


@dataclass
class VeRAConfig(WeightConfig):
    """VeRA's options: ``rank`` of the shared matrices, their seed, and the initial d."""

    targets: list[str] = field(default_factory=_qv)
    rank: int = 64
    proj_seed: int = 1234
    d_init: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive(rank=int(self.rank))
        self.rank, self.proj_seed, self.d_init = int(self.rank), int(self.proj_seed), float(self.d_init)


@PROMPTS.register("vera")
class VeRA(WeightModule):
    """ΔW = diag(b) B diag(d) A with A (r, in) and B (out, r) frozen and shared across layers."""

    method = "vera"
    config_class = VeRAConfig

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        seed: int = 0,
        targets: str | Sequence[str] = ("q_proj", "v_proj"),
        shapes: dict[str, Sequence[int]] | None = None,
        rank: int = 64,
        proj_seed: int = 1234,
        d_init: float = 0.1,
    ) -> None:
        super().__init__(VeRAConfig(n_tokens, dim, seed, targets, dict(shapes or {}), rank, proj_seed, d_init))
        c = self.config
        self.mid, self.outer = nn.ParameterDict(), nn.ParameterDict()
        self._shared: dict[str, tuple[str, str]] = {}
        for t in c.targets:
            layers, n_in, n_out = c.shapes[t]
            k = 2 * TARGETS.index(t)
            # seeded by target, not by task: every VeRA task of this seed shares them (never stored)
            self.register_buffer(f"a_{t}", frozen_xavier(c.rank, n_in, c.proj_seed + k), persistent=False)
            self.register_buffer(f"b_{t}", frozen_xavier(n_out, c.rank, c.proj_seed + k + 1), persistent=False)
            self.mid[t] = nn.Parameter(torch.full((layers, c.rank), c.d_init))
            self.outer[t] = nn.Parameter(torch.zeros(layers, n_out))

    def applied(self) -> Applied:
        c = self.config
        sites = {}
        for t in c.targets:
            a, b = getattr(self, f"a_{t}"), getattr(self, f"b_{t}")
            key = f"vera:{c.proj_seed}:{c.rank}:{t}:{a.shape[1]}x{b.shape[0]}"
            sites[t] = SiteDelta(shared=SharedLowRank(key, a, b, self.mid[t], self.outer[t]))
        return Applied(self(), None, sites)
