"""Synchronisation between processes that survives crashes.

``Lock``, ``RLock``, ``RWLock``, ``Semaphore``, ``BoundedSemaphore``, ``Event``,
``Condition``, ``Barrier``, ``Value``, ``Array`` and ``Counter`` live in a zone and are
found by name from any process: ``Lock("jobs")`` in one program and ``Lock("jobs")`` in
another (spawned, forked, forkserver'd, or started later by hand) are the same lock.
Each pickles as (zone, name), so it can be passed to a ``multiprocessing`` child.

The methods are those of :mod:`threading` and :mod:`multiprocessing`
(``acquire(blocking=True, timeout=-1)``, ``release()``, ``wait(timeout)``, ``notify(n)``,
``set()``/``clear()``/``is_set()``, context managers, ...).  What they add:

* **Owner death.**  When a process dies holding a Lock, RLock or RWLock, the next process
  that wants it gets it, within ``liveness_interval`` (10 ms by default) of the death.
  ``acquire()`` then returns True as usual and ``lock.owner_died`` is True (for that
  acquire): the data the lock protects may be half-updated, repair it if need be.
  ``statistics().owner_deaths`` counts such take-overs.  A dead reader's share of an
  RWLock is reclaimed; an undo Semaphore gives a dead process's units back; a Barrier
  that loses a waiting party breaks.
* **Waiting.**  Futex-based, one absolute CLOCK_MONOTONIC deadline, the GIL released
  while sleeping, Ctrl-C interrupts a blocked call (KeyboardInterrupt).  A short adaptive
  spin comes first, so hand-offs between processes on different CPUs take well under a
  microsecond instead of a ~20 µs kernel wake-up.  Tune with :func:`configure`.
* **statistics()** on every object: holders, waiters, acquisitions, contentions, deaths.

A Lock belongs to the *process* that acquired it (any thread of it may release it, as
with ``threading.Lock``); an RLock to the *thread*.  See docs/sync.md for the details,
crash semantics and the shared layout.
"""

from __future__ import annotations

import ctypes
import os
import struct
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.sharedctypes import typecode_to_type  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from . import _core
from ._errors import ObjectMismatchError, ObjectTypeError
from ._checks import check_int, check_object_name
from ._surface import CounterOperators
from .zone import Zone, default_zone

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._aio import (AioBarrier, AioCondition, AioEvent, AioLock, AioRLock, AioRWLock,
                       AioSemaphore)
    from ._types import Buffer, Timeout

#: what __reduce__ returns: (callable, args)
_Reduce = tuple[Callable[..., Any], tuple[Any, ...]]
T = TypeVar("T")

__all__ = [
    "Lock", "RLock", "RWLock", "Semaphore", "BoundedSemaphore", "Event", "Condition",
    "Barrier", "Value", "Array", "Counter", "configure", "SyncConfig",
    "LockStats", "RWLockStats", "SemaphoreStats", "EventStats", "ConditionStats",
    "BarrierStats", "ValueStats", "CounterStats", "TIMEOUT_MAX",
]

#: The longest timeout a blocking call takes (threading.TIMEOUT_MAX): a longer one raises
#: OverflowError, as in threading.
TIMEOUT_MAX: float = _core.TIMEOUT_MAX


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyncConfig:
    """Process-wide tuning of waits (see :func:`configure`)."""

    spin_max: float            #: longest spin before sleeping, seconds (0: never spin)
    liveness_interval: float   #: how often a waiter checks that the holder lives, seconds
    recheck_interval: float    #: how often a sleeping call runs signal handlers, seconds


def configure(*, spin_max: float | None = None, liveness_interval: float | None = None,
              recheck_interval: float | None = None) -> SyncConfig:
    """Set (where given) and return the waiting parameters of this process.

    ``spin_max``: upper bound of the adaptive spin (default 200 µs; each object learns
    how long hand-offs take and spins about twice that, less when waits are long; with
    2 CPUs at most one process spins on an object at a time).  0 disables spinning, which
    is right when more processes are busy than there are CPUs.
    ``liveness_interval``: how often a blocked waiter checks that the holder is alive
    (default 10 ms): a dead holder's lock is recovered within about that long.
    The environment variables SHMKIT_SPIN_NS and SHMKIT_LIVENESS_NS set the defaults.
    """
    def ns(v: float | None, what: str, minimum: float) -> int:
        if v is None:
            return -1
        if not isinstance(v, (int, float)) or v != v or v < 0:
            raise ValueError(f"{what} must be a number of seconds >= 0, not {v!r}")
        if v < minimum:
            raise ValueError(f"{what} must be at least {minimum} s")
        return int(v * 1e9)

    s, live, rc = _core.sync_config(ns(spin_max, "spin_max", 0),
                                    ns(liveness_interval, "liveness_interval", 1e-4),
                                    ns(recheck_interval, "recheck_interval", 1e-3))
    return SyncConfig(s / 1e9, live / 1e9, rc / 1e9)


# --------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------

def _zone_arg(zone: object) -> Zone:
    if zone is None:
        return default_zone()
    if not isinstance(zone, Zone):
        raise TypeError(f"zone must be a shmkit.Zone or None, not {type(zone).__name__}")
    return zone


