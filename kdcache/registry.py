"""One registry idiom for every extension point: losses, ops, model kinds, data schemes, statistics,
encodings and the zoo.

Each extension point keeps one :class:`Registry` of its entries by name. A
registry behaves the same everywhere:

* a name is registered once: registering it again raises
  :class:`DuplicateNameError` and changes nothing (cards and run records
  name entries, so one name must keep one meaning);
* an unknown name raises the extension point's own user error (a
  :class:`~kdcache.errors.SpecError`, :class:`~kdcache.errors.LossConfigError`,
  ...) in one line that lists the known names: ``unknown loss 'kdd'; known:
  ce, kd, ...``;
* names keep their registration order (the order listings and docs use).

:meth:`Registry.temporary` restores the entries on exit, so a test can
register a toy entry in-process and leave the registry as it found it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from kdcache.errors import KdcacheError

__all__ = ["DuplicateNameError", "Registry"]

T = TypeVar("T")


class DuplicateNameError(ValueError):
    """A name was registered twice in one registry.

    A programming error of the code that registers (kdcache's or a
    plugin's), raised at import time: deliberately not a
    :class:`~kdcache.errors.KdcacheError`, so it keeps the traceback that
    points at the second registration.
    """


class Registry(Generic[T]):
    """Entries of one extension point by name (see the module docstring).

    ``what`` names an entry in messages (``"loss"``, ``"model spec kind"``);
    ``error`` is the user error an unknown name raises; ``check_name``, if
    given, refuses a name unfit for the extension point (it raises).
    """

    def __init__(self, what: str, error: type[Exception] = KdcacheError,
                 check_name: Callable[[str], None] | None = None) -> None:
        self.what = what
        self.error = error
        self._check_name = check_name
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` and return it; a taken name raises :class:`DuplicateNameError`."""
        if self._check_name is not None:
            self._check_name(name)
        if name in self._entries:
            old = self._entries[name]
            by = getattr(old, "__module__", None) or type(old).__module__
            raise DuplicateNameError(f"{self.what} {name!r} is already registered (by {by}); pick another name")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str | None = None, key: Callable[[T], str] | None = None) -> Callable[[T], T]:
        """A decorator registering what it decorates under ``name`` (or ``key(entry)``)."""

        def decorate(entry: T) -> T:
            self.add(name if name is not None else key(entry) if key is not None else entry.__name__, entry)  # type: ignore[attr-defined]
            return entry

        return decorate

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its entry (an unknown name raises as :meth:`get` does)."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    def get(self, name: str, where: str = "") -> T:
        """The entry registered as ``name``; an unknown name raises :meth:`unknown`."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name, where) from None

    def unknown(self, name: object, where: str = "", hint: str = "") -> Exception:
        """The one-line error for an unknown ``name``: ``[where: ]unknown <what> 'x'; known: a, b[hint]``."""
        prefix = f"{where}: " if where else ""
        return self.error(f"{prefix}unknown {self.what} {name!r}; known: {', '.join(self._entries)}{hint}")

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> list[T]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    @contextmanager
    def temporary(self) -> Iterator[Registry[T]]:
        """Within the block, registrations may be added or removed; on exit the entries are as before."""
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries.clear()
            self._entries.update(saved)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"
