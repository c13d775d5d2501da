"""One way to name the library's extension points: prompt methods, routers and key encoders.

Each extension point is a :class:`Registry`; a new kind plugs in with a decorator on its
class (or factory) and is then buildable by name from configs, banks and the command line::

    from promptbank.routing import ROUTERS, Router

    @ROUTERS.register("my-router")
    class MyRouter(Router):
        ...

Names are unique per registry (registering one twice is an error, not a silent override),
and asking for an unknown name gives one error that lists the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import InvalidDataError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> class (or factory) table for one extension point.

    Args:
        kind: what the entries are, for error messages ("router", "prompt method", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that adds ``obj`` under ``name``.

        Args:
            name: the public name, as written in configs, manifests and CLI flags.

        Returns:
            The decorator; it returns the object unchanged.

        Raises:
            ValueError: ``name`` is already registered (a programming error, not bad input).
        """

        def add(obj: T) -> T:
            if name in self._entries or name in self._aliases:
                first = self._entries.get(name, f"an alias of {self._aliases.get(name)!r}")
                raise ValueError(f"{self.kind} {name!r} is registered twice ({first!r} and {obj!r})")
            self._entries[name] = obj
            return obj

        return add

    def alias(self, name: str, of: str) -> None:
        """Let ``name`` stand for the entry ``of`` (the same object, not a copy; ``names()`` lists ``of`` only).

        Raises:
            ValueError: ``name`` is taken or ``of`` is not registered.
        """
        if name in self._entries or name in self._aliases or of not in self._entries:
            raise ValueError(f"{self.kind} alias {name!r} -> {of!r}: the name is taken or the target unknown")
        self._aliases[name] = of

    def aliases(self) -> dict[str, str]:
        """Alias -> registered name."""
        return dict(self._aliases)

    def get(self, name: str) -> T:
        """The entry called ``name`` (or that an alias ``name`` stands for).

        Raises:
            InvalidDataError: no entry has that name; the message lists the valid names.
        """
        try:
            return self._entries[self._aliases.get(name, name)]
        except (KeyError, TypeError):
            raise InvalidDataError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}") from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs, in registration order."""
        return list(self._entries.items())

    def values(self) -> list[T]:
        """Entries, in registration order."""
        return list(self._entries.values())

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