def _open(zone: Zone, name: str, type_code: int, *, flags: int = 0, create: bool = True,
          a: int = 0, b: int = 0, text: str | None = None, text_type: int = 0,
          data: Buffer | None = None) -> tuple[int, bool]:
    check_object_name(name)
    return _core.sync_open(zone._live(), name, type_code, flags,
                           _core.O_CREATE if create else 0, a, b, text, text_type, data)


def _same_zone(a: Zone, b: Zone) -> bool:
    return a is b or (a.backend == b.backend and a.name == b.name and a.name is not None)


_zones_seen: weakref.WeakValueDictionary[tuple[int, str, Any], Zone] = \
    weakref.WeakValueDictionary()


def _canonical(zone: Zone) -> Zone:
    """One Zone per (process, backend, name) among unpickled objects: a child that receives
    twenty locks of one zone maps it once, not twenty times."""
    if zone.name is None or zone.backend not in ("posix", "file", "sysv"):
        return zone
    key = (os.getpid(), zone.backend, zone.name)
    seen = _zones_seen.get(key)
    if seen is not None and not seen.closed:
        return seen  # the duplicate closes itself when nothing refers to it any more
    _zones_seen[key] = zone
    return zone


def _reopen(cls: Callable[..., Any], zone: Zone, name: str, kwargs: dict[str, Any]) -> Any:
    return cls(name, zone=_canonical(zone), create=False, **kwargs)


#: Barrier parties a zone's barrier can hold (core/sync.c MAX_PARTIES).
_MAX_PARTIES = 65536


class _Named:
    """What every handle has: a name, a zone, repr, pickling by (zone, name)."""

    __slots__ = ()
    # slots of each concrete class (a C base class comes after this one in their MRO)
    _zone: Zone
    _name: str
    if TYPE_CHECKING:
        @property
        def closed(self) -> bool: ...

    @property
    def name(self) -> str:
        return self._name

    @property
    def zone(self) -> Zone:
        return self._zone

    def _reduce_kwargs(self) -> dict[str, Any]:
        return {}

    def __reduce__(self) -> _Reduce:
        return (_reopen, (type(self), self._zone, self._name, self._reduce_kwargs()))

    def __repr__(self) -> str:
        state = "closed" if self.closed else self._repr_state()
        return f"<shmkit.{type(self).__name__} {self._name!r} {state}>"

    def _repr_state(self) -> str:
        return ""


# --------------------------------------------------------------------------------------
# Lock and RLock
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LockStats:
    """``statistics()`` of a Lock or RLock (a snapshot; racy by nature)."""

    name: str
    locked: bool
    owner_pid: int            #: process holding it (0: nobody)
    owner_tid: int            #: RLock: kernel thread id of the holder (0 for Lock)
    owner_alive: bool | None  #: None when free; False while a dead holder awaits take-over
    count: int                #: recursion depth (RLock), 1 or 0 (Lock)
    waiters: int              #: processes/threads asleep waiting for it (approximate)
    acquisitions: int
    contentions: int          #: acquires that found it held
    owner_deaths: int         #: holds taken over from dead holders
    last_owner_death_ns: int  #: CLOCK_REALTIME of the last take-over (0: never)
    last_dead_pid: int        #: pid (Lock) or tid (RLock) of the last dead holder
    spin_ns: int              #: the spin budget it has learnt


class _LockBase(_Named):
    """What Lock and RLock share (each subclasses its own core type)."""

    __slots__ = ()  # the slots are in Lock and RLock: two C bases cannot share a layout
    _type_code = 0
    _core_type: ClassVar[Any]   # _core.Lock or _core.RLock, set by each subclass
    _reduce_as: _Reduce | None  # how a lock kept inside another object pickles
    if TYPE_CHECKING:  # from the C base class
        def _raw(self) -> dict[str, Any]: ...
        def _is_owned(self) -> bool: ...
        def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool: ...
        def release(self) -> None: ...
        def __enter__(self) -> bool: ...
        def __exit__(self, *exc: object) -> None: ...

    def __new__(cls, name: str, *, zone: Zone | None = None, create: bool = True) -> Self:
        zone = _zone_arg(zone)
        off, _ = _open(zone, name, cls._type_code, create=create)
        self = super().__new__(cls, zone._live(), off)  # type: ignore[call-arg]  # the C base's
        # (mypy checks these against __slots__ = (): the slots are the subclass's)
        self._zone = zone  # type: ignore[misc]
        self._name = name  # type: ignore[misc]
        self._reduce_as = None  # type: ignore[misc]
        return self

    @classmethod
    def _at(cls, zone: Zone, offset: int, label: str, reduce_as: _Reduce) -> Self:
        """A handle on a lock kept inside another object (Condition, Value, Array)."""
        self: Self = cls._core_type.__new__(cls, zone._live(), offset)
        self._zone = zone  # type: ignore[misc]  # (slots: see __new__)
        self._name = label  # type: ignore[misc]
        self._reduce_as = reduce_as  # type: ignore[misc]
        return self

    def __reduce__(self) -> _Reduce:
        if self._reduce_as is not None:
            return self._reduce_as
        return super().__reduce__()

    def statistics(self) -> LockStats:
        r = self._raw()
        return LockStats(self._name, r["owner_pid"] != 0, r["owner_pid"], r["owner_tid"],
                         r["owner_alive"], r["count"], r["waiters"], r["acquisitions"],
                         r["contentions"], r["owner_deaths"], r["last_death_ns"],
                         r["last_dead_pid"], r["spin_ns"])

    def _repr_state(self) -> str:
        r = self._raw()
        if not r["owner_pid"]:
            return "unlocked"
        if self._type_code == _core.OBJ_RLOCK:
            return f"held {r['count']}x by pid {r['owner_pid']} tid {r['owner_tid']}"
        return f"locked by pid {r['owner_pid']}"


