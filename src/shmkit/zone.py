"""Zones: named shared memory with an allocator and a directory of named objects.

A zone is what nginx's ``ngx_shared_memory_add`` gives a module: shared memory
identified by (name, size, tag), initialised exactly once, with a slab allocator
(``ngx_slab``) and named objects inside.  Every shmkit structure (locks, queues, dicts,
arrays, boards) lives in a zone; ``zone.queue("jobs")`` finds or creates one by name.

Everything inside a zone is addressed by *offset* from its first byte, so processes may
map it at different addresses.  The bytes are specified in ``core/layout.h``.
"""

from __future__ import annotations

import builtins
import errno
import os
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from . import _core
from ._checks import check_object_name
from ._errors import ClosedError, SegmentExistsError, ZoneInitError
from ._surface import ClosingHandle, LateBound, ObjectDirectory
from .segment import Segment

if TYPE_CHECKING:
    from typing_extensions import deprecated
else:
    from ._deprecation import deprecated

if TYPE_CHECKING:  # the factories' return types: never imported at run time (see _FACTORIES)
    from ._types import Serializer, SerializerArg, StrPath, Timeout
    from .board import Board
    from .config import SharedConfig
    from .dict import Dict
    from .queue import Queue
    from numpy.typing import DTypeLike

    from .shared_array import SharedNDArray
    from .sync import (Array, Barrier, BoundedSemaphore, Condition, Counter, Event, Lock, RLock,
                       RWLock, Semaphore, Value)

__all__ = ["Zone", "ZoneStats", "SlabClassStats", "ObjectInfo", "default_zone", "OBJECT_TYPES"]

#: directory type codes -> names shown by ``zone.objects()`` and ``shmkit info``
OBJECT_TYPES = {
    _core.OBJ_RAW: "raw",
    _core.OBJ_LOCK: "lock",
    _core.OBJ_RLOCK: "rlock",
    _core.OBJ_RWLOCK: "rwlock",
    _core.OBJ_SEMAPHORE: "semaphore",
    _core.OBJ_EVENT: "event",
    _core.OBJ_CONDITION: "condition",
    _core.OBJ_BARRIER: "barrier",
    _core.OBJ_VALUE: "value",
    _core.OBJ_ARRAY: "array",
    _core.OBJ_COUNTER: "counter",
    _core.OBJ_QUEUE: "queue",
    _core.OBJ_DICT: "dict",
    _core.OBJ_NDARRAY: "ndarray",
    _core.OBJ_BOARD: "board",
    _core.OBJ_CONFIG: "config",
}

#: Zone's factory methods, late-bound: method name -> (module, name of its constructor).
#: The zone layer sits below the structures, so zone.py never imports them: ``zone.queue()``
#: imports shmkit.queue the first time it is called (as ``shmkit.Queue`` does through the
#: package's lazy names), and type checkers see the real return types through the imports
#: under TYPE_CHECKING above.  tests/test_layers.py checks that every entry names the
#: constructor its method's annotation promises, with the same parameters.
_FACTORIES: dict[str, tuple[str, str]] = {
    "lock": ("sync", "Lock"),
    "rlock": ("sync", "RLock"),
    "rwlock": ("sync", "RWLock"),
    "semaphore": ("sync", "Semaphore"),
    "bounded_semaphore": ("sync", "BoundedSemaphore"),
    "event": ("sync", "Event"),
    "condition": ("sync", "Condition"),
    "barrier": ("sync", "Barrier"),
    "value": ("sync", "Value"),
    "array": ("sync", "Array"),
    "counter": ("sync", "Counter"),
    "queue": ("queue", "Queue"),
    "dict": ("dict", "Dict"),
    "ndarray": ("shared_array", "ndarray"),
    "board": ("board", "Board"),
    "config": ("config", "SharedConfig"),
}
#: the constructor behind ``Zone.<method>``, imported on first use
_factory = LateBound("shmkit", _FACTORIES)


