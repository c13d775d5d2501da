"""Subspace scaling kinds (SSB, SSL, (IA)3): per-channel scales on the frozen Linears.

SSB scales both sides of a frozen weight, W' = D1 W D2: each targeted Linear sees ``x * s`` and
its output is multiplied by ``l``. SSL keeps the input scale only, (IA)3 the output scale only.
Scales start at 1 (the untrained module is the identity). On SmolLM2-135M with the default
targets (k, v, up in every layer) SSB trains 109,440 numbers, SSL 51,840, (IA)3 57,600
(``../shared/methods.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from .module_batch import Applied
from .prompts import PROMPTS
from .weight_config import WeightConfig, WeightModule
from .weight_hooks import SiteDelta


class SubspaceScaling(WeightModule):
    """Base of the scaling kinds: ``scales_inputs`` and ``scales_outputs`` choose the sides."""

    scales_inputs: ClassVar[bool] = True
    scales_outputs: ClassVar[bool] = True

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        seed: int = 0,
        targets: str | Sequence[str] = ("k_proj", "v_proj", "up_proj"),
        shapes: dict[str, Sequence[int]] | None = None,
    ) -> None:
        super().__init__(WeightConfig(n_tokens, dim, seed, targets, dict(shapes or {})))
        self.in_scale = nn.ParameterDict()
        self.out_scale = nn.ParameterDict()
        for t in self.config.targets:
            layers, n_in, n_out = self.config.shapes[t]
            if self.scales_inputs:
                self.in_scale[t] = nn.Parameter(torch.ones(layers, n_in))
            if self.scales_outputs:
                self.out_scale[t] = nn.Parameter(torch.ones(layers, n_out))

    def applied(self) -> Applied:
        sites = {
            t: SiteDelta(
                in_scale=self.in_scale[t] if t in self.in_scale else None,
                out_scale=self.out_scale[t] if t in self.out_scale else None,
            )
            for t in self.config.targets
        }
        return Applied(self(), None, sites)


@PROMPTS.register("ssb")
class SSB(SubspaceScaling):
    """Scale both sides: y = (W (x * s)) * l."""

    method = "ssb"


@PROMPTS.register("ssl")
class SSL(SubspaceScaling):
    """Scale the inputs: y = W (x * s)."""

    method = "ssl"
    scales_outputs = False


@PROMPTS.register("ia3")
class IA3(SubspaceScaling):
    """(IA)3: scale the outputs, y = (W x) * l."""

    method = "ia3"
    scales_inputs = False