class Lock(_LockBase, _core.Lock):
    """A robust, process-shared, non-reentrant lock, found by name.

    ``Lock(name, *, zone=None, create=True)``.  ``acquire(blocking=True, timeout=-1)``
    returns True when acquired, False when not (``blocking=False`` or the timeout
    passed); ``release()`` raises NotOwnerError (a RuntimeError) when this process does
    not hold it.  The lock belongs to the process: any of its threads may release it.
    Acquiring it again from the same thread deadlocks, as with ``threading.Lock``.

    If the holder dies, the next acquire gets the lock (within ``liveness_interval``)
    and ``owner_died`` is True after it; the protected data may need repair.
    """

    __slots__ = ("_zone", "_name", "_reduce_as", "__weakref__")
    _type_code = _core.OBJ_LOCK
    _core_type = _core.Lock

    @property
    def aio(self) -> AioLock:
        """Awaitable twins: ``await lock.aio.acquire(blocking=True, timeout=-1)``,
        ``lock.aio.release()``, ``async with lock.aio:`` (see shmkit._aio)."""
        from ._aio import AioLock
        return AioLock(self)


class RLock(_LockBase, _core.RLock):
    """A robust reentrant lock, found by name: the thread that holds it may acquire it
    again; it is free when released as many times.  ``release()`` from another thread
    raises NotOwnerError.  If the holding thread dies (with its process, or alone), the
    next acquire takes it over with ``owner_died`` True.
    """

    __slots__ = ("_zone", "_name", "_reduce_as", "__weakref__")
    _type_code = _core.OBJ_RLOCK
    _core_type = _core.RLock

    @property
    def aio(self) -> AioRLock:
        """Awaitable twins, as Lock's, but the twin belongs to the task that acquired it
        (see shmkit._aio)."""
        from ._aio import AioRLock
        return AioRLock(self)


# --------------------------------------------------------------------------------------
# RWLock
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RWLockStats:
    """``statistics()`` of an RWLock."""

    name: str
    writer_pid: int            #: process holding (or waiting to get) the write lock; 0: none
    readers: int               #: read holds now
    reader_processes: int      #: processes holding them
    waiters: int               #: asleep waiting (approximate)
    max_readers: int           #: reader-process slots
    read_acquisitions: int
    write_acquisitions: int
    contentions: int
    owner_deaths: int          #: dead writers whose hold was taken over
    reader_deaths: int         #: dead reader processes whose holds were reclaimed


class _RWSide:
    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: Callable[[], object], release: Callable[[], object]):
        self._acquire = acquire
        self._release = release

    def __enter__(self) -> _RWSide:
        self._acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()


class RWLock(_Named, _core.RWLock):
    """A robust readers-writer lock, found by name.

    Any number of readers, or one writer.  Writers are not starved: once a writer asks,
    new readers wait until it is done.  ``acquire_read``/``release_read``,
    ``acquire_write``/``release_write`` (``blocking``, ``timeout`` as for Lock), or the
    context managers ``with rw.read_lock():`` and ``with rw.write_lock():``.

    Holds belong to processes.  A dead writer's hold is taken over (``owner_died``); a
    dead reader's holds are reclaimed by the writer waiting for them.  ``max_readers``
    (default 128) bounds the number of processes reading at the same time.  A process
    holding a read lock must not ask for the write lock (it would wait for itself).
    """

    __slots__ = ("_zone", "_name", "_read", "_write", "__weakref__")
    _read: _RWSide
    _write: _RWSide

    def __new__(cls, name: str, *, max_readers: int = 128, zone: Zone | None = None,
                create: bool = True) -> Self:
        zone = _zone_arg(zone)
        check_int("max_readers", max_readers, 1)
        off, _ = _open(zone, name, _core.OBJ_RWLOCK, create=create, a=max_readers)
        self = super().__new__(cls, zone._live(), off)
        self._zone = zone
        self._name = name
        self._read = _RWSide(self.acquire_read, self.release_read)
        self._write = _RWSide(self.acquire_write, self.release_write)
        return self

    def read_lock(self) -> _RWSide:
        """Context manager holding a read lock: ``with rw.read_lock(): ...``"""
        return self._read

    def write_lock(self) -> _RWSide:
        """Context manager holding the write lock: ``with rw.write_lock(): ...``"""
        return self._write

    @property
    def aio(self) -> AioRWLock:
        """Awaitable twins: ``await rw.aio.acquire_read()``, ``acquire_write()``,
        ``async with rw.aio.read_lock():``, ``async with rw.aio.write_lock():``."""
        from ._aio import AioRWLock
        return AioRWLock(self)

    @property
    def max_readers(self) -> int:
        return int(self._raw()["max_readers"])

    def statistics(self) -> RWLockStats:
        r = self._raw()
        return RWLockStats(self._name, r["writer_pid"], r["readers"], r["reader_processes"],
                           r["waiters"], r["max_readers"], r["read_acquisitions"],
                           r["write_acquisitions"], r["contentions"], r["owner_deaths"],
                           r["reader_deaths"])

    def _repr_state(self) -> str:
        r = self._raw()
        if r["writer_pid"]:
            return f"writer pid {r['writer_pid']}"
        return f"{r['readers']} reader(s)"


