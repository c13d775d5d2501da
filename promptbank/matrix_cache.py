"""The expanded modules (``Applied``: prompt matrix, offsets, weight changes) of the most recently used tasks.

A task stores only its trainable tensors (a ULPT state is a few hundred bytes); the (n, d)
matrix its inputs receive is 20x larger (46 KB at n=20, d=576), so keeping one per task would
make memory grow with the bank (4.6 GB at 100k tasks). The bank rebuilds a task's module from
the stored tensors when needed and keeps the ``size`` most recently used ones here, within
``max_bytes`` (a LoRA module on every Linear is MBs).
"""

from __future__ import annotations

from collections import OrderedDict

from .errors import InvalidDataError
from .module_batch import Applied

DEFAULT_SIZE = 256
DEFAULT_MAX_BYTES = 1 << 30


class MatrixCache:
    """A least-recently-used map from task name to its expanded module, holding at most ``size``
    of them and at most ``max_bytes`` (the most recent one is always kept)."""

    def __init__(self, size: int = DEFAULT_SIZE, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._held: OrderedDict[str, Applied] = OrderedDict()
        self._bytes = 0
        self.max_bytes = max_bytes
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

    def get(self, name: str) -> Applied | None:
        """The cached matrix of ``name`` (now the most recently used), or None."""
        matrix = self._held.get(name)
        if matrix is not None:
            self._held.move_to_end(name)
        return matrix

    def put(self, name: str, matrix: Applied) -> None:
        """Cache ``matrix`` for ``name``, evicting the least recently used beyond the bounds."""
        self.drop(name)
        self._held[name] = matrix
        self._bytes += matrix.nbytes()
        self._evict()

    def drop(self, name: str) -> None:
        """Forget ``name``'s matrix (its prompt changed or the task was removed)."""
        held = self._held.pop(name, None)
        if held is not None:
            self._bytes -= held.nbytes()

    def names(self) -> list[str]:
        """Tasks whose matrix is held, least recently used first."""
        return list(self._held)

    def nbytes(self) -> int:
        """Memory the held matrices take."""
        return self._bytes

    def _evict(self) -> None:
        while len(self._held) > self._size or (len(self._held) > 1 and self._bytes > self.max_bytes):
            _, held = self._held.popitem(last=False)
            self._bytes -= held.nbytes()