DEFAULT_ZONE_SIZE = 32 << 20
DEFAULT_ZONE_MAX_SIZE = 2 << 30


@dataclass(frozen=True)
class SlabClassStats:
    """Statistics of one slab size class (nginx's ngx_slab_stat_t)."""

    size: int       #: chunk size in bytes
    total: int      #: chunks in pages of this class
    used: int       #: chunks handed out
    reqs: int       #: allocation requests
    fails: int      #: requests that failed for lack of memory


@dataclass(frozen=True)
class ZoneStats:
    """What ``zone.statistics()`` returns.  Free space is reported honestly: ``free_bytes``
    counts free pages plus free chunks inside partly used slab pages, and
    ``largest_free_bytes`` is the largest single allocation above 2 KiB that can succeed
    without growing the zone."""

    size: int
    max_size: int
    generation: int
    total_pages: int
    free_pages: int
    free_bytes: int
    slab_free_bytes: int
    largest_free_bytes: int
    page_reqs: int
    page_fails: int
    recoveries: int
    grow_count: int
    extents: int
    objects: int
    classes: tuple[SlabClassStats, ...]


@dataclass(frozen=True)
class ObjectInfo:
    """One entry of a zone's directory."""

    name: str
    type: str           #: "queue", "lock", ... ("raw" for zone.create())
    type_code: int
    offset: int
    size: int
    aux: int
    created_ns: int     #: CLOCK_REALTIME, nanoseconds since the epoch
    creator_pid: int


def _info(t: tuple[str, int, int, int, int, int, int]) -> ObjectInfo:
    name, code, off, size, aux, created_ns, pid = t
    return ObjectInfo(name, OBJECT_TYPES.get(code, f"type-{code}"), code, off, size, aux,
                      created_ns, pid)


