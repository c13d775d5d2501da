"""The router interface: what every routing strategy offers the bank, and the per-row
grouping of neighbour tables that the FAISS-backed strategies share.

Every input is routed on its own. ``Routing.closeness`` says how near an input is to its
chosen task in the strategy's own units; below ``unknown_threshold`` the input gets -1.
State is a JSON-able config plus named numeric arrays (a FAISS index travels as its
serialised bytes), never pickle, so a bank can store it in safetensors.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..errors import (
    BankFormatError,
    InvalidDataError,
    TaskExistsError,
    UnknownTaskError,
)
from ..keys import check_keys
from ..registry import Registry

C = TypeVar("C", bound="RouterConfig")

#: A FAISS id is ``task_id << TASK_SHIFT | j``: the task is read back from the id itself.
TASK_SHIFT = 20
MAX_KEYS_PER_TASK = 1 << TASK_SHIFT
MAX_TASK_ID = (1 << (63 - TASK_SHIFT)) - 1

#: Every routing strategy, by the name banks and configs use for it.
ROUTERS: Registry[type[Router]] = Registry("routing strategy")


@dataclass
class Routing:
    """Per-input routing decision plus the best few candidate tasks, best first.

    ``scores`` and ``candidate_scores`` are confidences in [0, 1] (share of the vote for
    k-NN, posterior probability for Gaussian). ``closeness`` measures distance to the
    chosen candidate in the strategy's own units and is what ``unknown_threshold`` tests.
    Missing candidates are -1 with score 0. Unknown inputs keep their candidates so a
    caller can still re-score them.
    """

    task_ids: np.ndarray  # (N,) int64, -1 = unknown
    scores: np.ndarray  # (N,) float32
    candidates: np.ndarray  # (N, top) int64
    candidate_scores: np.ndarray  # (N, top) float32
    closeness: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.task_ids)


@dataclass
class RouterConfig:
    """Options every router has; each strategy subclasses this with its own fields.

    A config is the whole of a router's settings: ``Router.state()`` saves it field by field
    and ``from_state`` reads the same fields back, so a new option needs no save/load code.

    Args:
        dim: key dimension (the key encoder's ``dim``).
        unknown_threshold: inputs whose ``closeness`` to their chosen task is below this are
            routed to -1 ("unknown"); ``None`` routes every input to some task.
    """

    dim: int
    unknown_threshold: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.dim, bool) or not isinstance(self.dim, (int, np.integer)) or int(self.dim) < 1:
            raise InvalidDataError(f"key dimension must be an integer >= 1, got {self.dim!r}")
        self.dim = int(self.dim)
        if self.unknown_threshold is not None:
            self.unknown_threshold = float(self.unknown_threshold)

    @classmethod
    def from_options(cls: type[C], **options: Any) -> C:
        """The config for keyword options, with one clear error for an option it lacks."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise InvalidDataError(f"unknown option(s) {unknown} for {cls.__name__}; valid: {', '.join(names)}")
        return cls(**options)

    @classmethod
    def from_state(cls: type[C], state: dict[str, Any], **legacy_defaults: Any) -> C:
        """The config fields of a saved router state (its other keys are runtime state).

        ``legacy_defaults`` fill fields that states written before the field existed lack.
        """
        given = {**legacy_defaults, **state}
        try:
            return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})
        except (TypeError, InvalidDataError) as exc:
            raise BankFormatError(f"the saved {cls.__name__} is not valid: {exc}") from None


