"""promptbank: continual learning with a frozen LLM and a bank of tiny per-task prompts."""

from .backbone import FrozenLM, load_backbone
from .bank import BankConfig, Prediction, PromptBank, TaskInfo, UnknownAnswer
from .dept import DePT
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
from .lowrank import LoRA, VeRA
from .prompts import ULPT, LoPT1, LoPT2, PromptTuning, TaskModule, build_prompt
from .scaling import IA3, SSB, SSL
from .trainer import TrainConfig

__version__ = "0.1.0"

__all__ = [
    "AssetMissingError",
    "BackboneMismatchError",
    "BankConfig",
    "BankFormatError",
    "DePT",
    "FrozenLM",
    "HubUnavailableError",
    "IA3",
    "InvalidDataError",
    "LoPT1",
    "LoPT2",
    "LoRA",
    "Prediction",
    "PromptBank",
    "PromptBankError",
    "PromptTuning",
    "SSB",
    "SSL",
    "TaskModule",
    "TaskExistsError",
    "TaskInfo",
    "TrainConfig",
    "ULPT",
    "UnknownAnswer",
    "UnknownTaskError",
    "VeRA",
    "build_prompt",
    "load_backbone",
]
