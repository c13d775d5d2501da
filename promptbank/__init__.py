"""promptbank: continual learning with a frozen LLM and a bank of tiny per-task prompts."""

import os

# Must run before torch and faiss load: each wheel ships its own copy of libgomp, and after
# every parallel region libgomp's idle workers busy-wait for GOMP_SPINCOUNT PAUSE loops
# (300,000 by default, ~20 ms on recent Xeons) before they sleep. A route alternates torch
# (whitening, coarse step) and faiss (list scan), so on few cores one runtime's spinning
# workers take the cores the other is computing on. With 10,000 the batched lda route at
# 100k tasks (960-d, two threads) took 55.5 instead of 69.8 us per query (BENCHMARKS.md
# section 2, "2026-11-30, late night"); the LLM paths did not move. A value already in the
# environment is kept. Imported after torch or faiss, promptbank cannot change that runtime.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from .backbone import FrozenLM, load_backbone
from .bank import BankConfig, Prediction, PromptBank, TaskInfo
from .errors import (
    AssetMissingError,
    BackboneMismatchError,
    BankFormatError,
    HubUnavailableError,
    InvalidDataError,
    PromptBankError,
    TaskExistsError,
    UnknownTaskError,
)
from .prompts import ULPT, LoPT1, LoPT2, PromptTuning, build_prompt
from .trainer import TrainConfig

__version__ = "0.1.0"

__all__ = [
    "AssetMissingError", "BackboneMismatchError", "BankConfig", "BankFormatError", "FrozenLM", "HubUnavailableError",
    "InvalidDataError", "LoPT1", "LoPT2", "Prediction", "PromptBank", "PromptBankError", "PromptTuning", "TaskExistsError",
    "TaskInfo", "TrainConfig", "ULPT", "UnknownTaskError", "build_prompt", "load_backbone",
]