# --------------------------------------------------------------------------------------
# Semaphores
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SemaphoreStats:
    """``statistics()`` of a Semaphore or BoundedSemaphore."""

    name: str
    value: int            #: units available now
    initial: int          #: initial value (the cap of a BoundedSemaphore)
    bounded: bool
    undo: bool
    waiters: int          #: asleep waiting (approximate)
    acquisitions: int
    contentions: int
    holders: int          #: undo: processes holding units
    reclaimed: int        #: undo: units given back from dead processes
    dead_owners: int      #: undo: dead processes whose units came back


class Semaphore(_Named, _core.Semaphore):
    """A counting semaphore shared by processes, found by name.

    ``Semaphore(name, value=1, *, undo=False, max_processes=64, zone=None)``;
    ``acquire(blocking=True, timeout=None)`` -> bool, ``release(n=1)``, ``get_value()``.
    ``value`` is used only when the semaphore is created.

    ``undo=True`` works like SysV's SEM_UNDO: the units a process holds are given back
    when it dies (waiters notice within ``liveness_interval``; ``reclaim()`` does it at
    once).  Up to ``max_processes`` processes may hold units at the same time.
    """

    __slots__ = ("_zone", "_name", "__weakref__")
    _bounded = False

    def __new__(cls, name: str, value: int = 1, *, undo: bool = False, max_processes: int = 64,
                zone: Zone | None = None, create: bool = True) -> Self:
        zone = _zone_arg(zone)
        check_int("semaphore initial value", value, 0, _core.SEM_VALUE_MAX, OverflowError)
        check_int("max_processes", max_processes, 1)
        flags = (_core.SYNCF_BOUNDED if cls._bounded else 0) | (_core.SYNCF_UNDO if undo else 0)
        off, created = _open(zone, name, _core.OBJ_SEMAPHORE, flags=flags, create=create,
                             a=value, b=max_processes if undo else 0)
        self = super().__new__(cls, zone._live(), off)
        self._zone = zone
        self._name = name
        r = self._raw()
        if r["bounded"] != cls._bounded:
            kind = "BoundedSemaphore" if r["bounded"] else "Semaphore"
            self.close()
            raise ObjectTypeError(f"{name!r} exists as a {kind}, not a {cls.__name__}")
        if r["undo"] != bool(undo) and create:
            self.close()
            raise ObjectMismatchError(f"semaphore {name!r} exists with undo={r['undo']}; it was "
                             f"opened again with undo={bool(undo)}")
        return self

    @property
    def undo(self) -> bool:
        return bool(self._raw()["undo"])

    @property
    def value(self) -> int:
        return self.get_value()

    def _reduce_kwargs(self) -> dict[str, Any]:
        return {"undo": self.undo}

    @property
    def aio(self) -> AioSemaphore:
        """Awaitable twins: ``await sem.aio.acquire(blocking=True, timeout=None)``,
        ``sem.aio.release(n=1)``, ``async with sem.aio:``."""
        from ._aio import AioSemaphore
        return AioSemaphore(self)

    def statistics(self) -> SemaphoreStats:
        r = self._raw()
        return SemaphoreStats(self._name, r["value"], r["initial"], r["bounded"], r["undo"],
                              r["waiters"], r["acquisitions"], r["contentions"], r["holders"],
                              r["reclaimed"], r["dead_owners"])

    def _repr_state(self) -> str:
        return f"value={self.get_value()}"


class BoundedSemaphore(Semaphore):
    """A Semaphore whose value never goes above its initial value: a release that would
    raises ValueError ("Semaphore released too many times")."""

    __slots__ = ()
    _bounded = True


# --------------------------------------------------------------------------------------
# Event
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EventStats:
    """``statistics()`` of an Event."""

    name: str
    is_set: bool
    waiters: int   #: asleep in wait() (approximate)
    sets: int      #: set() calls that changed the flag
    waits: int     #: wait() calls that had to wait


class Event(_Named, _core.Event):
    """A flag processes can wait for, found by name: ``set()``, ``clear()``,
    ``is_set()``, ``wait(timeout=None)`` -> the flag.  A waiter returns True if the flag
    was set while it waited, even if it was cleared again at once."""

    __slots__ = ("_zone", "_name", "__weakref__")

    def __new__(cls, name: str, *, zone: Zone | None = None, create: bool = True) -> Self:
        zone = _zone_arg(zone)
        off, _ = _open(zone, name, _core.OBJ_EVENT, create=create)
        self = super().__new__(cls, zone._live(), off)
        self._zone = zone
        self._name = name
        return self

    def statistics(self) -> EventStats:
        r = self._raw()
        return EventStats(self._name, r["is_set"], r["waiters"], r["sets"], r["waits"])

    @property
    def aio(self) -> AioEvent:
        """Awaitable twin: ``await event.aio.wait(timeout=None)``."""
        from ._aio import AioEvent
        return AioEvent(self)

    def _repr_state(self) -> str:
        return "set" if self.is_set() else "unset"


