"""promptbank: continual learning with a frozen LLM and a bank of tiny per-task prompts."""

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
    "AssetMissingError",
    "BackboneMismatchError",
    "BankConfig",
    "BankFormatError",
    "FrozenLM",
    "HubUnavailableError",
    "InvalidDataError",
    "LoPT1",
    "LoPT2",
    "Prediction",
    "PromptBank",
    "PromptBankError",
    "PromptTuning",
    "TaskExistsError",
    "TaskInfo",
    "TrainConfig",
    "ULPT",
    "UnknownTaskError",
    "build_prompt",
    "load_backbone",
]
