"""Per-task modules: the base class every kind shares, and the soft-prompt kinds (PT, ULPT, LoPT).

A module's ``forward()`` is its (n, d) soft prompt (n = 0 for a kind without one) and
``applied()`` is everything it does to an input (``promptbank.module_batch.Applied``). The other
kinds live in ``dept``, ``scaling`` and ``lowrank``; all register in :data:`PROMPTS`.

Only trainable tensors are ever stored; frozen random matrices are regenerated from their seed
on the CPU with a fixed generator, so the same seed yields the same bits on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from .errors import BankFormatError, InvalidDataError
from .module_batch import Applied
from .registry import Registry

#: Every module kind (prompt method), by the name banks and configs use for it.
PROMPTS: Registry[type[TaskModule]] = Registry("module kind")


def frozen_xavier(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Xavier-uniform (rows, cols) matrix from a CPU generator: bit-identical across machines."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    bound = math.sqrt(6.0 / (rows + cols))
    return (torch.rand(rows, cols, generator=gen, dtype=torch.float32) * 2.0 - 1.0) * bound


def seeded_normal(shape: tuple[int, ...], std: float, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(*shape, generator=gen, dtype=torch.float32) * std


def seeded_uniform(shape: tuple[int, ...], bound: float, seed: int) -> torch.Tensor:
    """U(-bound, bound) from a CPU generator (Kaiming-uniform with bound 1 / sqrt(fan_in))."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return (torch.rand(*shape, generator=gen, dtype=torch.float32) * 2.0 - 1.0) * bound


@dataclass
class PromptConfig:
    """What rebuilds a prompt besides its trainable tensors; each method subclasses it.

    Args:
        n_tokens: prompt length n (soft tokens).
        dim: embedding size d of the frozen LLM.
        seed: seed of the trainable tensors' initialisation.
    """

    n_tokens: int
    dim: int
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.n_tokens) < 1 or int(self.dim) < 1:
            raise InvalidDataError(f"prompt needs n_tokens >= 1 and dim >= 1, got {self.n_tokens}, {self.dim}")
        self.n_tokens, self.dim, self.seed = int(self.n_tokens), int(self.dim), int(self.seed)


@dataclass
class LowRankConfig(PromptConfig):
    """A prompt factored through rank ``rank``."""

    rank: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.rank) < 1:
            raise InvalidDataError(f"rank must be >= 1, got {self.rank}")
        self.rank = int(self.rank)


class TaskModule(nn.Module):
    """Base class of every per-task module: a prompt of ``n_tokens`` vectors of size ``dim``
    and, for some kinds, offsets on the input's embeddings or changes to the LLM's Linears.

    A kind subclasses this, sets ``config_class`` to its :class:`PromptConfig` subclass and
    registers itself with ``@PROMPTS.register("name")`` (docs/architecture.md).
    """

    method: ClassVar[str]
    config_class: ClassVar[type[PromptConfig]] = PromptConfig
    #: False for kinds without a soft prompt (their n_tokens is 0).
    has_prompt: ClassVar[bool] = True
    #: True for kinds that need the LLM's Linear shapes (``shapes=FrozenLM.linear_shapes()``).
    needs_shapes: ClassVar[bool] = False
    #: True for kinds with low-rank factors (the ones an ``mpc`` regulariser applies to).
    low_rank: ClassVar[bool] = False

    def __init__(self, config: PromptConfig) -> None:
        super().__init__()
        self.config = config
        self.n_tokens, self.dim, self.seed = config.n_tokens, config.dim, config.seed

    def config_state(self) -> dict[str, Any]:
        """Everything (besides trainable tensors) needed to rebuild this prompt, JSON-able."""
        return {"method": self.method, **asdict(self.config)}

    def applied(self) -> Applied:
        """What the module does to an input; its tensors are live (gradients flow into them)."""
        return Applied(self())

    def regularization(self) -> torch.Tensor | None:
        """A penalty the trainer adds to the loss (e.g. LoRA's MPC), or None."""
        return None

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
                    raise InvalidDataError(
                        f"{self.method} tensor '{k}' has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}"
                    )
                own[k].copy_(v.to(own[k].dtype))

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups; methods whose tensors live on different scales override this."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def start_near(self, center: torch.Tensor) -> None:
        """Move the untrained prompt's tokens to ``center`` (d,), e.g. the mean embedding of the
        task's label words (``BankConfig.prompt_init="labels"``), keeping their seeded spread.

        Raises:
            InvalidDataError: the method has no such initialisation.
        """
        raise InvalidDataError(f"the {self.method} prompt has no task-aware initialisation; use prompt_init='random'")


