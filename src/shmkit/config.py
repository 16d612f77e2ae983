"""Shared configuration: one process loads it, every process reads the same snapshot.

::

    # the loader (e.g. a supervisor; call reload() on SIGHUP)
    cfg = shmkit.SharedConfig("app")
    cfg.load("/etc/app.toml")             # or a .json file, or a dict

    # any process
    cfg = shmkit.SharedConfig("app")
    snap, version = cfg.read()             # an immutable snapshot
    workers = snap["server"]["workers"]
    snap, version = cfg.wait_for_change(version)   # blocks until the next load

A SharedConfig is a :class:`shmkit.Board` (object type "config") holding the parsed
configuration.  Each ``load()``/``publish()`` replaces the whole configuration with one
publication: readers see the old or the new one, never a mixture, and a loader killed in
the middle of a reload leaves the old one in place.  Snapshots are deep-frozen: mappings
are ``types.MappingProxyType``, lists become tuples, sets frozensets, so no reader can
change what the others see.  A snapshot is computed once per version and process, and
``read()`` of an unchanged configuration costs one memory load.

Values may be what JSON and TOML produce (str, int, float, bool, None, lists, tables,
TOML dates and times) plus bytes, tuples, sets and Decimal; anything else is refused
when publishing, with the path of the offending key.
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from . import _core
from ._errors import ShmkitTimeoutError
from .board import Board, BoardStats
from .zone import Zone

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._aio import AioConfig
    from ._types import StrPath, Timeout

#: a snapshot: a deep-frozen mapping (MappingProxyType all the way down)
Snapshot = Mapping[str, Any]

__all__ = ["SharedConfig", "ConfigBase", "ConfigBoard"]

_LEAVES = (str, int, float, bool, type(None), bytes, datetime.date, datetime.time,
           datetime.timedelta, decimal.Decimal)
_EMPTY: Snapshot = types.MappingProxyType({})


def _plain(value: Any, path: str) -> Any:
    """A picklable copy made only of plain containers and allowed leaves."""
    if isinstance(value, _LEAVES):
        return value
    if isinstance(value, Mapping):
        return {k: _plain(v, f"{path}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return frozenset(_plain(v, f"{path}{{...}}") for v in value)
    if isinstance(value, bytearray):
        return bytes(value)
    raise TypeError(f"configuration value at {path or 'the top'} is a {type(value).__name__}; "
                    "only str, int, float, bool, None, bytes, dates/times, Decimal, lists, "
                    "tuples, sets and mappings can be shared")


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value  # leaves and frozensets are immutable already


def _load_file(path: StrPath, fmt: str | None) -> tuple[Mapping[str, Any], str]:
    if fmt is None:
        ext = os.path.splitext(os.fspath(path))[1].lower()
        fmt = {".json": "json", ".toml": "toml"}.get(ext)
        if fmt is None:
            raise ValueError(f"cannot tell the format of {os.fspath(path)!r} from its suffix; "
                             "pass format='json' or format='toml'")
    if fmt == "json":
        with open(path, "rb") as f:
            data = json.load(f)
    elif fmt == "toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            try:
                import tomli as tomllib  # pyright: ignore[reportMissingImports]
            except ImportError as err:
                raise ImportError("reading TOML needs Python 3.11+ or the tomli package: "
                                  "pip install tomli") from err
        with open(path, "rb") as f:
            data = tomllib.load(f)
    else:
        raise ValueError(f"unknown configuration format {fmt!r} (use 'json' or 'toml')")
    if not isinstance(data, Mapping):
        raise ValueError(f"{os.fspath(path)!r}: the configuration must be a table/object at "
                         f"the top, not a {type(data).__name__}")
    return data, fmt


@dataclass(frozen=True)
class ConfigInfo:
    """Where the current configuration came from."""

    version: int
    source: str | None          #: file it was loaded from (None: published from a dict)
    format: str                 #: "json", "toml" or "dict"
    loaded_ns: int              #: CLOCK_REALTIME when it was published
    loader_pid: int             #: process that published it


class ConfigBoard(Protocol):
    """What a configuration needs of the board it is published on: a :class:`shmkit.Board`
    (SharedConfig) or a ``RedisBoard`` (``shmkit.redis.RedisConfig``)."""

    @property
    def version(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    def publish(self, value: Any, /) -> int: ...

    def read(self) -> tuple[Any, int]: ...

    def wait_newer(self, version: int = ..., timeout: Timeout = ...) -> tuple[Any, int]: ...

    def close(self) -> None: ...


BoardT = TypeVar("BoardT", bound=ConfigBoard)


class ConfigBase(Mapping[str, Any], Generic[BoardT]):
    """Everything of a shared configuration but where its board lives: loading,
    publishing, frozen snapshots, waiting for a change, the read-only Mapping.
    :class:`SharedConfig` publishes on a Board in a zone, ``shmkit.redis.RedisConfig`` on
    a board in Redis; a subclass sets ``_board``, ``name`` and ``zone`` and adds
    ``statistics()`` (whose type is its board's) and pickling."""

    _board: BoardT   # set first thing in __init__ (closed/close() cope without it)
    name: str
    # (frozen mapping, version, raw record) of the latest version seen
    _snap: tuple[Snapshot, int, dict[str, Any] | None] = (_EMPTY, 0, None)

    # -- publishing ---------------------------------------------------------------------
    def load(self, source: StrPath | Mapping[str, Any] | None = None, *,
             format: str | None = None) -> int:
        """Load and publish a configuration; returns its version.

        ``source`` is a mapping, or the path of a JSON or TOML file (the format comes
        from the suffix unless ``format`` says); None reloads the file the current
        configuration came from.  Nothing is published if reading or parsing fails.
        This process becomes the loader (the board's writer) if nobody is.
        """
        if source is None:
            info = self.info()
            if info.source is None:
                raise ValueError(f"config {self.name!r}: nothing to reload (the current "
                                 "configuration was not loaded from a file)")
            source, format = info.source, info.format
        if isinstance(source, Mapping):
            return self._publish(source, None, "dict")
        data, fmt = _load_file(source, format)
        return self._publish(data, os.path.abspath(os.fspath(source)), fmt)

    def reload(self) -> int:
        """Re-read the file the current configuration came from and publish it."""
        return self.load(None)

    def publish(self, mapping: Mapping[str, Any]) -> int:
        """Publish ``mapping`` as the new configuration; returns its version."""
        if not isinstance(mapping, Mapping):
            raise TypeError(f"a configuration is a mapping, not a {type(mapping).__name__}")
        return self._publish(mapping, None, "dict")

    def _publish(self, data: Mapping[str, Any], source: str | None, fmt: str) -> int:
        record = {"config": _plain(data, ""), "source": source, "format": fmt,
                  "loaded_ns": _now_ns(), "loader_pid": os.getpid()}
        return self._board.publish(record)

    # -- reading -------------------------------------------------------------------------
    def _frozen(self, r: tuple[Any, int]) -> tuple[Snapshot, int, dict[str, Any] | None]:
        record, version = r
        snap = self._snap
        if snap[1] == version:
            return snap
        if version == 0 or not isinstance(record, dict):
            snap = (_EMPTY, version, None)
        else:
            snap = (_freeze(record.get("config", {})), version, record)
        self._snap = snap
        return snap

    def read(self) -> tuple[Snapshot, int]:
        """``(snapshot, version)`` of the current configuration (an empty mapping and
        version 0 before the first load)."""
        snap = self._frozen(self._board.read())
        return snap[0], snap[1]

    def snapshot(self) -> Snapshot:
        """The current configuration, deep-frozen."""
        return self._frozen(self._board.read())[0]

    @property
    def version(self) -> int:
        return self._board.version

    def info(self) -> ConfigInfo:
        """Where the current configuration came from and when."""
        _, version, record = self._frozen(self._board.read())
        if record is None:
            return ConfigInfo(version, None, "dict", 0, 0)
        return ConfigInfo(version, record.get("source"), record.get("format", "dict"),
                          record.get("loaded_ns", 0), record.get("loader_pid", 0))

    def wait_for_change(self, version: int | None = None,
                        timeout: Timeout = None) -> tuple[Snapshot, int]:
        """Block until a configuration newer than ``version`` (default: the current one)
        is published; returns ``(snapshot, version)``.  ShmkitTimeoutError after
        ``timeout`` seconds.  ``wait_for_change(0)`` waits for the first load."""
        if version is None:
            version = self._board.version
        snap = self._frozen(self._board.wait_newer(version, timeout))
        return snap[0], snap[1]

    wait_changed = wait_for_change  # the name RedisZone's config twin has too

    def watch(self, timeout: Timeout = None) -> Iterator[tuple[Snapshot, int]]:
        """Iterate over ``(snapshot, version)``: the current configuration (once there is
        one), then every newer one as it is published.  With a ``timeout``, the iteration
        ends when no new configuration comes within that many seconds."""
        version = 0
        while True:
            try:
                snap, version = self.wait_for_change(version, timeout)
            except ShmkitTimeoutError:
                return
            yield snap, version

    # -- Mapping over the current snapshot ---------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self.snapshot()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        return len(self.snapshot())

    def __contains__(self, key: object) -> bool:
        return key in self.snapshot()

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        board = self.__dict__.get("_board")
        return board is None or board.closed

    def close(self) -> None:
        board = self.__dict__.get("_board")
        if board is not None:
            board.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__  # pyright: ignore[reportAssignmentType]  # a handle: by identity

    def __repr__(self) -> str:
        if self.closed:
            return f"<shmkit.{type(self).__name__} {self.name!r} closed>"
        return f"<shmkit.{type(self).__name__} {self.name!r} version={self.version}>"


class SharedConfig(ConfigBase[Board]):
    """A configuration shared by every process: ``SharedConfig(name, max_bytes=1 MiB, *,
    zone=None, buffers=None)``.

    Finds or creates the configuration ``name`` in ``zone`` (default:
    ``shmkit.default_zone()``).  ``max_bytes`` bounds the pickled configuration.  It is
    also a read-only Mapping over the *current* snapshot (``cfg["key"]``): each access may
    see a newer version, so take ``snapshot()`` once for reads that must agree.
    """

    def __init__(self, name: str, max_bytes: int | None = 1 << 20, *, zone: Zone | None = None,
                 buffers: int | None = None, spin_us: float = 0.0) -> None:
        self._board = Board(name, max_bytes, zone=zone, buffers=buffers, spin_us=spin_us,
                            _type=_core.OBJ_CONFIG)
        self.name = self._board.name
        self.zone = self._board.zone

    def statistics(self) -> BoardStats:
        return self._board.statistics()

    @property
    def aio(self) -> AioConfig:
        """Awaitable twins: ``await cfg.aio.wait_for_change(version=None, timeout=None)``
        (and ``wait_changed``)."""
        from ._aio import AioConfig
        return AioConfig(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_attach, (self.zone, self.name))


def _now_ns() -> int:
    import time
    return time.time_ns()


def _attach(zone: Zone, name: str) -> SharedConfig:
    return SharedConfig(name, None, zone=zone)
