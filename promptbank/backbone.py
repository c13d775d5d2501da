"""The frozen LLM: loading (offline asset, local path or hub name) and label scoring.

Classification is done by the LLM itself: a label's score is the mean log-probability of its
verbalisation after ``prompt + template(text)``. Every example in a batch may carry its own
soft prompt and its own label set, so a batch that mixes tasks is a single forward pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import HubUnavailableError, InvalidDataError, PromptBankError
from .hub import hub_reachable
from .label_table import LabelTable
from .module_batch import ModuleBatch
from .offline_model import convert_smollm2
from .weight_hooks import find_linears

if TYPE_CHECKING:  # transformers is imported where a model is loaded: `import promptbank` stays light
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "smollm2-135m"
TEXT_FIELD = "{text}"
#: Where an example's token list receives its soft prompt (a token list without it gets the prompt first).
PROMPT_SLOT = -1
#: Where the soft prompt goes: before the whole input (``prefix``, as in prompt tuning), or after the
#: input text and before the template's remainder (``suffix``): then nothing before the prompt
#: depends on it, so the input's keys and values can be computed once (``promptbank.input_cache``).
PLACEMENTS = ("prefix", "suffix")


def auto_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


#: Capacity set for oneDNN's and ideep's per-shape kernel caches when the LLM runs in bf16 on a CPU.
#: They build and keep one bf16 kernel per input shape (1,024 by default, ~3 MB each for SmolLM2):
#: the main job's peak RSS was 3.71 GiB with the defaults and 2.86 GiB with 64, in no more time.
CPU_BF16_KERNEL_CACHE = "64"


def _bound_cpu_kernel_caches() -> None:
    """Cap the caches unless the user set them. They read these variables when the first kernel
    is built, so this only takes effect if no bf16 CPU kernel ran before in this process."""
    for var in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(var, CPU_BF16_KERNEL_CACHE)


#: Label continuations scored at once (inputs x labels), each holding a copy of its input's
#: prompt + text cache: bounds the memory of tasks with many multi-token labels.
CONTINUATION_ROWS = 64


def default_bf16(device: torch.device) -> bool:
    """bf16 by default on a bf16-capable GPU only. On a CPU with bf16 matrix units (AMX) it ran
    the main job 1.5x faster but moves answers, so there it is opt-in (``bf16=True``; BENCHMARKS.md)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


OFFLINE_BACKBONES = {"smollm2-135m": convert_smollm2}


def resolve_model_source(name: str) -> tuple[str, dict[str, Any]]:
    """Map an offline asset name, local folder or hub name to from_pretrained arguments."""
    if name in OFFLINE_BACKBONES:
        return str(OFFLINE_BACKBONES[name]()), {}
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser()), {}
    from transformers import AutoConfig

    try:  # already in the local HF cache: no network needed
        AutoConfig.from_pretrained(name, local_files_only=True)
        return name, {"local_files_only": True}
    except Exception:
        pass
    if not hub_reachable():
        raise HubUnavailableError(
            f"cannot load backbone '{name}': it is not an offline asset ({', '.join(OFFLINE_BACKBONES)}), not a "
            "local folder, not in the local Hugging Face cache, and the hub is unreachable. Fix: check the "
            f"name, connect to the internet, pass a local model folder, or use '{DEFAULT_BACKBONE}'."
        )
    return name, {}


@dataclass
class EncodedBatch:
    """Token ids per example, each holding ``PROMPT_SLOT`` where its soft prompt goes."""

    input_ids: list[list[int]]
    truncated: int


def split_at_slot(ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """The tokens before and after an example's prompt slot (all after it when there is none)."""
    ids = list(ids)
    if PROMPT_SLOT not in ids:
        return [], ids
    at = ids.index(PROMPT_SLOT)
    return ids[:at], ids[at + 1 :]


def store_linear_in_bf16(model: nn.Module, keep: nn.Module | None = None) -> None:
    """Convert ``model``'s Linear layers (all but ``keep``) to bf16 in place, for running it
    under bf16 autocast. Autocast casts a frozen float32 weight again at every forward (it
    caches only weights that require grad), to the same values, so the outputs are unchanged
    and the casts are saved. Embeddings and norms stay
    float32, as autocast leaves them. Normal tensors even under inference mode, so that
    training can backpropagate through the layers later."""
    with torch.inference_mode(False), torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear) and module is not keep:
                module.to(torch.bfloat16)


