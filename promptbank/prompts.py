"""Soft-prompt parameterisations: each is an ``nn.Module`` whose ``forward()`` is an (n, d) prompt.

Only trainable tensors are ever stored; frozen random matrices are regenerated from their seed
on the CPU with a fixed generator, so the same seed yields the same bits on every machine.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from .errors import InvalidDataError


def frozen_xavier(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Xavier-uniform (rows, cols) matrix from a CPU generator: bit-identical across machines."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    bound = math.sqrt(6.0 / (rows + cols))
    return (torch.rand(rows, cols, generator=gen, dtype=torch.float32) * 2.0 - 1.0) * bound


def seeded_normal(shape: tuple[int, ...], std: float, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(*shape, generator=gen, dtype=torch.float32) * std


class SoftPrompt(nn.Module):
    """Base class: a prompt of ``n_tokens`` vectors of size ``dim``."""

    method: ClassVar[str]

    def __init__(self, n_tokens: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        if n_tokens < 1 or dim < 1:
            raise InvalidDataError(f"prompt needs n_tokens >= 1 and dim >= 1, got {n_tokens}, {dim}")
        self.n_tokens, self.dim, self.seed = int(n_tokens), int(dim), int(seed)

    def config(self) -> dict[str, Any]:
        """Everything (besides trainable tensors) needed to rebuild this prompt."""
        return {"method": self.method, "n_tokens": self.n_tokens, "dim": self.dim, "seed": self.seed}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The tensors a bank stores: trainable parameters only, detached, on CPU."""
        return {k: p.detach().cpu().contiguous() for k, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_parameters())
        missing = set(own) - set(state)
        unexpected = set(state) - set(own)
        if missing or unexpected:
            raise InvalidDataError(
                f"{self.method} prompt state mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        with torch.no_grad():
            for k, v in state.items():
                if tuple(v.shape) != tuple(own[k].shape):
                    raise InvalidDataError(f"{self.method} tensor '{k}' has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
                own[k].copy_(v.to(own[k].dtype))

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups; methods whose tensors live on different scales override this."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]


class PromptTuning(SoftPrompt):
    """Vanilla prompt tuning (Lester et al.): P in R^{n x d} trainable."""

    method = "pt"

    def __init__(self, n_tokens: int, dim: int, seed: int = 0, init: torch.Tensor | None = None, init_std: float = 0.02) -> None:
        super().__init__(n_tokens, dim, seed)
        weight = init.clone().float() if init is not None else seeded_normal((n_tokens, dim), init_std, seed)
        self.weight = nn.Parameter(weight)

    def forward(self) -> torch.Tensor:
        return self.weight


class ULPT(SoftPrompt):
    """Ultra-low-dimensional prompt: P = (Z A) * s + b.

    Z (n x r) and the per-dimension scale s and shift b (d each) are trained; A (r x d) is a
    frozen Xavier-uniform projection regenerated from ``proj_seed`` and never stored.
    """

    method = "ulpt"

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        seed: int = 0,
        rank: int = 2,
        proj_seed: int = 1234,
        z_std: float = 1.0,
        shift_init: torch.Tensor | None = None,
        scale_init: float = 1.0,
        lr_scale: float = 0.1,
    ) -> None:
        super().__init__(n_tokens, dim, seed)
        self.rank, self.proj_seed = int(rank), int(proj_seed)
        self.z_std, self.scale_init, self.lr_scale = float(z_std), float(scale_init), float(lr_scale)
        self.register_buffer("proj", frozen_xavier(self.rank, dim, self.proj_seed), persistent=False)
        self.z = nn.Parameter(seeded_normal((n_tokens, self.rank), self.z_std, seed))
        self.scale = nn.Parameter(torch.full((dim,), self.scale_init))
        shift = shift_init.clone().float().reshape(dim) if shift_init is not None else torch.zeros(dim)
        self.shift = nn.Parameter(shift)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "rank": self.rank,
            "proj_seed": self.proj_seed,
            "z_std": self.z_std,
            "scale_init": self.scale_init,
            "lr_scale": self.lr_scale,
        }

    def forward(self) -> torch.Tensor:
        return (self.z @ self.proj) * self.scale + self.shift

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        # Z moves a point in r dimensions; scale/shift act on every embedding dimension, so they
        # get a smaller step (lr_scale) to stay near the embedding manifold.
        return [
            {"params": [self.z], "lr": lr},
            {"params": [self.scale, self.shift], "lr": lr * self.lr_scale},
        ]


class LoPT1(SoftPrompt):
    """LoPT-1: P = U V with U (n x r) and V (r x d) both trainable."""

    method = "lopt1"

    def __init__(self, n_tokens: int, dim: int, seed: int = 0, rank: int = 2, init_std: float = 0.02) -> None:
        super().__init__(n_tokens, dim, seed)
        self.rank = int(rank)
        self.u = nn.Parameter(seeded_normal((n_tokens, self.rank), 1.0 / math.sqrt(self.rank), seed))
        self.v = nn.Parameter(seeded_normal((self.rank, dim), init_std, seed + 1))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rank": self.rank}

    def forward(self) -> torch.Tensor:
        return self.u @ self.v


class LoPT2(SoftPrompt):
    """LoPT-2: P = ELU(X0 U) V, X0 (n x d) frozen random, U (d x r) and V (r x d) trainable."""

    method = "lopt2"

    def __init__(self, n_tokens: int, dim: int, seed: int = 0, rank: int = 2, init_std: float = 0.02, x0_seed: int = 4321) -> None:
        super().__init__(n_tokens, dim, seed)
        self.rank, self.x0_seed = int(rank), int(x0_seed)
        self.register_buffer("x0", seeded_normal((n_tokens, dim), 1.0, self.x0_seed), persistent=False)
        self.u = nn.Parameter(frozen_xavier(dim, self.rank, seed))
        self.v = nn.Parameter(seeded_normal((self.rank, dim), init_std, seed + 1))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rank": self.rank, "x0_seed": self.x0_seed}

    def forward(self) -> torch.Tensor:
        return nn.functional.elu(self.x0 @ self.u) @ self.v


METHODS: dict[str, type[SoftPrompt]] = {cls.method: cls for cls in (ULPT, PromptTuning, LoPT1, LoPT2)}


def build_prompt(method: str, n_tokens: int, dim: int, **options: Any) -> SoftPrompt:
    """Create a prompt of ``method`` ('ulpt', 'pt', 'lopt1', 'lopt2')."""
    if method not in METHODS:
        raise InvalidDataError(f"unknown prompt method '{method}'; choose one of {sorted(METHODS)}")
    return METHODS[method](n_tokens, dim, **options)


def prompt_from_config(config: dict[str, Any], state: dict[str, torch.Tensor] | None = None) -> SoftPrompt:
    """Rebuild a prompt from ``config()`` output and (optionally) its trainable tensors."""
    options = {k: v for k, v in config.items() if k not in ("method", "n_tokens", "dim")}
    prompt = build_prompt(config["method"], config["n_tokens"], config["dim"], **options)
    if state is not None:
        prompt.load_trainable_state(state)
    return prompt
