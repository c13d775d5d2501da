"""promptbank: continual learning with a frozen LLM and a bank of tiny per-task prompts."""

import os

# Before torch and faiss load their OpenMP runtimes (two copies of libgomp): after each
# parallel region libgomp's idle workers busy-wait for 300,000 PAUSE loops by default,
# milliseconds on recent Xeons, so one runtime's spinning workers take the cores the other is
# computing on. A route alternates torch (whitening, coarse step) and faiss (list scan); on 2
# cores the shorter spin took the batched lda route at 100k tasks from 77 to 55-63 us per
# query (BENCHMARKS.md section 2). A value already in the environment is kept; with torch or
# faiss imported before promptbank it no longer applies to that runtime.
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
