"""Weight-space task modules applied per example inside one forward pass of the frozen LLM.

A weight-space module (SSB, SSL, (IA)3, LoRA, VeRA) changes what some Linear layers of the LLM
compute, for its own task's inputs only. No per-example weight matrix is ever built: forward
hooks on the frozen Linears apply each example's change to that example's rows of the batch.
For every target (``k_proj``, ``up_proj``, ...) a task's change, over all layers, is a
:class:`SiteDelta` of up to four parts, each the identity when absent:

- input scale ``s``:  the layer sees ``x * s``                       (SSL, SSB's D1)
- output scale ``l``: its output becomes ``out * l``                 ((IA)3, SSB's D2)
- low rank:           ``out += (x @ down.T) @ up.T``                 (LoRA; its scaling is in ``up``)
- shared low rank:    ``out += ((x @ A.T) * mid) @ B.T * outer``     (VeRA: A and B frozen and
  shared by all layers and tasks of one seed; only ``mid`` and ``outer`` are per task)

A batch holds K distinct tasks; ``rows[b]`` is example b's task among them. With one task
(training, or a batch of one task) ``rows`` is None and the tensors broadcast: training uses the
live parameters directly, so their gradients flow.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import InvalidDataError

#: The Linear layers of a Llama-style decoder layer a module may target.
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_SITE = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(" + "|".join(TARGETS) + r")$")


def find_linears(model: nn.Module) -> dict[str, list[nn.Linear]]:
    """Each target's Linear layers, in layer order (empty for a model without Llama-style names)."""
    found: dict[str, dict[int, nn.Linear]] = {}
    for name, module in model.named_modules():
        m = _SITE.search(name)
        if m and isinstance(module, nn.Linear):
            found.setdefault(m.group(2), {})[int(m.group(1))] = module
    return {t: [layers[i] for i in sorted(layers)] for t, layers in found.items()}


@dataclass
class SharedLowRank:
    """VeRA's part of a :class:`SiteDelta`: frozen ``a`` (r, in) and ``b`` (out, r) shared across
    layers and tasks (``key`` names them), and per-layer trainable ``mid`` (L, r) and ``outer`` (L, out)."""

    key: str
    a: torch.Tensor
    b: torch.Tensor
    mid: torch.Tensor
    outer: torch.Tensor


@dataclass
class SiteDelta:
    """One task's change to one target over all L layers (see the module docstring)."""

    in_scale: torch.Tensor | None = None  # (L, in)
    out_scale: torch.Tensor | None = None  # (L, out)
    down: torch.Tensor | None = None  # (L, r, in)
    up: torch.Tensor | None = None  # (L, out, r)
    shared: SharedLowRank | None = None

    def to(self, device: torch.device | str) -> SiteDelta:
        move = lambda t: None if t is None else t.to(device)
        shared = self.shared
        if shared is not None:
            shared = SharedLowRank(shared.key, *(t.to(device) for t in (shared.a, shared.b, shared.mid, shared.outer)))
        return SiteDelta(move(self.in_scale), move(self.out_scale), move(self.down), move(self.up), shared)


@dataclass
class _Stacked:
    """One target's parts for the K tasks of a batch, each with a leading task axis."""

    in_scale: torch.Tensor | None = None  # (K, L, in)
    out_scale: torch.Tensor | None = None  # (K, L, out)
    down: torch.Tensor | None = None  # (K, L, r, in)
    up: torch.Tensor | None = None  # (K, L, out, r)
    shared: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] | None = (
        None  # a, b, (K,L,r), (K,L,out)
    )


def _stack(parts: Sequence[torch.Tensor | None], fill: float) -> torch.Tensor | None:
    """Stack the tasks' tensors, the identity (``fill``) for tasks that lack the part."""
    like = next((p for p in parts if p is not None), None)
    if like is None:
        return None
    return torch.stack([p if p is not None else torch.full_like(like, fill) for p in parts])