def _check_uint(what: str, value: object, minimum: int = 0, bits: int = 64) -> int:
    """An int in [minimum, 2**bits): the C layer would wrap a negative or a larger one
    around silently, or raise OverflowError."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not minimum <= value < (1 << bits):
        raise ValueError(f"{what} must be in [{minimum}, 2**{bits}), not {value}")
    return value


class Zone(ClosingHandle, ObjectDirectory):
    """A named zone of shared memory with an allocator and named objects.

    ``Zone(name, size, *, tag=None, init=None, backend="posix", max_size=None, ...)``
    declares the zone, with the semantics of nginx's ngx_shared_memory_add:

    - identity is (name, size, tag): declaring an existing zone with the same size and
      tag attaches to it; another size or tag raises ZoneMismatchError naming both;
      ``size=0`` (or omitted) attaches to whatever size the creator declared, and
      ``tag=None`` accepts any tag;
    - ``init(zone)`` runs exactly once, in the process that creates the zone, before any
      other process can use it; racing declarations all end up with one initialised zone;
      if the initialiser dies, the processes waiting for it get ZoneInitError within
      milliseconds, and the next declaration initialises the zone again;
    - ``max_size`` lets a posix or file zone grow online: every process sees the new
      size, and views handed out before stay valid.

    Backends: "posix" (name in /dev/shm), "file" (``path=``), "sysv" (``key=``, fixed
    size), "memfd" and "anonymous" (for fork children; fixed size for anonymous).

    ``lifecycle`` is the segment's (see ``shmkit.Segment``): "persist" (default),
    "unlink_on_last_close" or "unlink_on_creator_exit".

    A segment that shmkit did not create (no record of shmkit's on it) and that holds no
    zone yet is not formatted unless ``adopt=True``: Zone() refuses it with
    SegmentExistsError instead of overwriting someone else's memory.
    """

    _core_zone: _core.Zone | None = None
    _segment: Segment | None = None
    _closed = True
    _pid: int | None = None
    #: the posix name, the file's path, or the sysv key (None for memfd and anonymous)
    name: str | int | None

    def __init__(self, name: str | int | None = None, size: int = 0, *,
                 tag: str | bytes | None = None, init: Callable[[Zone], object] | None = None,
                 backend: str = "posix", max_size: int | None = None,
                 timeout: float | None = 30.0, perm: int = 0o600, key: int | None = None,
                 path: StrPath | None = None, segment: Segment | None = None,
                 create: bool = True, allow_other_owner: bool = False,
                 lifecycle: str | None = None, adopt: bool = False):
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"zone size must be an int >= 0, not {size!r}")
        if 0 < size < _core.ZONE_MIN_SIZE:
            raise ValueError(f"zone size {size} is below the minimum of {_core.ZONE_MIN_SIZE} bytes")
        if max_size is not None and (not isinstance(max_size, int) or max_size < size):
            raise ValueError(f"max_size must be an int >= size ({size}), not {max_size!r}")
        if isinstance(tag, str):
            try:
                tag = tag.encode()
            except UnicodeError:
                raise ValueError(f"zone tag {tag!r} is not valid UTF-8 text (it holds a lone "
                                 "surrogate); pass bytes") from None
        if tag is not None and len(tag) > _core.TAG_MAX:
            raise ValueError(f"zone tag is {len(tag)} bytes; at most {_core.TAG_MAX} are allowed")
        if backend in ("sysv", "anonymous", "memfd") and max_size and max_size > size:
            if backend != "memfd":
                raise ValueError(f"{backend} zones cannot grow; leave max_size unset")
        self.backend = backend
        self.name = name
        self._init = init
        reserve = max(max_size or 0, size)
        if segment is not None:
            self._segment = segment
        elif backend == "posix":
            if name is None:
                raise TypeError("a posix zone needs a name")
            # without a size there is nothing to create: open only, leave no empty file
            create = create and size > 0
            self._segment = Segment(name, "c" if create else "w", 0, backend="posix",
                                    perm=perm, reserve=reserve, _allow_empty=True,
                                    allow_other_owner=allow_other_owner, lifecycle=lifecycle)
        elif backend == "file":
            target = path if path is not None else name
            if isinstance(target, int):
                raise TypeError("a file zone needs a path (a str or os.PathLike), not an int")
            create = create and size > 0
            self._segment = Segment(None, "c" if create else "w", 0, backend="file", path=target,
                                    perm=perm, reserve=reserve, _allow_empty=True,
                                    allow_other_owner=allow_other_owner, lifecycle=lifecycle)
            self.name = os.fspath(target)  # type: ignore[arg-type]  # Segment refused None
        elif backend == "sysv":
            sysv_key = key if key is not None else name
            self._segment = Segment(None, "c" if (create and size) else "w", size,
                                    backend="sysv", key=sysv_key,  # type: ignore[arg-type]
                                    perm=perm,
                                    allow_other_owner=allow_other_owner, lifecycle=lifecycle,
                                    _zone=True)
            self.name = sysv_key
        elif backend == "memfd":
            if not size:
                raise ValueError("a memfd zone needs a size")
            self._segment = Segment(name or "shmkit-zone", "c", size, backend="memfd",
                                    reserve=reserve)
        elif backend == "anonymous":
            if not size:
                raise ValueError("an anonymous zone needs a size")
            self._segment = Segment(None, "c", size, backend="anonymous")
        else:
            raise ValueError(f"unknown backend {backend!r}")
        try:
            if not adopt:
                self._refuse_foreign()
            self._core_zone = _core.Zone(self._segment._live(), size, max_size or 0, tag, timeout)
        except BaseException:
            self._discard_failed_creation()
            raise
        self._closed = False
        self._lock = threading.Lock()
        if self._core_zone.must_init:
            ok = False
            try:
                if init is not None:
                    init(self)
                ok = True
            finally:
                self._core_zone.init_done(ok)

    def _refuse_foreign(self) -> None:
        """A segment shmkit did not create that holds no zone would be formatted (its
        bytes overwritten): refuse, unless the caller asked with adopt=True."""
        seg = self._segment
        assert seg is not None  # set by __init__ before the zone is opened
        if seg.created or seg.backend in ("memfd", "anonymous") and seg._creator:
            return
        if seg.lifecycle is not None:
            return  # shmkit made it (a zone creator may have died before initialising it)
        core = seg._live()
        size = core.size
        if size >= 8:
            with memoryview(core) as mv:
                if struct.unpack_from("=Q", mv, 0)[0] != 0:
                    return  # a zone (attach) or something else (the core says what)
        raise SegmentExistsError(
            errno.EEXIST, f"{seg._what()} exists ({size} bytes, no zone in it) and was not "
            "created by shmkit: Zone() would format it, overwriting whatever uses it.  Pass "
            "adopt=True to make it a zone anyway, or use another name")

    def _discard_failed_creation(self) -> None:
        """Opening failed: close, and if this handle created an object that never became
        a zone (still empty), remove it so nothing is left behind."""
        seg = self._segment
        if seg is None:
            return
        try:
            if seg.created and seg.backend in ("posix", "file") and seg._live().object_size() == 0:
                seg.unlink()
        except Exception:
            pass
        seg.close()

    # -- identity ---------------------------------------------------------------------
    def _live(self) -> _core.Zone:
        """The core zone, for the structures built on it; ClosedError once closed."""
        if self._closed or self._core_zone is None or self._core_zone.closed:
            raise ClosedError(f"{self!r} is closed")
        return self._core_zone

    @property
    def segment(self) -> Segment:
        if self._segment is None:
            raise ClosedError(f"{self!r} was never opened")
        return self._segment

    @property
    def size(self) -> int:
        """Current size in bytes (grows up to max_size)."""
        return int(self._live().header()["size"])

    @property
    def declared_size(self) -> int:
        return int(self._live().header()["declared_size"])

    @property
    def max_size(self) -> int:
        return int(self._live().header()["max_size"])

    @property
    def tag(self) -> bytes:
        return bytes(self._live().header()["tag"])

    @property
    def closed(self) -> bool:
        return self._closed

    def info(self) -> builtins.dict[str, Any]:
        """The header: magic, format, state, sizes, tag, creator pid, times, generation."""
        return self._live().header()

    # -- raw allocations (the nginx way) ---------------------------------------------------
    # alloc/free are hot (a pair costs ~500 ns, half of it in Python), so they neither go
    # through _live() (a Python call, ~80 ns) nor check a plain int's range before the C
    # call, which refuses what is out of range itself (ValueError, OverflowError); a try
    # costs nothing in 3.11 until it catches.  The error path then says it in the facade's
    # words (_c_refused).  What the C layer would take but the facade refuses (a bool, an
    # object with __index__) is not an exact int and goes through _check_uint first.
    def alloc(self, size: int, *, zero: bool = False) -> int:
        """Allocate ``size`` bytes; returns the offset.  ZoneFullError when no room."""
        core = self._core_zone
        if core is None or type(size) is not int:
            core = self._live()
            size = _check_uint("size", size, 1, 63)
        try:
            return core.alloc(size, zero)
        except (ValueError, OverflowError):  # ClosedError is a ValueError too
            self._c_refused("size", size, 1, 63)
            raise

    def calloc(self, size: int) -> int:
        """Allocate ``size`` zeroed bytes; returns the offset."""
        return self.alloc(size, zero=True)

    def free(self, offset: int) -> None:
        """Free an allocation; InvalidFreeError if it is not one."""
        core = self._core_zone
        if core is None or type(offset) is not int:
            core = self._live()
            offset = _check_uint("offset", offset)
        try:
            core.free(offset)
        except (ValueError, OverflowError):  # InvalidFreeError and ClosedError are ValueErrors
            self._c_refused("offset", offset, 0, 64)
            raise

    def _c_refused(self, what: str, value: int, minimum: int, bits: int) -> None:
        """alloc/free's error path: the C layer refused an exact int.  Raise what the facade
        says (ClosedError naming this handle, _check_uint's ValueError for an int out of
        range) in place of the C layer's error; return if neither applies (the caller
        re-raises the C layer's own: InvalidFreeError...)."""
        try:
            self._live()
            _check_uint(what, value, minimum, bits)
        except ValueError as e:  # ClosedError included
            raise e from None

    def usable_size(self, offset: int) -> int:
        """Bytes really usable at ``offset`` (its size class or run), 0 if not allocated."""
        return self._live().usable_size(_check_uint("offset", offset))

    def view(self, offset: int, size: int, *, readonly: bool = False) -> memoryview:
        """A memoryview of [offset, offset + size); it keeps the mapping alive."""
        return self._live().view(_check_uint("offset", offset, 0, 63),
                                 _check_uint("size", size, 0, 63), readonly)

    # -- named objects ---------------------------------------------------------------------
    def find(self, name: str) -> ObjectInfo:
        """The directory entry of ``name``; ObjectNotFoundError if there is none."""
        return _info(self._live().obj_find(check_object_name(name)))

    def create(self, name: str, size: int, *, type_code: int = _core.OBJ_RAW, aux: int = 0) -> ObjectInfo:
        """Create a named raw allocation; ObjectExistsError if the name is taken."""
        entry, _ = self._live().obj_get(check_object_name(name),
                                        _check_uint("type_code", type_code, 1, 32),
                                        _check_uint("size", size, 1), _check_uint("aux", aux),
                                        _core.O_CREATE | _core.O_EXCL)
        return _info(entry)

    def find_or_create(self, name: str, size: int, *, type_code: int = _core.OBJ_RAW,
                       aux: int = 0) -> tuple[ObjectInfo, bool]:
        """Find ``name`` or create it (zeroed); returns (info, created)."""
        entry, created = self._live().obj_get(check_object_name(name),
                                              _check_uint("type_code", type_code, 1, 32),
                                              _check_uint("size", size, 1),
                                              _check_uint("aux", aux), _core.O_CREATE)
        return _info(entry), created

    def destroy(self, name: str) -> None:
        """Remove ``name`` and free its memory.  Processes still using it must not."""
        self._live().obj_destroy(check_object_name(name))

    def objects(self) -> list[ObjectInfo]:
        """Every named object in the zone."""
        return [_info(t) for t in self._live().obj_list()]

    # -- statistics and checks --------------------------------------------------------------
    def statistics(self) -> ZoneStats:
        """Allocator statistics (see ZoneStats)."""
        s = self._live().stats()
        return ZoneStats(
            size=s["size"], max_size=s["max_size"], generation=s["generation"],
            total_pages=s["total_pages"], free_pages=s["free_pages"], free_bytes=s["free_bytes"],
            slab_free_bytes=s["slab_free_bytes"],
            largest_free_bytes=s["largest_free_run"] * _core.PAGE,
            page_reqs=s["page_reqs"], page_fails=s["page_fails"], recoveries=s["recoveries"],
            grow_count=s["grow_count"], extents=s["nextents"], objects=s["nobjects"],
            classes=tuple(SlabClassStats(*c) for c in s["classes"]))

    @deprecated("Zone.stats() is deprecated; use Zone.statistics(), as every other object")
    def stats(self) -> ZoneStats:
        """Deprecated spelling of statistics()."""
        return self.statistics()

    def check(self) -> list[str]:
        """Walk every structure and verify every invariant; returns the problems found
        (an empty list when the zone is consistent)."""
        n, lines = self._live().check()
        if n and not lines:
            lines = [f"{n} problem(s) found"]
        return lines

    # -- structures: late-bound factories (see _FACTORIES) -------------------------------------
    def lock(self, name: str, *, create: bool = True) -> Lock:
        """The Lock ``name`` of this zone (see shmkit.Lock)."""
        return cast("Lock", _factory("lock")(name, zone=self, create=create))

    def rlock(self, name: str, *, create: bool = True) -> RLock:
        """The RLock ``name`` of this zone (see shmkit.RLock)."""
        return cast("RLock", _factory("rlock")(name, zone=self, create=create))

    def rwlock(self, name: str, *, max_readers: int = 128, create: bool = True) -> RWLock:
        """The RWLock ``name`` of this zone (see shmkit.RWLock)."""
        return cast("RWLock", _factory("rwlock")(name, max_readers=max_readers, zone=self,
                                                 create=create))

    def semaphore(self, name: str, value: int = 1, *, undo: bool = False,
                  max_processes: int = 64, create: bool = True) -> Semaphore:
        """The Semaphore ``name`` of this zone (see shmkit.Semaphore)."""
        return cast("Semaphore", _factory("semaphore")(
            name, value, undo=undo, max_processes=max_processes, zone=self, create=create))

    def bounded_semaphore(self, name: str, value: int = 1, *, undo: bool = False,
                          max_processes: int = 64, create: bool = True) -> BoundedSemaphore:
        """The BoundedSemaphore ``name`` of this zone (see shmkit.BoundedSemaphore)."""
        return cast("BoundedSemaphore", _factory("bounded_semaphore")(
            name, value, undo=undo, max_processes=max_processes, zone=self, create=create))

    def event(self, name: str, *, create: bool = True) -> Event:
        """The Event ``name`` of this zone (see shmkit.Event)."""
        return cast("Event", _factory("event")(name, zone=self, create=create))

    def condition(self, name: str, lock: Lock | RLock | None = None, *,
                  create: bool = True) -> Condition:
        """The Condition ``name`` of this zone (see shmkit.Condition)."""
        return cast("Condition", _factory("condition")(name, lock, zone=self, create=create))

    def barrier(self, name: str, parties: int, action: Callable[[], object] | None = None,
                timeout: Timeout = None, *, create: bool = True) -> Barrier:
        """The Barrier ``name`` of this zone (see shmkit.Barrier)."""
        return cast("Barrier", _factory("barrier")(name, parties, action, timeout, zone=self,
                                                   create=create))

    def value(self, name: str, typecode_or_type: str | type[Any], *args: Any,
              lock: bool | Lock | RLock = True, create: bool = True) -> Value:
        """The Value ``name`` of this zone (see shmkit.Value)."""
        return cast("Value", _factory("value")(name, typecode_or_type, *args, lock=lock,
                                               zone=self, create=create))

    def array(self, name: str, typecode_or_type: str | type[Any],
              size_or_initializer: int | Iterable[Any], *, lock: bool | Lock | RLock = True,
              create: bool = True) -> Array:
        """The Array ``name`` of this zone (see shmkit.Array)."""
        return cast("Array", _factory("array")(name, typecode_or_type, size_or_initializer,
                                               lock=lock, zone=self, create=create))

    def counter(self, name: str, initial: int = 0, *, create: bool = True) -> Counter:
        """The Counter ``name`` of this zone (see shmkit.Counter)."""
        return cast("Counter", _factory("counter")(name, initial, zone=self, create=create))

    def queue(self, name: str, capacity: int | None = None, *, max_messages: int | None = None,
              mode: str | None = None, serializer: SerializerArg | None = None,
              spin: float | None = None, delivery: str | None = None, create: bool = True,
              exclusive: bool = False) -> Queue:
        """The Queue ``name`` of this zone (see shmkit.Queue)."""
        return cast("Queue", _factory("queue")(
            name, capacity, zone=self, max_messages=max_messages, mode=mode,
            serializer=serializer, spin=spin, delivery=delivery, create=create,
            exclusive=exclusive))

    def dict(self, name: str, capacity: int | None = None, *,
             serializer: Serializer | None = None, shards: int | None = None,
             clock: Callable[[], float] | None = None, create: bool = True) -> Dict:
        """The Dict ``name`` of this zone (see shmkit.Dict)."""
        return cast("Dict", _factory("dict")(name, capacity, zone=self, serializer=serializer,
                                             shards=shards, clock=clock, create=create))

    def ndarray(self, name: str, shape: int | Iterable[int] | None,
                dtype: DTypeLike = "float64", *, create: bool = True) -> SharedNDArray:
        """The shared NumPy array ``name`` of this zone (see shmkit.ndarray)."""
        return cast("SharedNDArray", _factory("ndarray")(name, shape, dtype, zone=self,
                                                         create=create))

    def board(self, name: str, max_bytes: int | None, *, buffers: int | None = None,
              writer: bool = False, create: bool = True, spin_us: float = 20.0) -> Board:
        """The Board ``name`` of this zone (see shmkit.Board)."""
        return cast("Board", _factory("board")(name, max_bytes, zone=self, buffers=buffers,
                                               writer=writer, create=create, spin_us=spin_us))

    def config(self, name: str, max_bytes: int | None = 1 << 20, *,
               buffers: int | None = None, spin_us: float = 0.0) -> SharedConfig:
        """The SharedConfig ``name`` of this zone (see shmkit.SharedConfig)."""
        return cast("SharedConfig", _factory("config")(name, max_bytes, zone=self,
                                                       buffers=buffers, spin_us=spin_us))

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Detach this process.  Views still alive keep the mapping until released."""
        if self._closed:
            return
        self._closed = True
        self._core_zone = None
        if self._segment is not None:
            self._segment.close()

    def unlink(self) -> None:
        """Remove the zone's name (posix, file) or mark it for destruction (sysv)."""
        self.segment.unlink()

    def __reduce__(self) -> tuple[Any, ...]:
        if self.backend in ("posix", "file"):
            return (_attach, (self.backend, self.name))
        if self.backend == "sysv":
            return (_attach, ("sysv", self.name))
        if self.backend == "memfd":
            return (_attach_segment, (self._segment,))
        raise TypeError("an anonymous zone cannot be pickled; it is shared with fork "
                        "children only (use the fork start method, or a posix zone)")

    def __repr__(self) -> str:
        core = self._core_zone
        state = "closed" if self._closed or core is None else f"size={core.mapped}"
        return f"<shmkit.Zone {self.backend} {self.name!r} {state}>"


def _attach(backend: str, name: str | int) -> Zone:
    if backend == "sysv":
        assert isinstance(name, int)
        return Zone(None, 0, backend="sysv", key=name, create=False)
    return Zone(name, 0, backend=backend, create=False)


def _attach_segment(segment: Segment) -> Zone:
    return Zone(None, 0, backend="memfd", segment=segment)


_default: Zone | None = None
_default_lock = threading.Lock()


def default_zone() -> Zone:
    """The zone top-level constructors use (``shmkit.Queue("jobs")``).

    A posix zone named by $SHMKIT_ZONE, or ``shmkit-default-<uid>``, of 32 MiB growing
    up to 2 GiB.  It persists until unlinked (``shmkit rm``).
    """
    global _default
    with _default_lock:
        if _default is None or _default.closed or _default._pid != os.getpid():
            name = os.environ.get("SHMKIT_ZONE") or f"shmkit-default-{os.getuid()}"
            try:
                z = Zone(name, 0)  # attach to whatever exists, whatever its size
            except FileNotFoundError:
                try:
                    z = Zone(name, DEFAULT_ZONE_SIZE, max_size=DEFAULT_ZONE_MAX_SIZE)
                except ZoneInitError:  # a racing creator died: initialise it ourselves
                    z = Zone(name, DEFAULT_ZONE_SIZE, max_size=DEFAULT_ZONE_MAX_SIZE)
            z._pid = os.getpid()
            _default = z
        return _default