def embedding_fingerprint(embeddings: torch.Tensor) -> str:
    """SHA-256 of the first 256 embedding rows rounded to bfloat16.

    Any change to those weights (another checkpoint, a fine-tune) changes it; rounding to
    bfloat16 first keeps it the same for one model loaded in float32 or bfloat16.
    """
    rows = embeddings[:256].detach().to("cpu", torch.bfloat16).contiguous()
    return hashlib.sha256(rows.view(torch.int16).numpy().tobytes()).hexdigest()


class FrozenLM:
    """A frozen causal or encoder-decoder LM that scores label verbalisations behind soft prompts."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        name: str,
        device: torch.device | str | None = None,
        bf16: bool | None = None,
    ) -> None:
        self.name = name
        self.device = torch.device(device) if device is not None else auto_device()
        self.bf16 = default_bf16(self.device) if bf16 is None else bool(bf16)
        self.model = model.to(self.device).eval()
        self.model.requires_grad_(False)  # the LLM never receives gradients
        # transformers 5 renamed ``past_key_values`` to ``cache`` (the old name goes in 5.40)
        forward_args = inspect.signature(self.model.base_model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_args else "past_key_values"
        self._head_bf16 = self._cast_linear_weights() if self.bf16 else None
        if self.bf16 and self.device.type == "cpu":
            _bound_cpu_kernel_caches()
        self.tokenizer = tokenizer
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        self.hidden_size = int(model.get_input_embeddings().weight.shape[1])
        self._linears = {} if self.is_encoder_decoder else find_linears(self.model)
        self._weights = None  # the weight-space changes of the batch being scored, if any
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        #: where a generated answer ends: EOS, or [SEP] for BERT-style tokenizers that have none
        self.eos_token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        specials = tokenizer("", add_special_tokens=True)["input_ids"]
        self._prefix_ids = [] if self.is_encoder_decoder else list(specials)
        self._suffix_ids = list(specials) if self.is_encoder_decoder else []

    # ----------------------------------------------------------------- identity
    def identity(self) -> dict[str, Any]:
        """What a bank records to refuse loading against another LLM."""
        cfg = self.model.config
        emb = self.model.get_input_embeddings().weight
        return {
            "name": self.name,
            "model_type": cfg.model_type,
            "hidden_size": self.hidden_size,
            "vocab_size": int(emb.shape[0]),
            "num_layers": int(getattr(cfg, "num_hidden_layers", getattr(cfg, "num_layers", 0))),
            "embedding_checksum": round(float(emb[:256].detach().float().abs().mean()), 6),
            "embedding_sha256": embedding_fingerprint(emb),
        }

    def autocast(self):
        """bf16 autocast when ``self.bf16`` (by default on CUDA), else a no-op context (fp32)."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _cast_linear_weights(self) -> torch.Tensor:
        """Store the Linear layers in bf16 once (:func:`store_linear_in_bf16`); returns a bf16
        copy of the output matrix. A tied output layer is the embedding matrix, which stays
        float32 as autocast leaves it, hence the copy."""
        head = self.model.get_output_embeddings()
        store_linear_in_bf16(self.model, keep=head)
        with torch.inference_mode(False), torch.no_grad():
            return head.weight.to(torch.bfloat16)

    def output_weight(self) -> torch.Tensor:
        """The output (unembedding) matrix for label scoring: its bf16 copy when ``self.bf16``."""
        return self._head_bf16 if self._head_bf16 is not None else self.model.get_output_embeddings().weight

    def linear_shapes(self) -> dict[str, list[int]]:
        """Each Llama-style target Linear (``q_proj`` ... ``down_proj``) as [layers, in, out]:
        what weight-space modules are built for (empty for other architectures)."""
        return {t: [len(ls), ls[0].in_features, ls[0].out_features] for t, ls in self._linears.items()}

    # ----------------------------------------------------------------- tokenisation
    def encode(
        self, texts: Sequence[str], template: str, max_input_tokens: int, placement: str = "prefix"
    ) -> EncodedBatch:
        """Template + text token ids with the prompt's slot; only the text is truncated, never the template.

        Args:
            texts: the inputs.
            template: a string holding ``{text}`` once.
            max_input_tokens: each text is cut to this many tokens.
            placement: ``prefix`` (the prompt before everything) or ``suffix`` (after the text,
                before the template's remainder), see ``PLACEMENTS``.

        Returns:
            An :class:`EncodedBatch`; each token list holds ``PROMPT_SLOT`` once.
        """
        if placement not in PLACEMENTS:
            raise InvalidDataError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        if TEXT_FIELD not in template:
            raise InvalidDataError(f"template {template!r} must contain '{TEXT_FIELD}'")
        before, after = template.split(TEXT_FIELD, 1)
        tok = self.tokenizer
        before_ids = tok(before, add_special_tokens=False)["input_ids"] if before else []
        after_ids = tok(after, add_special_tokens=False)["input_ids"] if after else []
        text_ids = tok(list(texts), add_special_tokens=False)["input_ids"]
        truncated = sum(len(t) > max_input_tokens for t in text_ids)
        if truncated:  # one warning per call, however many texts were cut
            warnings.warn(
                f"{truncated} of {len(text_ids)} texts exceed max_input_tokens={max_input_tokens} and were "
                "truncated (the template is kept whole); raise max_input_tokens to keep more text.",
                stacklevel=3,
            )
        if placement == "prefix":
            ids = [[PROMPT_SLOT, *self._prefix_ids, *before_ids, *t[:max_input_tokens], *after_ids] for t in text_ids]
        else:
            ids = [[*self._prefix_ids, *before_ids, *t[:max_input_tokens], PROMPT_SLOT, *after_ids] for t in text_ids]
        return EncodedBatch([seq + self._suffix_ids for seq in ids], truncated)

    def label_token_ids(self, label_names: Sequence[str]) -> list[list[int]]:
        """Token ids of each label's verbalisation (leading space for causal LMs)."""
        prefix = "" if self.is_encoder_decoder else " "
        out = [self.tokenizer(prefix + name, add_special_tokens=False)["input_ids"] for name in label_names]
        for name, ids in zip(label_names, out):
            if not ids:
                raise InvalidDataError(f"label name {name!r} tokenises to nothing; use a non-empty word")
        return out

    # ----------------------------------------------------------------- scoring
    def label_scores(
        self,
        prompts: torch.Tensor | ModuleBatch,
        input_ids: list[list[int]],
        labels: list[list[list[int]]],
    ) -> torch.Tensor:
        """Mean log-probability of each candidate label, per example.

        Args:
            prompts: (B, n, d) one soft prompt per example, or a :class:`ModuleBatch` giving each
                example its own task module (prompts of any length, token offsets, weight changes).
            input_ids: B token lists; the prompt goes at each one's ``PROMPT_SLOT`` (first if none).
            labels: per example, its candidate labels as token lists.

        Returns:
            (B, max labels) scores, -inf for padding.
        """
        batch = prompts if isinstance(prompts, ModuleBatch) else ModuleBatch.of_prompts(prompts)
        if len(input_ids) != len(batch) or len(labels) != len(batch):
            raise InvalidDataError("prompts, input_ids and labels must have the same batch size")
        table = LabelTable.build(labels, self.tokenizer.pad_token_id, self.device)
        with self.applying(batch):
            if self.is_encoder_decoder:
                return self._scores_seq2seq(batch, input_ids, table)
            return self._scores_causal(batch, input_ids, table)

    @contextlib.contextmanager
    def applying(self, batch: ModuleBatch):
        """Autocast, with each row's weight-space changes installed on the LLM's Linears (if any)."""
        if batch.weights is not None and self.is_encoder_decoder:
            raise InvalidDataError("weight-space modules need a Llama-style causal LM")
        with self.autocast():
            if batch.weights is None:
                yield
                return
            self._weights = batch.weights
            try:
                with batch.weights.installed(self._linears):
                    yield
            finally:
                self._weights = None

    def target_token_ids(self, targets: Sequence[str]) -> list[list[int]]:
        """Token ids of each text-to-text answer followed by EOS, which the module learns to emit
        so that generation stops (leading space for causal LMs, as for labels)."""
        if self.eos_token_id is None:
            raise InvalidDataError(f"backbone {self.name!r} has no EOS token, so generated answers could not stop")
        return [ids + [self.eos_token_id] for ids in self.label_token_ids(targets)]

    def embed_with_prompts(
        self, batch: ModuleBatch, input_ids: list[list[int]], left_pad: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, width, d) embeddings with each prompt at its example's slot (and its token offsets
        added), and the attention mask; padding on the left (causal LMs) or the right."""
        emb_layer = self.model.get_input_embeddings()
        parts = [split_at_slot(seq) for seq in input_ids]
        sizes = [len(before) + len(after) for before, after in parts]
        lengths = [p.shape[0] + m for p, m in zip(batch.prompts, sizes)]
        width = max(lengths)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(input_ids), max(sizes)), pad, dtype=torch.long)
        mask = torch.zeros(len(input_ids), width, dtype=torch.long)
        for b, (before, after) in enumerate(parts):
            start = width - lengths[b] if left_pad else 0
            mask[b, start : start + lengths[b]] = 1
            ids[b, : sizes[b]] = torch.tensor(before + after, dtype=torch.long)
        tok_emb = emb_layer(ids.to(self.device))
        filler = tok_emb.new_zeros(width, tok_emb.shape[-1])
        seqs = []
        for b, (before, _) in enumerate(parts):
            start = width - lengths[b] if left_pad else 0
            k, m = len(before), sizes[b]
            tokens = tok_emb[b, :m]
            offsets = batch.offsets[b]
            if offsets is not None:
                if m > offsets.shape[0]:
                    raise InvalidDataError(
                        f"an input has {m} tokens but its task's DePT offsets cover {offsets.shape[0]} positions. "
                        "Fix: lower max_input_tokens or build the task with a larger 'positions' option"
                    )
                tokens = tokens + offsets[:m].to(tokens.dtype)
            prompt = batch.prompts[b].to(device=self.device, dtype=tok_emb.dtype)
            body = torch.cat([tokens[:k], prompt, tokens[k:]], dim=0)
            seqs.append(torch.cat([filler[:start], body, filler[: width - start - body.shape[0]]], dim=0))
        return torch.stack(seqs), mask.to(self.device)

    def _scores_causal(self, batch: ModuleBatch, input_ids: list[list[int]], table: LabelTable) -> torch.Tensor:
        embeds, mask = self.embed_with_prompts(batch, input_ids, left_pad=True)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return self.score_after(embeds, mask, positions, table)

    def score_after(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        table: LabelTable,
        cache: Any | None = None,
    ) -> torch.Tensor:
        """Label scores after running ``embeds`` (left-padded, the last column real for every row).

        Args:
            embeds: (B, S, d) input embeddings.
            mask: (B, C + S) attention mask over ``cache``'s C positions and ``embeds``.
            positions: (B, S) position ids of ``embeds``.
            table: the candidate labels.
            cache: keys and values of C earlier positions (a transformers ``DynamicCache``), or None.

        Returns:
            (B, L) mean log-probability per label, -inf for padding.
        """
        multi = table.max_len > 1
        kwargs = {self._cache_kwarg: cache} if cache is not None else {}
        out = self.model.base_model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=multi or cache is not None,
            **kwargs,
        )
        weight = self.output_weight()
        first = torch.log_softmax((out.last_hidden_state[:, -1] @ weight.T).float(), dim=-1)  # (B, V)
        total = first.gather(1, table.ids[:, :, 0])  # (B, L)
        if multi:
            if cache is None:
                cache = out.cache if hasattr(out, "cache") else out.past_key_values  # renamed in transformers 5
            total = total + self._continuations(cache, mask, table, weight)
        return table.finish(total)

    def _continuations(self, cache: Any, mask: torch.Tensor, table: LabelTable, weight: torch.Tensor) -> torch.Tensor:
        """Summed log-probs of each label's tokens after its first, (B, L), from the prefix's cache.

        Each label needs its own copy of the prefix cache, so the labels go through a few at a
        time: at most ``CONTINUATION_ROWS`` copies exist at once, and the cache is cut back to the
        prefix between passes. All at once, one batch of 16 inputs with 20newsgroups' 20 labels
        took 2.1 GB."""
        B, L, T = table.ids.shape
        prefix = cache.get_seq_length()
        per_pass = max(1, CONTINUATION_ROWS // B)
        parts = []
        for first in range(0, L, per_pass):
            labels = slice(first, min(L, first + per_pass))
            c = labels.stop - labels.start
            cache.batch_repeat_interleave(c)
            cont_in = table.ids[:, labels, :-1].reshape(B * c, T - 1)
            cont_mask = table.token_mask[:, labels, :-1].reshape(B * c, T - 1).long()
            full_mask = torch.cat([mask.repeat_interleave(c, 0), cont_mask], dim=1)
            start = mask.sum(-1).repeat_interleave(c, 0)[:, None]
            cont_pos = start + torch.arange(T - 1, device=self.device)[None, :]
            with self._weights.repeated(c) if self._weights is not None else contextlib.nullcontext():
                hidden = self.model.base_model(
                    input_ids=cont_in,
                    attention_mask=full_mask,
                    position_ids=cont_pos,
                    use_cache=False,
                    **{self._cache_kwarg: cache},
                ).last_hidden_state
            logp = torch.log_softmax((hidden @ weight.T).float(), dim=-1)
            parts.append(logp.gather(2, table.ids[:, labels, 1:].reshape(B * c, T - 1, 1)).reshape(B, c, T - 1))
            if labels.stop < L:  # back to one prefix per input for the next labels
                grown = cache.get_seq_length() - prefix
                if grown > 0:
                    cache.crop(-grown)  # a negative length is what every transformers version accepts
                cache.batch_select_indices(torch.arange(0, B * c, c, device=self.device))
        return (torch.cat(parts, dim=1) * table.token_mask[:, :, 1:]).sum(-1)

    def _scores_seq2seq(self, batch: ModuleBatch, input_ids: list[list[int]], table: LabelTable) -> torch.Tensor:
        embeds, mask = self.embed_with_prompts(batch, input_ids, left_pad=False)
        enc = self.model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        B, L, T = table.ids.shape
        start_id = self.model.config.decoder_start_token_id
        dec_in = torch.cat(
            [torch.full((B, L, 1), start_id, device=self.device, dtype=torch.long), table.ids[:, :, :-1]], dim=2
        )
        logits = self.model(
            encoder_outputs=(enc.repeat_interleave(L, 0),),
            attention_mask=mask.repeat_interleave(L, 0),
            decoder_input_ids=dec_in.reshape(B * L, T),
        ).logits
        logp = torch.log_softmax(logits.float(), dim=-1).gather(2, table.ids.reshape(B * L, T, 1)).reshape(B, L, T)
        return table.finish((logp * table.token_mask).sum(-1))


def load_backbone(
    name: str = DEFAULT_BACKBONE, device: torch.device | str | None = None, bf16: bool | None = None
) -> FrozenLM:
    """Load a frozen LM by offline asset name, local folder, or hub id (fails fast offline).

    ``bf16``: run it under bf16 autocast; None picks :func:`default_bf16` for the device."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    source, kwargs = resolve_model_source(name)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        model_cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = model_cls.from_pretrained(
            source, dtype=torch.float32, use_safetensors=_local_safetensors(source), **kwargs
        )
    except PromptBankError:
        raise
    except Exception as exc:  # a folder without a usable model: one clear error, never a pickle load
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InvalidDataError(
            f"cannot load backbone {name!r} from {source}: {first}. Fix: pass an offline asset name "
            f"({', '.join(OFFLINE_BACKBONES)}), a hub id, or a folder with config.json, tokenizer files and "
            "safetensors weights"
        ) from None
    return FrozenLM(model, tokenizer, name=name, device=device, bf16=bf16)


def _local_safetensors(source: str) -> bool | None:
    """True for a local folder: its weights must be safetensors (never unpickled); hub ids decide themselves."""
    return True if Path(source).is_dir() else None


def count_frozen_grads(module: nn.Module) -> int:
    """Number of LLM parameters holding a gradient (must stay 0)."""
    return sum(p.grad is not None for p in module.parameters())