class Router(ABC):
    """Task-key router: add/remove tasks, route inputs, export state as arrays.

    Build one with :func:`promptbank.routing.make_router` (by name) or directly from its
    config class or keyword options: ``LDARouter(LDAConfig(dim=384))`` or ``LDARouter(dim=384)``.
    """

    strategy: ClassVar[str]
    config_class: ClassVar[type[RouterConfig]] = RouterConfig

    def __init__(self, config: RouterConfig | None = None, **options: Any) -> None:
        if config is None:
            config = self.config_class.from_options(**options)
        elif options:
            raise InvalidDataError("give a router either a config or keyword options, not both")
        if not isinstance(config, self.config_class):
            raise InvalidDataError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    @property
    def dim(self) -> int:
        """Key dimension."""
        return self.config.dim

    @property
    def unknown_threshold(self) -> float | None:
        """Closeness below which an input is routed to -1 (see :class:`RouterConfig`)."""
        return self.config.unknown_threshold

    @unknown_threshold.setter
    def unknown_threshold(self, value: float | None) -> None:
        self.config.unknown_threshold = None if value is None else float(value)

    def config_state(self) -> dict[str, Any]:
        """The JSON-able part of ``state()`` that the config owns: strategy name and fields."""
        return {"strategy": self.strategy, **asdict(self.config)}

    # -- interface ---------------------------------------------------------------------
    @abstractmethod
    def add_task(self, task_id: int, keys: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Index a new task from its raw per-input keys (and optional class labels)."""

    def add_task_blocks(self, task_id: int, blocks: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> None:
        """Index a new task from its keys given a block of rows at a time, each block with its
        labels (or None). Routers that keep only statistics (``gaussian``, ``lda``) hold one
        block at a time, so a task's keys never need to be in memory at once; the others
        gather the blocks and call :meth:`add_task`."""
        pairs = list(blocks)
        labels = [lab for _, lab in pairs]
        if not pairs:
            raise InvalidDataError("a task needs at least one key; got no blocks of keys")
        if any(lab is None for lab in labels) and any(lab is not None for lab in labels):
            raise InvalidDataError("give labels with every block of keys, or with none")
        self.add_task(
            task_id, np.concatenate([k for k, _ in pairs]), None if labels[0] is None else np.concatenate(labels)
        )

    @abstractmethod
    def remove_task(self, task_id: int) -> None:
        """Forget a task; its inputs can no longer be routed to it."""

    def merge(self, other: Router, id_map: dict[int, int]) -> None:
        """Add every task of ``other`` (same strategy and config) under a new id, from its
        statistics alone: the keys are not needed again. The result routes like a router that
        had ``other``'s tasks added after its own (the Gaussian/LDA scatters are sums, so up to
        float32 rounding; a k-NN index stores the same summary vectors).

        Args:
            other: the router whose tasks are added; it is not changed.
            id_map: ``other``'s task id -> the id it gets here (one entry per task of ``other``).

        Raises:
            InvalidDataError: another strategy or config, or ``id_map`` does not cover ``other``'s tasks.
            TaskExistsError: a new id is already taken here.
        """
        mine, theirs = self.config_state(), other.config_state()
        for state in (mine, theirs):
            state.pop("unknown_threshold")  # a calibration of one bank, not part of the model
        if mine != theirs:
            raise InvalidDataError(
                f"cannot merge routers with different configs: {mine} vs {theirs}; "
                "build both banks with the same router options"
            )
        if sorted(id_map) != sorted(other.task_ids()):
            raise InvalidDataError("id_map must give a new id to every task of the other router, and only those")
        targets = [self._check_new(t) for t in id_map.values()]
        if len(set(targets)) != len(targets):
            raise InvalidDataError("id_map gives two tasks the same new id")
        self._absorb(other, id_map)

    @abstractmethod
    def _absorb(self, other: Router, id_map: dict[int, int]) -> None:
        """``merge`` after its checks: take over ``other``'s per-task state under the new ids."""

    @abstractmethod
    def task_ids(self) -> list[int]:
        """Known task ids, in the order they were added."""

    @abstractmethod
    def __contains__(self, task_id: object) -> bool:
        """Whether ``task_id`` is routed to (O(1), unlike ``task_ids()``)."""

    @abstractmethod
    def _candidates(self, queries: np.ndarray, top: int) -> tuple[np.ndarray, ...]:
        """(candidates, candidate_scores, closeness of the best) for non-empty routers."""

    @abstractmethod
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able config and named numeric arrays that rebuild this router exactly."""

    @classmethod
    @abstractmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Router:
        """Inverse of :meth:`state`."""

    # -- shared behaviour ----------------------------------------------------------------
    def route(self, queries: np.ndarray, top: int = 3) -> Routing:
        """Route every query on its own; an empty router marks everything unknown."""
        if int(top) < 1:
            raise InvalidDataError(f"top must be >= 1, got {top}")
        top = int(top)
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise InvalidDataError(
                f"queries must be an (N, {self.dim}) array of keys, got shape {q.shape}; "
                "encode them with the key encoder the router was built with"
            )
        n = len(q)
        if n == 0 or len(self) == 0:
            return Routing(
                task_ids=np.full(n, -1, np.int64),
                scores=np.zeros(n, np.float32),
                candidates=np.full((n, top), -1, np.int64),
                candidate_scores=np.zeros((n, top), np.float32),
                closeness=np.full(n, -np.inf, np.float32),
            )
        cand, cand_scores, closeness = self._candidates(check_keys(q, self.dim), top)
        closeness = closeness.astype(np.float32)  # compare at the precision callers calibrate on
        task_ids = cand[:, 0].copy()
        if self.unknown_threshold is not None:
            task_ids[closeness < self.unknown_threshold] = -1
        return Routing(
            task_ids=task_ids,
            scores=cand_scores[:, 0].astype(np.float32),
            candidates=cand,
            candidate_scores=cand_scores.astype(np.float32),
            closeness=closeness.astype(np.float32),
        )

    def nbytes_per_task(self) -> float:
        """Bytes of routing state (config JSON + arrays) per task, the bank's cost metric."""
        config, arrays = self.state()
        total = len(json.dumps(config)) + sum(a.nbytes for a in arrays.values())
        return total / max(len(self.task_ids()), 1)

    def __len__(self) -> int:
        return len(self.task_ids())

    def _check_new(self, task_id: int) -> int:
        if isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)):
            raise InvalidDataError(f"task ids are integers, got {task_id!r}")
        tid = int(task_id)
        if not 0 <= tid <= MAX_TASK_ID:
            raise InvalidDataError(f"task id must be in [0, {MAX_TASK_ID}], got {tid}")
        if tid in self:
            raise TaskExistsError(f"task {tid} is already in the router; remove it first to replace it")
        return tid

    def _check_known(self, task_id: int) -> int:
        tid = int(task_id)
        if tid not in self:
            raise UnknownTaskError(f"task {tid} is not in the router (known: {self.task_ids()[:20]})")
        return tid

    def _check_labels(self, labels: np.ndarray | None, n: int) -> np.ndarray | None:
        if labels is None:
            return None
        lab = np.asarray(labels)
        if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
            raise InvalidDataError(
                f"labels must be {n} integer class indices (one per key), got shape {lab.shape} dtype {lab.dtype}"
            )
        return lab.astype(np.int64)


