"""Route each input to a task by its key, with tasks that can be added and removed.

Routing mistakes are the only source of forgetting in promptbank, so the strategies share
one interface (:class:`Router`) and one registry (:data:`ROUTERS`):

* ``lda`` (default, :class:`LDARouter`): class means per task and the exact pooled
  within-class covariance; closed-form linear discriminant analysis.
* ``gaussian`` (:class:`GaussianRouter`): the same model with each task's scatter kept as a
  low-rank + diagonal factor, so removal subtracts it exactly.
* ``knn`` (:class:`KNNRouter`): a FAISS inner-product index over a few summary keys per
  task; the nearest keys vote.

A new strategy subclasses :class:`Router`, declares a :class:`RouterConfig` subclass as its
``config_class``, and registers itself with ``@ROUTERS.register("name")``
(docs/architecture.md, "Add a router").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BankFormatError, InvalidDataError
from .base import (
    MAX_KEYS_PER_TASK,
    MAX_TASK_ID,
    ROUTERS,
    TASK_SHIFT,
    Router,
    RouterConfig,
    Routing,
)
from .gaussian import GaussianConfig, GaussianRouter
from .knn import KNNConfig, KNNRouter
from .lda import LDAConfig, LDARouter

DEFAULT_ROUTER = "lda"


def make_router(strategy: str = DEFAULT_ROUTER, *, dim: int, **options: Any) -> Router:
    """A new, empty router.

    Args:
        strategy: a name in :data:`ROUTERS` ("lda", "gaussian", "knn").
        dim: the key dimension (the key encoder's ``dim``).
        **options: fields of the strategy's config class (e.g. ``nprobe=4`` for ``lda``).

    Returns:
        The router.

    Raises:
        InvalidDataError: unknown strategy, unknown option, or an option out of range.

    Example:
        >>> router = make_router("lda", dim=384, nprobe=4)
    """
    cls = ROUTERS.get(strategy)
    return cls(cls.config_class.from_options(dim=dim, **options))


def router_from_state(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Router:
    """Rebuild a router saved with ``Router.state()``, whatever its strategy.

    Raises:
        BankFormatError: the state names no known strategy or does not match its arrays.
    """
    strategy = config.get("strategy")
    if strategy not in ROUTERS:
        raise BankFormatError(f"router state has unknown strategy {strategy!r}; known: {', '.join(ROUTERS.names())}")
    try:
        return ROUTERS.get(strategy).from_state(config, arrays)
    except BankFormatError:
        raise
    except Exception as exc:  # a damaged index, or arrays that do not match the config
        raise BankFormatError(
            f"the {strategy} router state cannot be rebuilt ({type(exc).__name__}: {exc}). Fix: restore the bank from a copy"
        ) from None


__all__ = [
    "DEFAULT_ROUTER",
    "GaussianConfig",
    "GaussianRouter",
    "InvalidDataError",
    "KNNConfig",
    "KNNRouter",
    "LDAConfig",
    "LDARouter",
    "MAX_KEYS_PER_TASK",
    "MAX_TASK_ID",
    "ROUTERS",
    "Router",
    "RouterConfig",
    "Routing",
    "TASK_SHIFT",
    "make_router",
    "router_from_state",
]