def _stack_low_rank(deltas: Sequence[SiteDelta]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Down and up factors of the tasks, zero-padded to the largest rank (zeros add nothing)."""
    owners = [d for d in deltas if d.down is not None]
    if not owners:
        return None, None
    rank = max(d.down.shape[1] for d in owners)
    L, _, n_in = owners[0].down.shape
    n_out = owners[0].up.shape[1]
    ref = owners[0].down
    down = ref.new_zeros(len(deltas), L, rank, n_in)
    up = ref.new_zeros(len(deltas), L, n_out, rank)
    for k, d in enumerate(deltas):
        if d.down is not None:
            r = d.down.shape[1]
            down[k, :, :r] = d.down
            up[k, :, :, :r] = d.up
    return down, up


def _stack_shared(deltas: Sequence[SiteDelta]) -> list[tuple[torch.Tensor, ...]] | None:
    """One term per distinct pair of shared matrices; tasks outside a term get zero scales."""
    groups: dict[str, SharedLowRank] = {}
    for d in deltas:
        if d.shared is not None:
            groups.setdefault(d.shared.key, d.shared)
    if not groups:
        return None
    terms = []
    for key, ref in groups.items():
        mids = [d.shared.mid if d.shared is not None and d.shared.key == key else None for d in deltas]
        outers = [d.shared.outer if d.shared is not None and d.shared.key == key else None for d in deltas]
        terms.append((ref.a, ref.b, _stack(mids, 0.0), _stack(outers, 0.0)))
    return terms


class WeightDeltas:
    """The weight-space changes of one batch, applied through hooks while :meth:`installed`.

    Args:
        per_task: for each of the K tasks in the batch, its changes by target.
        rows: (B,) each example's task index, or None when K == 1 (the changes broadcast).
    """

    def __init__(self, per_task: Sequence[dict[str, SiteDelta]], rows: torch.Tensor | None) -> None:
        if rows is None and len(per_task) != 1:
            raise ValueError("rows may only be omitted for a single task")
        self.rows = rows
        targets = sorted({t for sites in per_task for t in sites})
        self.sites: dict[str, _Stacked] = {}
        for target in targets:
            deltas = [sites.get(target, SiteDelta()) for sites in per_task]
            down, up = _stack_low_rank(deltas)
            self.sites[target] = _Stacked(
                _stack([d.in_scale for d in deltas], 1.0),
                _stack([d.out_scale for d in deltas], 1.0),
                down,
                up,
                _stack_shared(deltas),
            )

    @contextmanager
    def repeated(self, times: int) -> Iterator[None]:
        """While the LLM runs each example ``times`` times in a row (label continuations)."""
        rows = self.rows
        if rows is not None:
            self.rows = rows.repeat_interleave(times)
        try:
            yield
        finally:
            self.rows = rows

    def _take(self, t: torch.Tensor, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Each example's (or the one task's) slice of t (K, ...), cast to ``dtype`` (default x's)."""
        if self.rows is not None:
            if x.shape[0] != self.rows.numel():
                raise RuntimeError(f"a weight hook saw {x.shape[0]} rows but the batch has {self.rows.numel()}")
            t = t[self.rows]
        return t.to(dtype or x.dtype)

    def _scaled(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """x * scale computed in float32: a scale near 1 rounded to bfloat16 would lose changes under 0.4%."""
        return (x.float() * self._take(scale, x, torch.float32).unsqueeze(1)).to(x.dtype)

    @contextmanager
    def installed(self, linears: dict[str, list[nn.Linear]]) -> Iterator[None]:
        """Hooks on the targeted Linears for the duration of the block.

        Raises:
            InvalidDataError: a target the model has no (or too few) Linear layers for.
        """
        handles = []
        try:
            for target, stacked in self.sites.items():
                layers = linears.get(target, [])
                needed = _layer_count(stacked)
                if len(layers) != needed:
                    raise InvalidDataError(
                        f"a task module targets {needed} '{target}' layers but the LLM has {len(layers)}; "
                        "it was built for another model"
                    )
                for i, linear in enumerate(layers):
                    if stacked.in_scale is not None:
                        handles.append(linear.register_forward_pre_hook(self._pre_hook(stacked, i)))
                    if stacked.out_scale is not None or stacked.down is not None or stacked.shared:
                        handles.append(linear.register_forward_hook(self._post_hook(stacked, i)))
            yield
        finally:
            for h in handles:
                h.remove()

    def _pre_hook(self, s: _Stacked, layer: int) -> Any:
        def hook(_module: nn.Module, args: tuple) -> tuple:
            return (self._scaled(args[0], s.in_scale[:, layer]), *args[1:])

        return hook

    def _post_hook(self, s: _Stacked, layer: int) -> Any:
        def hook(_module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            x = args[0]
            if s.out_scale is not None:
                out = self._scaled(out, s.out_scale[:, layer])
            if s.down is not None:
                down, up = self._take(s.down[:, layer], x), self._take(s.up[:, layer], x)
                out = out + ((x @ down.mT) @ up.mT).to(out.dtype)
            for a, b, mid, outer in s.shared or ():
                h = (x @ a.to(x.dtype).T) * self._take(mid[:, layer], x).unsqueeze(1)
                out = out + ((h @ b.to(x.dtype).T) * self._take(outer[:, layer], x).unsqueeze(1)).to(out.dtype)
            return out

        return hook


def _layer_count(s: _Stacked) -> int:
    for t in (s.in_scale, s.out_scale, s.down):
        if t is not None:
            return int(t.shape[1])
    return int(s.shared[0][2].shape[1])