@PROMPTS.register("pt")
class PromptTuning(TaskModule):
    """Vanilla prompt tuning (Lester et al.): P in R^{n x d} trainable."""

    method = "pt"

    def __init__(
        self, n_tokens: int, dim: int, seed: int = 0, init: torch.Tensor | None = None, init_std: float = 0.02
    ) -> None:
        super().__init__(PromptConfig(n_tokens, dim, seed))
        weight = init.clone().float() if init is not None else seeded_normal((n_tokens, dim), init_std, seed)
        self.weight = nn.Parameter(weight)

    def forward(self) -> torch.Tensor:
        return self.weight

    def start_near(self, center: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.add_(center.to(self.weight).reshape(1, -1))


@dataclass
class ULPTConfig(LowRankConfig):
    """ULPT's options: ``rank`` r of Z, the seed of the frozen projection A, Z's init scale,
    the initial scale s, and ``lr_scale``, the step of s and b relative to Z's."""

    proj_seed: int = 1234
    z_std: float = 1.0
    scale_init: float = 1.0
    lr_scale: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.z_std > 0 or not self.lr_scale > 0:
            raise InvalidDataError(f"z_std and lr_scale must be > 0, got {self.z_std}, {self.lr_scale}")
        self.proj_seed, self.z_std = int(self.proj_seed), float(self.z_std)
        self.scale_init, self.lr_scale = float(self.scale_init), float(self.lr_scale)


@PROMPTS.register("ulpt")
class ULPT(TaskModule):
    """Ultra-low-dimensional prompt: P = (Z A) * s + b.

    Z (n x r) and the per-dimension scale s and shift b (d each) are trained; A (r x d) is a
    frozen Xavier-uniform projection regenerated from ``proj_seed`` and never stored.
    """

    method = "ulpt"
    config_class = ULPTConfig

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
        super().__init__(ULPTConfig(n_tokens, dim, seed, rank, proj_seed, z_std, scale_init, lr_scale))
        c = self.config
        self.rank, self.proj_seed, self.z_std, self.scale_init, self.lr_scale = (
            c.rank,
            c.proj_seed,
            c.z_std,
            c.scale_init,
            c.lr_scale,
        )
        self.register_buffer("proj", frozen_xavier(self.rank, dim, self.proj_seed), persistent=False)
        self.z = nn.Parameter(seeded_normal((n_tokens, self.rank), self.z_std, seed))
        self.scale = nn.Parameter(torch.full((dim,), self.scale_init))
        shift = shift_init.clone().float().reshape(dim) if shift_init is not None else torch.zeros(dim)
        self.shift = nn.Parameter(shift)

    def forward(self) -> torch.Tensor:
        return (self.z @ self.proj) * self.scale + self.shift

    def start_near(self, center: torch.Tensor) -> None:
        with torch.no_grad():
            self.shift.copy_(center.to(self.shift).reshape(-1))

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        # Z moves a point in r dimensions; scale/shift act on every embedding dimension, so they
        # get a smaller step (lr_scale) to stay near the embedding manifold.
        return [
            {"params": [self.z], "lr": lr},
            {"params": [self.scale, self.shift], "lr": lr * self.lr_scale},
        ]


@PROMPTS.register("lopt1")
class LoPT1(TaskModule):
    """LoPT-1: P = U V with U (n x r) and V (r x d) both trainable."""

    method = "lopt1"
    config_class = LowRankConfig

    def __init__(self, n_tokens: int, dim: int, seed: int = 0, rank: int = 2, init_std: float = 0.02) -> None:
        super().__init__(LowRankConfig(n_tokens, dim, seed, rank))
        self.rank = self.config.rank
        self.u = nn.Parameter(seeded_normal((n_tokens, self.rank), 1.0 / math.sqrt(self.rank), seed))
        self.v = nn.Parameter(seeded_normal((self.rank, dim), init_std, seed + 1))

    def forward(self) -> torch.Tensor:
        return self.u @ self.v


#: DPT (a low-dimensional prompt times a trainable up-projection) is LoPT-1 under another name.
PROMPTS.alias("dpt", "lopt1")


@dataclass
class LoPT2Config(LowRankConfig):
    """LoPT-2's options: ``rank`` and the seed of the frozen random input X0."""

    x0_seed: int = 4321


@PROMPTS.register("lopt2")
class LoPT2(TaskModule):
    """LoPT-2: P = ELU(X0 U) V, X0 (n x d) frozen random, U (d x r) and V (r x d) trainable."""

    method = "lopt2"
    config_class = LoPT2Config

    def __init__(
        self, n_tokens: int, dim: int, seed: int = 0, rank: int = 2, init_std: float = 0.02, x0_seed: int = 4321
    ) -> None:
        super().__init__(LoPT2Config(n_tokens, dim, seed, rank, int(x0_seed)))
        self.rank, self.x0_seed = self.config.rank, self.config.x0_seed
        self.register_buffer("x0", seeded_normal((n_tokens, dim), 1.0, self.x0_seed), persistent=False)
        self.u = nn.Parameter(frozen_xavier(dim, self.rank, seed))
        self.v = nn.Parameter(seeded_normal((self.rank, dim), init_std, seed + 1))

    def forward(self) -> torch.Tensor:
        return nn.functional.elu(self.x0 @ self.u) @ self.v


def build_prompt(
    method: str, n_tokens: int, dim: int, shapes: dict[str, Sequence[int]] | None = None, **options: Any
) -> TaskModule:
    """A new module of a registered kind.

    Args:
        method: a name in :data:`PROMPTS` ("ulpt", "pt", "lopt1", "lopt2", "dept", "ssb", "lora", ...).
        n_tokens: prompt length (ignored by kinds without a prompt).
        dim: embedding size of the frozen LLM.
        shapes: the LLM's Linear shapes, ``FrozenLM.linear_shapes()``; needed by kinds that change
            Linear layers (``needs_shapes``), ignored by the others.
        **options: the kind's config fields (e.g. ``rank=2``) or init-only arguments.

    Returns:
        The module (trainable tensors initialised from ``seed``).

    Raises:
        InvalidDataError: unknown kind, an option the kind does not take, missing ``shapes``.

    Example:
        >>> prompt = build_prompt("ulpt", n_tokens=20, dim=576, rank=2)
        >>> prompt().shape
        torch.Size([20, 576])
        >>> build_prompt("ssb", 0, 576, shapes=backbone.linear_shapes()).num_trainable()
        109440
    """
    cls = PROMPTS.get(method)
    if "mpc" in options and not cls.low_rank:
        raise InvalidDataError(f"mpc regularises low-rank factors; the '{method}' module has none (use method='lora')")
    if cls.needs_shapes:
        if shapes is None:
            raise InvalidDataError(
                f"the '{method}' module changes the LLM's Linear layers: pass shapes=backbone.linear_shapes()"
            )
        options["shapes"] = shapes
    try:
        return cls(n_tokens if cls.has_prompt else 0, dim, **options)
    except TypeError as exc:
        raise InvalidDataError(f"bad option for the '{method}' module: {exc}") from None


def prompt_from_config(config: dict[str, Any], state: dict[str, torch.Tensor] | None = None) -> TaskModule:
    """Rebuild a prompt from ``config_state()`` output and (optionally) its trainable tensors.

    Raises:
        BankFormatError: the config names no known method or misses a field.
    """
    method = config.get("method")
    if method not in PROMPTS:
        raise BankFormatError(f"saved prompt has unknown method {method!r}; known: {', '.join(PROMPTS.names())}")
    cls = PROMPTS.get(method)
    names = {f.name for f in fields(cls.config_class)}
    try:
        prompt = cls(**{k: v for k, v in config.items() if k in names})
    except (TypeError, InvalidDataError) as exc:
        raise BankFormatError(f"saved {method} prompt config is not valid: {exc}") from None
    if state is not None:
        prompt.load_trainable_state(state)
    return prompt
