"""Generated answers for text-to-text tasks, each input with its own task's module, in one batch.

A batch that mixes tasks (and module kinds) decodes together: every input's embeddings carry its
own soft prompt and token offsets, its rows of the frozen Linears get its own weight changes, and
transformers' ``generate`` runs one forward per decoding step over the whole batch with a KV cache,
left padding and per-row stopping at EOS. Decoding options are transformers' ``GenerationConfig``
(greedy by default).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbone import FrozenLM
from .errors import InvalidDataError
from .module_batch import Applied, ModuleBatch

if TYPE_CHECKING:
    from transformers import GenerationConfig

#: Enough for a headline, a short reply or an extracted field; pass ``max_new_tokens`` for more.
DEFAULT_MAX_NEW_TOKENS = 32


@dataclass
class Generated:
    """One generated answer: its text, its tokens (up to and including EOS, if emitted) and the
    mean log-probability per token (the length-normalised beam score with beam search)."""

    text: str
    token_ids: list[int]
    logprob: float


def generation_config(backbone: FrozenLM, options: GenerationConfig | dict[str, Any] | None = None) -> GenerationConfig:
    """The decoding settings: greedy, ``DEFAULT_MAX_NEW_TOKENS``, stopping at the tokenizer's EOS,
    overridden by ``options`` (a ``GenerationConfig`` or its fields, e.g. ``{"num_beams": 4}``).

    Raises:
        InvalidDataError: an unknown field, a bad value, or more than one sequence per input.
    """
    from transformers import GenerationConfig

    fields: dict[str, Any] = {
        "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
        "do_sample": False,
        "eos_token_id": backbone.eos_token_id,
        "pad_token_id": backbone.tokenizer.pad_token_id,
    }
    if isinstance(options, GenerationConfig):
        fields.update(options.to_diff_dict())
    elif options is not None:
        unknown = sorted(set(options) - set(GenerationConfig().to_dict()))
        if unknown:
            raise InvalidDataError(f"unknown generation options {unknown}; use fields of transformers.GenerationConfig")
        fields.update(options)
    try:
        config = GenerationConfig(**fields)
        config.validate()
        config.return_dict_in_generate = config.output_scores = True  # for each answer's log-probability
    except (TypeError, ValueError) as exc:
        raise InvalidDataError(f"bad generation options {options!r}: {exc}") from None
    if config.num_return_sequences not in (None, 1):
        raise InvalidDataError("num_return_sequences must be 1: each input gets one answer")
    return config


def generate_batch(
    backbone: FrozenLM, batch: ModuleBatch, input_ids: list[list[int]], config: GenerationConfig
) -> list[Generated]:
    """Decode one batch, example b with module ``batch[b]`` after its token list ``input_ids[b]``.

    Args:
        backbone: the frozen LLM.
        batch: each example's module (prompts, offsets, weight changes).
        input_ids: token lists holding each one's prompt slot.
        config: from :func:`generation_config`.

    Returns:
        One :class:`Generated` per example.
    """
    if len(batch) != len(input_ids):
        raise InvalidDataError("modules and input_ids must have the same batch size")
    model = backbone.model
    beams = int(config.num_beams or 1)
    with backbone.applying(batch):
        embeds, mask = backbone.embed_with_prompts(batch, input_ids, left_pad=not backbone.is_encoder_decoder)
        with batch.weights.repeated(beams) if batch.weights is not None else contextlib.nullcontext():
            out = model.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                generation_config=config,
            )
    sequences = out.sequences
    if beams > 1:
        per_token = None
    else:
        per_token = model.compute_transition_scores(sequences, out.scores, normalize_logits=True).float().cpu()
    new = sequences[:, -len(out.scores) :].cpu()  # the generated tokens (a decoder start token comes before them)
    eos = _eos_ids(config)
    results = []
    for b in range(len(input_ids)):
        tokens = new[b].tolist()
        stop = next((i for i, t in enumerate(tokens) if t in eos), None)
        kept = tokens if stop is None else tokens[: stop + 1]
        if per_token is not None:
            logprob = float(per_token[b, : len(kept)].mean()) if kept else float("nan")
        else:
            logprob = float(out.sequences_scores[b])
        text = backbone.tokenizer.decode(kept if stop is None else kept[:-1], skip_special_tokens=True).strip()
        results.append(Generated(text, kept, logprob))
    return results


def _eos_ids(config: GenerationConfig) -> set[int]:
    eos = config.eos_token_id
    return set() if eos is None else {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def generate(
    backbone: FrozenLM,
    modules: Sequence[Applied],
    module_index: Sequence[int],
    input_ids: list[list[int]],
    config: GenerationConfig | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> list[Generated]:
    """Generated answers for many inputs, input i answered with ``modules[module_index[i]]``.

    Args:
        backbone: the frozen LLM.
        modules: the tasks' applied modules (on the LLM's device).
        module_index: per input, its module's position in ``modules``.
        input_ids: per input, its token list with the prompt slot.
        config: decoding settings (:func:`generation_config`; its defaults if None).
        batch_size: inputs decoded together (they may mix tasks and module kinds).
        progress: show a progress bar.

    Returns:
        One :class:`Generated` per input, in input order (inputs are batched by length).
    """
    config = config or generation_config(backbone)
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    out: list[Generated | None] = [None] * len(input_ids)
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc="generate", disable=not progress, leave=False):
            idx = order[start : start + batch_size]
            batch = ModuleBatch.gather(modules, [module_index[i] for i in idx])
            for i, g in zip(idx, generate_batch(backbone, batch, [input_ids[i] for i in idx], config)):
                out[i] = g
    return out  # type: ignore[return-value]