# --------------------------------------------------------------------------------------
# Condition
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConditionStats:
    """``statistics()`` of a Condition."""

    name: str
    lock: str        #: name of its lock ("<name>.lock" for its own RLock)
    waiters: int     #: in wait() now (approximate)
    notifies: int    #: notify() calls that found waiters
    waits: int


_NOTIFY_MAX = 2**31 - 1


def _condition_lock(zone: Zone, name: str) -> Lock | RLock:
    return Condition(name, zone=_canonical(zone), create=False)._lock


class Condition(_Named, _core.Condition):
    """A condition variable shared by processes, found by name.

    ``Condition(name, lock=None, *, zone=None)``: with ``lock=None`` it has its own RLock
    (kept inside the condition); otherwise ``lock`` is a named shmkit Lock or RLock of the
    same zone, recorded so that every process opening the condition uses it.
    ``wait(timeout=None)``, ``wait_for(predicate, timeout=None)``, ``notify(n=1)``,
    ``notify_all()`` with the lock held, as in :mod:`threading`; the lock's ``acquire``,
    ``release`` and context manager.  ``notify(n)`` wakes at most n waiters that are asleep
    (and any that are on their way to sleep); a waiter killed while waiting cannot take a
    notification away from the living.
    """

    __slots__ = ("_zone", "_name", "_lock", "__weakref__")
    _lock: Lock | RLock

    def __new__(cls, name: str, lock: Lock | RLock | None = None, *, zone: Zone | None = None,
                create: bool = True) -> Self:
        zone = _zone_arg(zone)
        text, text_type = None, 0
        if lock is not None:
            if not isinstance(lock, _LockBase):
                raise TypeError(f"a Condition's lock must be a shmkit Lock or RLock, not "
                                f"{type(lock).__name__}")
            if lock._reduce_as is not None:
                raise ValueError("a Condition's lock must be a named Lock or RLock, not the "
                                 "lock of another object")
            if not _same_zone(lock._zone, zone):
                raise ValueError("a Condition and its lock must be in the same zone")
            text, text_type = lock._name, lock._type_code
        off, created = _open(zone, name, _core.OBJ_CONDITION, create=create, text=text,
                             text_type=text_type)
        self = super().__new__(cls, zone._live(), off)
        self._zone = zone
        self._name = name
        r = self._raw()
        if r["lock_name"]:
            if lock is None:
                kind: type[Lock] | type[RLock] = (Lock if r["lock_type"] == _core.OBJ_LOCK
                                                  else RLock)
                lock = kind(r["lock_name"], zone=zone, create=False)
            elif lock._name != r["lock_name"]:
                self.close()
                raise ObjectMismatchError(f"condition {name!r} uses the lock {r['lock_name']!r}, not "
                                 f"{lock._name!r}")
        else:
            if lock is not None:
                self.close()
                raise ObjectMismatchError(f"condition {name!r} exists with its own lock; open it "
                                 f"without lock=")
            lock = RLock._at(zone, off + _core.COND_LOCK_OFF, f"{name}.lock",
                             (_condition_lock, (zone, name)))
        self._lock = lock
        return self

    @property
    def lock(self) -> Lock | RLock:
        return self._lock

    def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def _is_owned(self) -> bool:
        """Is the lock held by the caller (threading.Condition's helper, which code
        built on Condition calls)?"""
        return self._lock._is_owned()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def wait(self, timeout: Timeout = None) -> bool:
        """Release the lock, wait until notified or the timeout passes, re-acquire the
        lock (always, even when interrupted).  False when the timeout passed."""
        return self._wait(self._lock, timeout)

    def wait_for(self, predicate: Callable[[], T], timeout: Timeout = None) -> T:
        """Wait until ``predicate()`` is true (checked with the lock held); returns its
        last value, which is false only when the timeout passed."""
        endtime = None
        waittime = timeout
        result = predicate()
        while not result:
            if waittime is not None:
                if endtime is None:
                    endtime = time.monotonic() + waittime
                else:
                    waittime = endtime - time.monotonic()
                    if waittime <= 0:
                        break
            self._wait(self._lock, waittime)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up at most n waiters (the lock must be held)."""
        if not self._lock._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n > 0:
            self._notify(min(n, _NOTIFY_MAX))  # more than can wait is all of them

    def notify_all(self) -> None:
        """Wake up every waiter (the lock must be held)."""
        if not self._lock._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        self._notify_all()

    notifyAll = notify_all

    @property
    def aio(self) -> AioCondition:
        """Awaitable twins: ``async with cond.aio:``, ``await cond.aio.wait(timeout)``,
        ``await cond.aio.wait_for(predicate, timeout)``, ``cond.aio.notify(n)``."""
        from ._aio import AioCondition
        return AioCondition(self)

    def statistics(self) -> ConditionStats:
        r = self._raw()
        return ConditionStats(self._name, self._lock._name, r["waiters"], r["notifies"],
                              r["waits"])

    def _repr_state(self) -> str:
        return f"lock={self._lock._name!r}"


# --------------------------------------------------------------------------------------
# Barrier
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BarrierStats:
    """``statistics()`` of a Barrier."""

    name: str
    parties: int
    n_waiting: int
    broken: bool
    waiters: int      #: asleep in wait() (approximate)
    passed: int       #: times every party got through
    breaks: int       #: times it broke (abort, timeout, a party died, an action failed)


class Barrier(_Named, _core.Barrier):
    """A barrier for ``parties`` processes or threads, found by name.

    ``Barrier(name, parties, action=None, timeout=None, *, zone=None)``, as
    :class:`threading.Barrier`: ``wait(timeout=None)`` returns an arrival index
    (0..parties-1); the last party runs ``action`` (this process's callable) before the
    others are released.  ``abort()``, ``reset()``, ``broken``, ``n_waiting``, ``parties``.
    The barrier breaks (BrokenBarrierError) when a wait times out, the action raises,
    someone aborts, or a party dies while waiting.
    """

    __slots__ = ("_zone", "_name", "_action", "_timeout", "__weakref__")
    _action: Callable[[], object] | None
    _timeout: Timeout

    def __new__(cls, name: str, parties: int, action: Callable[[], object] | None = None,
                timeout: Timeout = None, *, zone: Zone | None = None,
                create: bool = True) -> Self:
        zone = _zone_arg(zone)
        check_int("parties", parties, 1, _MAX_PARTIES)
        if action is not None and not callable(action):
            raise TypeError("action must be callable or None")
        off, created = _open(zone, name, _core.OBJ_BARRIER, create=create, a=parties)
        self = super().__new__(cls, zone._live(), off)
        self._zone = zone
        self._name = name
        self._action = action
        self._timeout = timeout
        if self.parties != parties:
            have = self.parties
            self.close()
            raise ObjectMismatchError(f"barrier {name!r} exists with {have} parties, not {parties}")
        return self

    def __reduce__(self) -> _Reduce:
        return (_reopen_barrier, (self._zone, self._name, self.parties, self._action,
                                  self._timeout))

    def wait(self, timeout: Timeout = None) -> int:
        """Wait for every party; returns this party's arrival index."""
        if timeout is None:
            timeout = self._timeout
        index, gen, last = self._wait(timeout)
        if last:
            if self._action is not None:
                try:
                    self._action()
                except BaseException:
                    self.abort()
                    raise
            self._complete(gen)
        return index

    @property
    def aio(self) -> AioBarrier:
        """Awaitable twin: ``await barrier.aio.wait(timeout=None)``."""
        from ._aio import AioBarrier
        return AioBarrier(self)

    @property
    def parties(self) -> int:
        return int(self._raw()["parties"])

    @property
    def n_waiting(self) -> int:
        return int(self._raw()["n_waiting"])

    @property
    def broken(self) -> bool:
        return bool(self._raw()["broken"])

    def statistics(self) -> BarrierStats:
        r = self._raw()
        return BarrierStats(self._name, r["parties"], r["n_waiting"], r["broken"], r["waiters"],
                            r["passed"], r["breaks"])

    def _repr_state(self) -> str:
        r = self._raw()
        return "broken" if r["broken"] else f"{r['n_waiting']}/{r['parties']} waiting"


def _reopen_barrier(zone: Zone, name: str, parties: int,
                    action: Callable[[], object] | None, timeout: Timeout) -> Barrier:
    return Barrier(name, parties, action, timeout, zone=_canonical(zone), create=False)


# --------------------------------------------------------------------------------------
# Value and Array
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ValueStats:
    """``statistics()`` of a Value or Array."""

    name: str
    type: str          #: typecode or ctypes type name
    length: int        #: elements (1 for a Value)
    nbytes: int
    lock: LockStats | None


_VALUE_FIELDS = struct.Struct("=QQQQ")   # elem_size, length, data_size, reserved


def _resolve_ctype(typecode_or_type: object) -> tuple[Any, str]:  # (a ctypes type, its name)
    if isinstance(typecode_or_type, str):
        try:
            t = typecode_to_type[typecode_or_type]
        except KeyError:
            raise ValueError(f"unknown typecode {typecode_or_type!r}; use one of "
                             f"{''.join(sorted(typecode_to_type))} or a ctypes type") from None
        return t, typecode_or_type
    if isinstance(typecode_or_type, type) and issubclass(
            typecode_or_type, (ctypes._SimpleCData, ctypes.Structure, ctypes.Union,
                               ctypes.Array)):
        tname = getattr(typecode_or_type, "__qualname__", typecode_or_type.__name__)
        return typecode_or_type, tname[:_core.VALUE_TYPENAME_MAX]
    raise TypeError(f"expected a typecode or a ctypes type, not {typecode_or_type!r}")


class _ValueBase(_Named):
    __slots__ = ("_zone", "_name", "_obj", "_lock", "_off", "_view", "_type_name", "__weakref__")
    _type_code = 0
    _obj: Any                 # the ctypes object over the shared bytes (None once closed)
    _lock: Lock | RLock | None
    _off: int
    _view: memoryview | None
    _type_name: str

    def _setup(self, zone: Zone, name: str, ctype: type[Any], type_name: str, length: int | None,
               init_bytes: bytes | None, lock: bool | Lock | RLock | None,
               create: bool) -> bool:
        esize = ctypes.sizeof(ctype)
        off, created = _open(zone, name, self._type_code, flags=_core.SYNCF_LOCKED,
                             create=create, a=esize, b=length or 0, text=type_name,
                             data=init_bytes)
        core = zone._live()
        head = core.view(off, _core.VALUE_DATA_OFF, True)
        elem_size, have_len, data_size, _ = _VALUE_FIELDS.unpack_from(head, 16)
        have_type = bytes(head[48:48 + _core.VALUE_TYPENAME_MAX + 1]).split(b"\0", 1)[0].decode(
            errors="replace")
        head.release()
        kind = type(self).__name__
        if elem_size != esize or have_type != type_name:
            raise ObjectTypeError(f"{kind} {name!r} exists holding {have_type!r} "
                                  f"({elem_size} bytes each), not {type_name!r} ({esize} bytes)")
        if length is not None and have_len != length:
            raise ObjectMismatchError(f"{kind} {name!r} exists with {have_len} elements, not {length}")
        self._zone = zone
        self._name = name
        self._off = off
        self._type_name = type_name
        self._view = core.view(off + _core.VALUE_DATA_OFF, max(data_size, 1))
        full = ctype if self._type_code == _core.OBJ_VALUE else ctype * have_len
        self._obj = full.from_buffer(self._view)
        self._lock = None
        if lock is True:
            self._lock = RLock._at(zone, off + _core.VALUE_LOCK_OFF, f"{name}.lock",
                                   (_value_lock, (type(self), zone, name)))
        elif lock is False or lock is None:
            pass
        elif isinstance(lock, (Lock, RLock)):
            self._lock = lock
        else:
            raise TypeError(f"lock must be True, False or a shmkit Lock/RLock, not "
                            f"{type(lock).__name__}")
        return created

    def _lock_arg(self) -> bool | Lock | RLock:
        """What `lock=` reproduces this handle's lock: True for the lock kept with the
        data, the lock itself (it pickles by name) for a named one, False for none."""
        if self._lock is None:
            return False
        return True if self._lock._reduce_as is not None else self._lock

    def get_obj(self) -> Any:
        """The ctypes object over the shared bytes (no locking)."""
        return self._obj

    def get_lock(self) -> Lock | RLock:
        """The lock that guards the value (an RLock kept with it unless another was
        given)."""
        if self._lock is None:
            raise AttributeError(f"{type(self).__name__} {self._name!r} was opened with "
                                 f"lock=False; it has no lock")
        return self._lock

    def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        return self.get_lock().acquire(blocking, timeout)

    def release(self) -> None:
        self.get_lock().release()

    def __enter__(self) -> bool:
        return self.get_lock().__enter__()

    def __exit__(self, *exc: object) -> None:
        self.get_lock().release()

    @property
    def closed(self) -> bool:
        return self._obj is None

    def close(self) -> None:
        """Drop this handle (the data stay in the zone)."""
        self._obj = None
        if self._view is not None:
            try:
                self._view.release()
            except BufferError:
                pass  # ctypes still exports it; it goes with the last reference
            self._view = None

    def statistics(self) -> ValueStats:
        lock_stats = self._lock.statistics() if self._lock is not None else None
        n = len(self._obj) if self._type_code == _core.OBJ_ARRAY else 1
        return ValueStats(self._name, self._type_name, n, ctypes.sizeof(self._obj), lock_stats)


def _value_lock(cls: type[_ValueBase], zone: Zone, name: str) -> RLock:
    zone = _canonical(zone)
    info = zone.find(name)
    if info.type_code != cls._type_code:
        raise ObjectTypeError(f"{name!r} is a {info.type}, not a {cls.__name__}")
    return RLock._at(zone, info.offset + _core.VALUE_LOCK_OFF, f"{name}.lock",
                     (_value_lock, (cls, zone, name)))


class Value(_ValueBase):
    """A ctypes value in shared memory, found by name (``multiprocessing.Value``).

    ``Value(name, typecode_or_type, *args, lock=True, zone=None)``: ``args`` initialise
    it when it is created.  ``.value`` reads and writes it under its lock;
    ``get_lock()`` and ``with v:`` give the lock for read-modify-write
    (``with v.get_lock(): v.value += 1``); ``get_obj()`` is the raw ctypes object.
    ``lock=True`` uses an RLock kept with the value; ``lock=False`` none; or pass a shmkit
    Lock/RLock.
    """

    __slots__ = ()
    _type_code = _core.OBJ_VALUE

    def __init__(self, name: str, typecode_or_type: str | type[Any], *args: Any,
                 lock: bool | Lock | RLock = True, zone: Zone | None = None,
                 create: bool = True) -> None:
        zone = _zone_arg(zone)
        ctype, tname = _resolve_ctype(typecode_or_type)
        init = bytes(memoryview(ctype(*args)).cast("B")) if args else None
        self._setup(zone, name, ctype, tname, 1, init, lock, create)

    def __reduce__(self) -> _Reduce:
        return (_reopen_value, (type(self), self._zone, self._name, self._type_name,
                                self._lock_arg()))

    @property
    def value(self) -> Any:
        lock = self._lock
        if lock is None:
            return self._obj.value
        with lock:
            return self._obj.value

    @value.setter
    def value(self, v: Any) -> None:
        lock = self._lock
        if lock is None:
            self._obj.value = v
            return
        with lock:
            self._obj.value = v

    def _repr_state(self) -> str:
        return f"{self._type_name}={self._obj.value!r}"


def _reopen_value(cls: type[Value], zone: Zone, name: str, type_name: str,
                  lock: bool | Lock | RLock) -> Value:
    t = type_name if type_name in typecode_to_type else None
    if t is None:
        # a ctypes type is not recorded by value: open with the raw size via an Array of
        # bytes is not what the user wants; require the type on the other side
        raise TypeError(f"{cls.__name__} {name!r} holds a ctypes type ({type_name}); "
                        f"open it by name with that type in the other process")
    return cls(name, t, lock=lock, zone=_canonical(zone), create=False)


class Array(_ValueBase):
    """A ctypes array in shared memory, found by name (``multiprocessing.Array``).

    ``Array(name, typecode_or_type, size_or_initializer, lock=True, zone=None)``.
    Indexing and slicing read and write under its lock; ``len()``, iteration,
    ``get_obj()``, ``get_lock()``; ``.value``/``.raw`` for arrays of 'c'.
    """

    __slots__ = ()
    _type_code = _core.OBJ_ARRAY

    def __init__(self, name: str, typecode_or_type: str | type[Any],
                 size_or_initializer: int | Iterable[Any], *, lock: bool | Lock | RLock = True,
                 zone: Zone | None = None, create: bool = True) -> None:
        zone = _zone_arg(zone)
        ctype, tname = _resolve_ctype(typecode_or_type)
        if isinstance(size_or_initializer, int) and not isinstance(size_or_initializer, bool):
            if size_or_initializer < 0:
                raise ValueError("array size must be >= 0")
            length, init = size_or_initializer, None
        else:
            items = list(size_or_initializer)  # type: ignore[arg-type]  # a bool: TypeError
            length = len(items)
            init = bytes(memoryview((ctype * length)(*items)).cast("B")) if length else None
        self._setup(zone, name, ctype, tname, length, init, lock, create)

    def __reduce__(self) -> _Reduce:
        return (_reopen_array, (type(self), self._zone, self._name, self._type_name,
                                len(self._obj), self._lock_arg()))

    def __len__(self) -> int:
        return len(self._obj)

    def __getitem__(self, i: int | slice) -> Any:
        lock = self._lock
        if lock is None:
            return self._obj[i]
        with lock:
            return self._obj[i]

    def __setitem__(self, i: int | slice, v: Any) -> None:
        lock = self._lock
        if lock is None:
            self._obj[i] = v
            return
        with lock:
            self._obj[i] = v

    def __iter__(self) -> Iterator[Any]:
        return iter(self[:])

    def tolist(self) -> list[Any]:
        return list(self[:])

    @property
    def value(self) -> bytes:
        """For arrays of 'c': the bytes up to the first NUL."""
        with self._lock_or_null():
            return bytes(self._obj.value)

    @value.setter
    def value(self, v: bytes) -> None:
        with self._lock_or_null():
            self._obj.value = v

    @property
    def raw(self) -> bytes:
        """For arrays of 'c': all the bytes."""
        with self._lock_or_null():
            return bytes(self._obj.raw)

    @raw.setter
    def raw(self, v: bytes) -> None:
        with self._lock_or_null():
            self._obj.raw = v

    def _lock_or_null(self) -> Lock | RLock | _NullContext:
        return self._lock if self._lock is not None else _NullContext()

    def _repr_state(self) -> str:
        return f"{self._type_name}[{len(self._obj)}]"


class _NullContext:
    def __enter__(self) -> _NullContext:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _reopen_array(cls: type[Array], zone: Zone, name: str, type_name: str, length: int,
                  lock: bool | Lock | RLock) -> Array:
    if type_name not in typecode_to_type:
        raise TypeError(f"{cls.__name__} {name!r} holds a ctypes type ({type_name}); open it "
                        f"by name with that type in the other process")
    return cls(name, type_name, length, lock=lock, zone=_canonical(zone), create=False)


# --------------------------------------------------------------------------------------
# Counter
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CounterStats:
    """``statistics()`` of a Counter."""

    name: str
    value: int


# CounterOperators first: its repr state stands before _Named's
class Counter(CounterOperators, _Named, _core.Counter):
    """A 64-bit signed integer changed by atomic instructions, without a lock.

    ``Counter(name, initial=0, *, zone=None)``; ``add(n=1)``, ``sub(n=1)``, ``inc()``,
    ``dec()`` return the new value; ``get()``, ``set(v)``, ``exchange(v)`` (returns the
    old value), ``compare_and_swap(expected, new)`` -> bool, ``value`` property,
    ``c += n``.  Arithmetic wraps around modulo 2**64 as the hardware's does.
    ``initial`` is used only when the counter is created.
    """

    __slots__ = ("_zone", "_name", "__weakref__")

    def __new__(cls, name: str, initial: int = 0, *, zone: Zone | None = None,
                create: bool = True) -> Self:
        zone = _zone_arg(zone)
        if not isinstance(initial, int) or isinstance(initial, bool):
            raise TypeError(f"initial must be an int, not {type(initial).__name__}")
        if not -(1 << 63) <= initial < (1 << 63):
            raise OverflowError("Counter holds a signed 64-bit integer")
        off, _ = _open(zone, name, _core.OBJ_COUNTER, create=create, a=initial)
        self = super().__new__(cls, zone._live(), off)
        self._zone = zone
        self._name = name
        return self

    def statistics(self) -> CounterStats:
        return CounterStats(self._name, self.get())