# -- per-row grouping of neighbours by task ------------------------------------------------


def group_neighbours(tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group the (row, task) pairs of an (N, K) neighbour table; -1 entries are ignored.

    Returns the flat element order (sorted by row then task), the start of each group in
    that order, and each group's row and task.
    """
    n, k = tasks.shape
    # a stable sort within each row (-1 first, then dropped): the order a lexsort by (row,
    # task) gives, at a quarter of its time for 256 x 32 neighbours
    order = (np.argsort(tasks, axis=1, kind="stable") + (np.arange(n) * k)[:, None]).ravel()
    t = tasks.ravel()[order]
    keep = t >= 0
    order, t = order[keep], t[keep]
    r = order // k
    new = np.ones(len(order), dtype=bool)
    new[1:] = (r[1:] != r[:-1]) | (t[1:] != t[:-1])
    starts = np.flatnonzero(new)
    return order, starts, r[starts], t[starts]


def rank_candidates(n: int, seg_row: np.ndarray, primary: np.ndarray, secondary: np.ndarray, top: int) -> np.ndarray:
    """(N, top) indices of each row's best groups (by primary, then secondary); -1 pads."""
    counts = np.bincount(seg_row, minlength=n)
    first = np.cumsum(counts) - counts
    pos = np.arange(len(seg_row)) - first[seg_row]
    width = max(int(counts.max(initial=0)), top)
    p = np.full((n, width), -np.inf)
    s = np.full((n, width), -np.inf)
    g = np.full((n, width), -1, dtype=np.int64)
    p[seg_row, pos] = primary
    s[seg_row, pos] = secondary
    g[seg_row, pos] = np.arange(len(seg_row))
    best = np.lexsort((-s, -p), axis=1)[:, :top]
    return np.take_along_axis(g, best, axis=1)


def task_margin(seg_row: np.ndarray, task_logit: np.ndarray, near: np.ndarray, terms: np.ndarray) -> np.ndarray:
    """Per row: its best group's ``task_logit`` less the runner-up group's (the "margin" novelty).

    A row with one group only is compared with its weakest ``terms`` entry (N, K): the runner-up
    lies beyond the row's K neighbours, so its log-likelihood is at most about that."""
    n = len(terms)
    two = rank_candidates(n, seg_row, task_logit, near, 2)
    best = pick_rows(task_logit, two[:, :1], -np.inf)[:, 0]
    runner = pick_rows(task_logit, two[:, 1:], np.nan)[:, 0]
    alone = np.isnan(runner)
    runner[alone] = terms[alone].min(axis=1)
    return best - runner


def pick_rows(values: np.ndarray, chosen: np.ndarray, fill: float) -> np.ndarray:
    """values[chosen] with ``fill`` where chosen is -1."""
    out = np.full(chosen.shape, fill, dtype=np.float64)
    ok = chosen >= 0
    out[ok] = values[chosen[ok]]
    return out


# -- strategy 1: k-NN vote over summary keys -----------------------------------------------
