"""The candidate labels of a batch as one padded tensor, and the mean log-probability per label."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LabelTable:
    """Candidate labels of a batch padded to (B, L, T) token ids with masks."""

    ids: torch.Tensor
    token_mask: torch.Tensor
    label_mask: torch.Tensor

    @property
    def max_len(self) -> int:
        return int(self.ids.shape[2])

    @classmethod
    def build(cls, labels: list[list[list[int]]], pad_id: int, device: torch.device) -> LabelTable:
        L = max(len(ls) for ls in labels)
        T = max(len(t) for ls in labels for t in ls)
        ids = torch.full((len(labels), L, T), pad_id, dtype=torch.long)
        token_mask = torch.zeros(len(labels), L, T)
        label_mask = torch.zeros(len(labels), L, dtype=torch.bool)
        for b, ls in enumerate(labels):
            for j, toks in enumerate(ls):
                ids[b, j, : len(toks)] = torch.tensor(toks)
                token_mask[b, j, : len(toks)] = 1.0
                label_mask[b, j] = True
        return cls(ids.to(device), token_mask.to(device), label_mask.to(device))

    def finish(self, summed_logp: torch.Tensor) -> torch.Tensor:
        mean = summed_logp / self.token_mask.sum(-1).clamp(min=1.0)
        return mean.masked_fill(~self.label_mask, float("-inf"))
