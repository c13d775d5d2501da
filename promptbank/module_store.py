"""Each task's stored trainable tensors, and the expanded modules of the tasks used most recently.

The stored tensors are what a save writes and what predictions use, in the bank's storage dtype.
A task's ``Applied`` module (its prompt matrix, offsets, weight changes) is rebuilt from them on
first use and kept in a :class:`~promptbank.matrix_cache.MatrixCache`; the same tensors through
the same module give the same result bit for bit, so an evicted one is rebuilt exactly.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from .matrix_cache import MatrixCache
from .module_batch import Applied
from .prompts import TaskModule, prompt_from_config


class ModuleStore:
    """Trainable tensors by task name, and their expanded modules on ``device``.

    Args:
        device: where expanded modules live (the LLM's device).
        dtype: the storage dtype of the trainable tensors.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype
        self.states: dict[str, dict[str, torch.Tensor]] = {}
        self.cache = MatrixCache()
        self._builders: dict[str, TaskModule] = {}  # one per module config: its frozen buffers are shared

    def put(self, name: str, state: dict[str, torch.Tensor]) -> None:
        """Store a task's tensors in the storage dtype (its expanded module is rebuilt at first use)."""
        self.states[name] = {k: v.detach().cpu().to(self.dtype).contiguous() for k, v in state.items()}
        self.cache.drop(name)

    def drop(self, name: str) -> None:
        self.states.pop(name, None)
        self.cache.drop(name)

    def applied(self, name: str, module: dict[str, Any]) -> Applied:
        """The expanded module of task ``name``, whose ``config_state()`` is ``module``."""
        applied = self.cache.get(name)
        if applied is None:
            key = json.dumps({k: v for k, v in module.items() if k != "seed"}, sort_keys=True)
            if key not in self._builders:
                self._builders[key] = prompt_from_config(module).to(self.device)
            builder = self._builders[key]
            builder.load_trainable_state({k: v.float() for k, v in self.states[name].items()})
            with torch.no_grad():
                applied = builder.applied().frozen(self.device)
            self.cache.put(name, applied)
        return applied
