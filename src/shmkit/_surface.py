"""Parts of the public surface that several classes share, written once: the same
methods with the same meaning on a local object and on its Redis twin, or on every
handle of one kind.  Each section says which classes use it.

Bottom layer (imports only ``_types``); see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ._types import Key

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LiveItems", "LiveValues", "serializer_by_name", "serializer_from_name",
           "CounterOperators", "ClosingHandle", "LateBound"]

_MISSING = object()


# -- dicts: Dict and RedisDict ------------------------------------------------------------------

class LiveItems(ItemsView[Key, Any]):
    """Items of a live dict (other processes change it meanwhile): keys that vanish while
    iterating are skipped."""

    _mapping: Mapping[Key, Any]

    def __iter__(self) -> Iterator[tuple[Key, Any]]:
        d = self._mapping
        for key in d:
            value = d.get(key, _MISSING)
            if value is not _MISSING:
                yield key, value


class LiveValues(ValuesView[Any]):
    """Values of a live dict: keys that vanish while iterating are skipped."""

    _mapping: Mapping[Key, Any]

    def __iter__(self) -> Iterator[Any]:
        d = self._mapping
        for key in d:
            value = d.get(key, _MISSING)
            if value is not _MISSING:
                yield value


def serializer_by_name(serializer: object) -> object:
    """A dict's ``serializer=`` as it is pickled: a module (``json``, ``pickle``) travels
    by name, as ``("module", name)``; anything else as itself."""
    if isinstance(serializer, types.ModuleType):
        return ("module", serializer.__name__)
    return serializer


def serializer_from_name(serializer: object) -> Any:
    """serializer_by_name(), undone in the process that unpickles."""
    if isinstance(serializer, tuple) and serializer[:1] == ("module",):
        return importlib.import_module(serializer[1])
    return serializer


# -- counters: Counter and RedisCounter ---------------------------------------------------------

class _Counting(Protocol):
    def add(self, n: int = ..., /) -> int: ...

    def sub(self, n: int = ..., /) -> int: ...

    def get(self) -> int: ...


_C = TypeVar("_C", bound=_Counting)


class CounterOperators:
    """``c += n``, ``c -= n``, ``int(c)``, ``operator.index(c)`` and the repr's
    ``value=``, from the counter's own add(), sub() and get()."""

    __slots__ = ()

    def __iadd__(self: _C, n: int) -> _C:
        self.add(n)
        return self

    def __isub__(self: _C, n: int) -> _C:
        self.sub(n)
        return self

    def __int__(self: _Counting) -> int:
        return self.get()

    __index__ = __int__

    def _repr_state(self: _Counting) -> str:
        return f"value={self.get()}"


# -- handles that close: Segment, Zone, Board ------------------------------------------------

class _Closable(Protocol):
    def close(self) -> None: ...


class ClosingHandle:
    """``with handle:`` closes it at the end, and so does its garbage collection (which
    never raises: a half-built handle has nothing to close)."""

    __slots__ = ()

    def __enter__(self) -> Self:
        return self

    def __exit__(self: _Closable, *exc: object) -> None:
        self.close()

    def __del__(self: _Closable) -> None:
        try:
            self.close()
        except Exception:
            pass


# -- the late-bound factories of Zone and RedisZone ----------------------------------------------

class LateBound:
    """The constructor behind a zone's factory method (``Zone.queue`` -> ``Queue``),
    found by name in ``table`` (method -> (module of ``package``, attribute)) and imported
    on first use: the structures' modules import the zone's module, so it cannot import
    them (tests/test_layers.py checks the table)."""

    __slots__ = ("_package", "_table", "_resolved")

    def __init__(self, package: str, table: Mapping[str, tuple[str, str]]) -> None:
        self._package = package
        self._table = table
        self._resolved: dict[str, Any] = {}

    def __call__(self, method: str) -> Any:
        try:
            return self._resolved[method]
        except KeyError:
            module, attr = self._table[method]
            made = getattr(importlib.import_module(f"{self._package}.{module}"), attr)
            self._resolved[method] = made
            return made
