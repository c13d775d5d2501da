"""A task's prompt as a PEFT prompt-tuning adapter, and a PEFT prompt-tuning adapter as a prompt.

PEFT prompt tuning prepends ``prompt_embeddings`` (n x d) to the input's embeddings, which is
this library's ``prefix`` placement. Any prompt method exports: its (n, d) matrix is computed
once and written as that one tensor, so ``PeftModel.from_pretrained(base_model, folder)`` answers
like the bank (ULPT's factors do not survive: the file holds the expanded matrix). The reverse
reads such an adapter's matrix, which a ``pt`` bank can hold as a task's prompt.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .backbone import FrozenLM
from .errors import BankFormatError, InvalidDataError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
WEIGHTS_KEY = "prompt_embeddings"


def adapter_config(backbone: FrozenLM, n_tokens: int) -> dict[str, Any]:
    """The minimal ``adapter_config.json`` PEFT's loaders accept for a prompt-tuning adapter."""
    cfg = backbone.model.config
    return {
        "peft_type": "PROMPT_TUNING",
        "task_type": "SEQ_2_SEQ_LM" if backbone.is_encoder_decoder else "CAUSAL_LM",
        "num_virtual_tokens": int(n_tokens),
        "token_dim": backbone.hidden_size,
        "num_transformer_submodules": 1,
        "num_attention_heads": int(getattr(cfg, "num_attention_heads", getattr(cfg, "num_heads", 0))),
        "num_layers": int(getattr(cfg, "num_hidden_layers", getattr(cfg, "num_layers", 0))),
        "prompt_tuning_init": "RANDOM",
        "base_model_name_or_path": getattr(cfg, "_name_or_path", None) or backbone.name,
        "inference_mode": True,
        "revision": None,
        "tokenizer_name_or_path": None,
        "prompt_tuning_init_text": None,
    }


def check_prefix(placement: str, fix: str) -> None:
    """PEFT prompt tuning prepends its prompt: a prompt placed elsewhere would answer differently there."""
    if placement != "prefix":
        raise InvalidDataError(
            f"PEFT prompt tuning puts the prompt before the input; this bank's placement is {placement!r}, so its "
            f"prompts would answer differently there. Fix: {fix}"
        )


#: Kinds whose whole effect is a soft prompt: the ones a PEFT prompt-tuning adapter holds.
PROMPT_ONLY_KINDS = ("pt", "ulpt", "lopt1", "lopt2")


def check_exportable(module: dict[str, Any]) -> None:
    """Refuse a task whose module is more than a soft prompt (DePT offsets, weight-space kinds)."""
    if module.get("method") not in PROMPT_ONLY_KINDS:
        raise InvalidDataError(
            f"a {module.get('method')!r} task cannot be written as a PEFT prompt-tuning adapter; "
            f"export tasks of the prompt-only kinds {', '.join(PROMPT_ONLY_KINDS)}"
        )


def pt_state(folder: str | Path, backbone: FrozenLM, config: Any) -> dict[str, torch.Tensor]:
    """An adapter's prompt as the trainable state of a ``pt`` prompt of a bank with ``config``.

    Raises:
        InvalidDataError: the bank does not hold prefix ``pt`` prompts of the adapter's length.
        BankFormatError: not a readable prompt-tuning adapter for this backbone.
    """
    matrix = read_adapter(folder, backbone)
    if config.method != "pt" or config.placement != "prefix" or matrix.shape[0] != config.n_tokens:
        raise InvalidDataError(
            f"{folder} holds a {matrix.shape[0]}-token prompt-tuning prompt; this bank holds {config.n_tokens}-token "
            f"{config.method!r} prompts placed {config.placement!r}. Fix: import into "
            f"PromptBank(method='pt', n_tokens={matrix.shape[0]}, placement='prefix')"
        )
    return {"weight": matrix}


def write_adapter(matrix: torch.Tensor, backbone: FrozenLM, out: str | Path) -> Path:
    """Write ``matrix`` (n, d) as a PEFT prompt-tuning adapter folder, atomically.

    Args:
        matrix: the prompt, placed before the input.
        backbone: the frozen LLM it was trained on (its config fills the adapter's).
        out: the folder to write; it must not exist yet.

    Returns:
        The folder.

    Raises:
        InvalidDataError: ``out`` exists, or the matrix does not fit the backbone.
    """
    out = Path(out)
    if out.exists():
        raise InvalidDataError(f"{out} already exists; Fix: pass a new folder (an export never overwrites)")
    if matrix.ndim != 2 or matrix.shape[1] != backbone.hidden_size:
        raise InvalidDataError(f"a prompt for this backbone is (n, {backbone.hidden_size}), got {tuple(matrix.shape)}")
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = adapter_config(backbone, matrix.shape[0])
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    weights = matrix.detach().to("cpu", torch.float32).contiguous()
    save_file({WEIGHTS_KEY: weights}, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
    os.replace(tmp, out)
    return out


def read_adapter(folder: str | Path, backbone: FrozenLM) -> torch.Tensor:
    """The (n, d) prompt of a PEFT prompt-tuning adapter folder trained for ``backbone``.

    Raises:
        BankFormatError: not a prompt-tuning adapter, or its shape does not fit the backbone.
    """
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        weights = load_file(folder / WEIGHTS_FILE)
    except (OSError, ValueError) as exc:
        raise BankFormatError(
            f"{folder}: not a readable PEFT adapter ({exc}); Fix: pass a folder holding {CONFIG_FILE} and {WEIGHTS_FILE}"
        ) from None
    if config.get("peft_type") != "PROMPT_TUNING" or WEIGHTS_KEY not in weights:
        raise BankFormatError(
            f"{folder}: a {config.get('peft_type')!r} adapter; only PROMPT_TUNING adapters become prompts"
        )
    matrix = weights[WEIGHTS_KEY].float()
    if matrix.ndim != 2 or matrix.shape[1] != backbone.hidden_size:
        raise BankFormatError(
            f"{folder}: prompt_embeddings is {tuple(matrix.shape)}, this backbone needs (n, {backbone.hidden_size})"
        )
    return matrix
