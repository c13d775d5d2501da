"""An input's keys and values, computed once, for prompts placed after the input.

With ``placement="suffix"`` an example reads ``template opening + text + prompt + template rest
+ label``. Nothing before the prompt depends on it, so the frozen LLM's keys and values over
those tokens are the same at every training step and for every candidate prompt. This cache
computes them once per example (no gradient) and each step then runs the LLM only over the
prompt, the template's remainder and the label: ``n + tail`` tokens instead of
``n + text + tail``. Memory is bounded: the least recently used inputs are dropped beyond
``budget_bytes`` and recomputed if they come back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from .backbone import FrozenLM, split_at_slot
from .errors import InvalidDataError
from .label_table import LabelTable

#: Bytes of keys and values one cache keeps: 320 bbc inputs of 64 tokens in bf16 take ~0.5 GB.
DEFAULT_BUDGET_BYTES = 1 << 30


def _layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a transformers cache, each (B, heads, T, head_dim)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))  # transformers before 4.56


class InputCache:
    """Keys and values of each example's tokens before its prompt slot, computed on first use.

    Args:
        backbone: the frozen causal LLM.
        input_ids: the examples' token lists, each with ``PROMPT_SLOT`` after its text.
        budget_bytes: most bytes kept; least recently used inputs are dropped beyond it.
        dtype: storage dtype; None keeps the dtype the LLM computes in (exact). bfloat16 halves
            the memory of a float32 LLM at a rounding of the cached keys and values.
        batch_size: inputs encoded per forward pass.

    Example:
        >>> cache = InputCache(backbone, backbone.encode(texts, template, 64, placement="suffix").input_ids)
        >>> scores = cache.label_scores([0, 1], prompt_matrices, [label_ids, label_ids])
    """

    def __init__(
        self,
        backbone: FrozenLM,
        input_ids: Sequence[Sequence[int]],
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        dtype: torch.dtype | None = None,
        batch_size: int = 16,
    ) -> None:
        if backbone.is_encoder_decoder:
            raise InvalidDataError("the input cache needs a decoder-only LLM; use placement='prefix' for this one")
        self.backbone = backbone
        parts = [split_at_slot(ids) for ids in input_ids]
        self.heads = [head for head, _ in parts]
        self.tails = [tail for _, tail in parts]
        if any(not head for head in self.heads):
            raise InvalidDataError("every input needs tokens before its prompt slot; encode with placement='suffix'")
        self.budget_bytes = int(budget_bytes)
        self.dtype = dtype
        self.batch_size = batch_size
        self.encoded = 0  # inputs run through the LLM so far (a dropped input that returns counts again)
        self._held: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._bytes = 0

    def nbytes(self) -> int:
        """Bytes of keys and values held now."""
        return self._bytes

    def contexts(self, rows: Sequence[int]) -> list[torch.Tensor]:
        """Each row's (layers, 2, heads, tokens, head_dim) keys and values, encoding those not held."""
        missing = [i for i in dict.fromkeys(rows) if i not in self._held]
        for start in range(0, len(missing), self.batch_size):
            self._encode(missing[start : start + self.batch_size])
        out = []
        for i in rows:
            self._held.move_to_end(i)
            out.append(self._held[i])
        while self._bytes > self.budget_bytes and len(self._held) > 1:
            _, dropped = self._held.popitem(last=False)
            self._bytes -= dropped.numel() * dropped.element_size()
        return out

    def _encode(self, rows: list[int]) -> None:
        lm = self.backbone
        width = max(len(self.heads[i]) for i in rows)
        ids = torch.full((len(rows), width), lm.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for b, i in enumerate(rows):
            head = self.heads[i]
            ids[b, width - len(head) :] = torch.tensor(head, dtype=torch.long)
            mask[b, width - len(head) :] = 1
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        with torch.no_grad(), lm.autocast():
            out = lm.model.base_model(
                input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True
            )
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        kv = torch.stack([torch.stack([k, v]) for k, v in _layers(cache)])  # (layers, 2, B, heads, T, head_dim)
        for b, i in enumerate(rows):
            own = kv[:, :, b, :, width - len(self.heads[i]) :, :]
            own = (own.to(self.dtype) if self.dtype is not None else own).clone()
            self._held[i] = own
            self._bytes += own.numel() * own.element_size()
        self.encoded += len(rows)

    def label_scores(
        self, rows: Sequence[int], prompts: torch.Tensor, labels: Sequence[list[list[int]]]
    ) -> torch.Tensor:
        """Label scores of ``rows`` with prompt ``prompts[b]`` for row b; the same as
        ``FrozenLM.label_scores`` on the full token lists, but the LLM runs over the prompt,
        the template's remainder and the labels only.

        Args:
            rows: example indices.
            prompts: (B, n, d) one prompt per row; gradients flow into it.
            labels: per row, its candidate labels as token lists.

        Returns:
            (B, max labels) mean log-probabilities, -inf for padding.
        """
        lm = self.backbone
        contexts = self.contexts(rows)
        tails = [self.tails[i] for i in rows]
        B, n = len(rows), prompts.shape[1]
        table = LabelTable.build(list(labels), lm.tokenizer.pad_token_id, lm.device)
        with lm.autocast():
            held = max(c.shape[3] for c in contexts)
            lengths = [n + len(t) for t in tails]
            width = max(lengths)
            mask = torch.zeros(B, held + width, dtype=torch.long, device=lm.device)
            positions = torch.zeros(B, width, dtype=torch.long, device=lm.device)
            emb_layer = lm.model.get_input_embeddings()
            prompts = prompts.to(lm.device)
            rows_embeds = []
            first = contexts[0]
            kv = first.new_zeros((first.shape[0], 2, B, first.shape[2], held, first.shape[4]))
            for b, (context, tail) in enumerate(zip(contexts, tails)):
                c = context.shape[3]
                kv[:, :, b, :, held - c :, :] = context
                mask[b, held - c : held] = 1
                mask[b, held + width - lengths[b] :] = 1
                positions[b, width - lengths[b] :] = torch.arange(c, c + lengths[b], device=lm.device)
                tail_emb = emb_layer(torch.tensor(tail, dtype=torch.long, device=lm.device))
                body = torch.cat([prompts[b].to(tail_emb.dtype), tail_emb], dim=0)
                rows_embeds.append(torch.cat([body.new_zeros(width - lengths[b], body.shape[1]), body], dim=0))
            compute = lm.model.get_input_embeddings().weight.dtype if not lm.bf16 else torch.bfloat16
            kv = kv.to(compute)
            from transformers import DynamicCache

            cache = DynamicCache(ddp_cache_data=[(layer[0], layer[1]) for layer in kv], config=lm.model.config)
            return lm.score_after(torch.stack(rows_embeds), mask, positions, table, cache=cache)
