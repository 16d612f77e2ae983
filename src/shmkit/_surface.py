"""Parts of the public surface that several classes share, written once: the same
methods with the same meaning on a local object and on its Redis twin, or on every
handle of one kind.  Each section says which classes use it.

Bottom layer (imports only ``_types``); see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import ItemsView, Iterator, KeysView, Mapping, MutableMapping, ValuesView
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from ._types import Key

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LiveItems", "LiveValues", "LiveMapping", "serializer_by_name", "serializer_from_name",
           "CounterOperators", "ClosingHandle", "ObjectDirectory", "LateBound"]

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


class LiveMapping(MutableMapping[Key, Any]):
    """The MutableMapping methods of a dict that other processes change meanwhile, on top
    of its own ``get_keys``, ``flush_all`` and atomic ``pop``: ``keys()`` also takes
    OpenResty's ``max_count``, the views skip keys that vanish, ``clear()`` is one
    ``flush_all()``, ``popitem()`` pops a key that is still there."""

    __slots__ = ()

    def get_keys(self, max_count: int = 1024) -> list[Key]:
        raise NotImplementedError

    def flush_all(self) -> int:
        raise NotImplementedError

    @overload
    def keys(self) -> KeysView[Key]: ...

    @overload
    def keys(self, max_count: int) -> list[Key]: ...

    def keys(self, max_count: int | None = None) -> KeysView[Key] | list[Key]:
        """Without an argument: a live KeysView (the Mapping contract).  With one: a list
        of at most ``max_count`` keys (0: all of them), like OpenResty's get_keys."""
        if max_count is None:
            return KeysView(self)
        return self.get_keys(max_count)

    def items(self) -> LiveItems:
        """A live view of (key, value) pairs; keys removed while iterating are skipped."""
        return LiveItems(self)

    def values(self) -> LiveValues:
        """A live view of the values; keys removed while iterating are skipped."""
        return LiveValues(self)

    def clear(self) -> None:
        """Remove everything (flush_all)."""
        self.flush_all()

    def popitem(self) -> tuple[Key, Any]:
        """Remove and return some (key, value) pair; KeyError when the dict is empty."""
        for key in self:
            value = self.pop(key, _MISSING)
            if value is not _MISSING:
                return key, value
        raise KeyError("popitem(): dict is empty")


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


# -- zones: Zone and RedisZone -------------------------------------------------------------------

class _Directory(Protocol):
    def find(self, name: str) -> object: ...


class ObjectDirectory:
    """``name in zone``: whether the zone's directory has an object of that name (its
    ``find()`` does not raise LookupError)."""

    __slots__ = ()

    def __contains__(self: _Directory, name: str) -> bool:
        try:
            self.find(name)
            return True
        except LookupError:
            return False



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
