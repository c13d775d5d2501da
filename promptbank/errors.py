"""One exception family, so callers can catch every promptbank refusal with one clause.

Every message names the problem *and* the fix.
"""


class PromptBankError(Exception):
    """Base class for every error promptbank raises on purpose."""


class InvalidDataError(PromptBankError, ValueError):
    """Task data that cannot be trained on or predicted (empty, one class, unknown labels...)."""


class AssetMissingError(PromptBankError, FileNotFoundError):
    """An offline asset package (model or dataset) is not installed."""


class HubUnavailableError(PromptBankError, ConnectionError):
    """A Hugging Face hub name was given but the hub cannot be reached."""


class BankFormatError(PromptBankError):
    """A bank directory is missing files, damaged, or from an unknown schema version."""


class BackboneMismatchError(PromptBankError):
    """A bank was built on a different frozen LLM than the one it is loaded against."""


class TaskExistsError(PromptBankError, KeyError):
    """A task name is already in the bank."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnknownTaskError(PromptBankError, KeyError):
    """A task name that is not in the bank."""

    def __str__(self) -> str:
        return str(self.args[0])
