"""The expanded prompt matrices of the most recently used tasks.

A task stores only its trainable tensors (a ULPT state is a few hundred bytes); the (n, d)
matrix its inputs receive is 20x larger (46 KB at n=20, d=576), so keeping one per task would
make memory grow with the bank (4.6 GB at 100k tasks). The bank rebuilds a matrix from the
stored tensors when needed and keeps the ``size`` most recently used ones here.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from .errors import InvalidDataError

DEFAULT_SIZE = 256


class MatrixCache:
    """A least-recently-used map from task name to prompt matrix, holding at most ``size``."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._held: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.size = size

    @property
    def size(self) -> int:
        return self._size

    @size.setter
    def size(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidDataError(f"the matrix cache holds at least one matrix, got size={size!r}")
        self._size = size
        self._evict()

    def get(self, name: str) -> torch.Tensor | None:
        """The cached matrix of ``name`` (now the most recently used), or None."""
        matrix = self._held.get(name)
        if matrix is not None:
            self._held.move_to_end(name)
        return matrix

    def put(self, name: str, matrix: torch.Tensor) -> None:
        """Cache ``matrix`` for ``name``, evicting the least recently used beyond ``size``."""
        self._held[name] = matrix
        self._held.move_to_end(name)
        self._evict()

    def drop(self, name: str) -> None:
        """Forget ``name``'s matrix (its prompt changed or the task was removed)."""
        self._held.pop(name, None)

    def names(self) -> list[str]:
        """Tasks whose matrix is held, least recently used first."""
        return list(self._held)

    def nbytes(self) -> int:
        """Memory the held matrices take."""
        return sum(m.numel() * m.element_size() for m in self._held.values())

    def _evict(self) -> None:
        while len(self._held) > self._size:
            self._held.popitem(last=False)
