"""What a task module does to its inputs (:class:`Applied`), and a batch that mixes tasks (:class:`ModuleBatch`).

A module may act in three places, and a kind uses any of them: a soft prompt placed among the
input's embeddings (ULPT, PT, LoPT, DePT), offsets added to the input's token embeddings by
position (DePT), and changes to the LLM's Linear layers (SSB, SSL, (IA)3, LoRA, VeRA;
``promptbank.weight_hooks``). A batch gives every example its own task's parts, so one forward
pass answers inputs of many tasks and many kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .weight_hooks import SiteDelta, WeightDeltas


@dataclass
class Applied:
    """One task module's parts, ready for the LLM.

    Args:
        prompt: (n, d) soft prompt; n may be 0 (a module without one).
        offsets: (s, d) added to the first s token embeddings of the input (not the prompt), or None.
        sites: weight-space changes by target Linear (empty for input-only kinds).
    """

    prompt: torch.Tensor
    offsets: torch.Tensor | None = None
    sites: dict[str, SiteDelta] = field(default_factory=dict)

    @property
    def input_only(self) -> bool:
        """True when the module leaves the input's own tokens alone (a prompt and nothing else):
        then the input's keys and values before the prompt do not depend on it."""
        return self.offsets is None and not self.sites

    def frozen(self, device: torch.device | str) -> Applied:
        """A detached float32 copy on ``device`` (what the bank keeps per task)."""
        fix = lambda t: t.detach().float().to(device).clone()
        sites = {k: _frozen_site(v, device) for k, v in self.sites.items()}
        return Applied(fix(self.prompt), None if self.offsets is None else fix(self.offsets), sites)

    def nbytes(self) -> int:
        tensors = [self.prompt, self.offsets]
        for s in self.sites.values():
            tensors += [s.in_scale, s.out_scale, s.down, s.up]
            if s.shared is not None:
                tensors += [s.shared.mid, s.shared.outer]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _frozen_site(s: SiteDelta, device: torch.device | str) -> SiteDelta:
    fix = lambda t: None if t is None else t.detach().float().clone()
    out = SiteDelta(fix(s.in_scale), fix(s.out_scale), fix(s.down), fix(s.up), s.shared)
    if s.shared is not None:
        sh = s.shared
        out.shared = type(sh)(sh.key, sh.a.detach().float(), sh.b.detach().float(), fix(sh.mid), fix(sh.outer))
    return out.to(device)


@dataclass
class ModuleBatch:
    """Each example's prompt and token offsets, and the batch's weight-space changes.

    Args:
        prompts: per example, its (n_b, d) prompt (lengths may differ).
        offsets: per example, its (s, d) token offsets or None.
        weights: the weight-space changes, or None when no example's module has any.
    """

    prompts: list[torch.Tensor]
    offsets: list[torch.Tensor | None]
    weights: WeightDeltas | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    @classmethod
    def of_prompts(cls, prompts: torch.Tensor) -> ModuleBatch:
        """A batch of plain prompts, (B, n, d)."""
        return cls(list(prompts), [None] * prompts.shape[0])

    @classmethod
    def shared(cls, applied: Applied, size: int) -> ModuleBatch:
        """``size`` examples of one task, its live tensors broadcast (gradients flow into them)."""
        weights = WeightDeltas([applied.sites], None) if applied.sites else None
        return cls([applied.prompt] * size, [applied.offsets] * size, weights)

    @classmethod
    def gather(cls, modules: Sequence[Applied], index: Sequence[int]) -> ModuleBatch:
        """Example b answered with ``modules[index[b]]``; only the tasks present are stacked.

        Args:
            modules: the tasks' applied modules, all on the LLM's device.
            index: per example, its task's position in ``modules``.
        """
        present = sorted(set(index))
        if len(present) == 1:
            return cls.shared(modules[present[0]], len(index))
        weights = None
        if any(modules[k].sites for k in present):
            slot = {k: j for j, k in enumerate(present)}
            device = modules[present[0]].prompt.device
            rows = torch.tensor([slot[k] for k in index], dtype=torch.long, device=device)
            weights = WeightDeltas([modules[k].sites for k in present], rows)
        return cls([modules[k].prompt for k in index], [modules[k].offsets for k in index], weights)
