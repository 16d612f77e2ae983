"""Lock, RLock, Semaphore, BoundedSemaphore, Event and Counter on Redis.

The methods are those of ``shmkit.sync`` (and so of threading).  What differs across
machines: a hold is a *lease* of ``lease`` seconds that a background thread renews while
the process lives.  A holder that is killed or cut off from Redis loses it when the lease
runs out; the next acquirer then sees ``owner_died``.  Every acquisition of a lock or a
semaphore unit gets a *fencing token* (``fencing_token``), larger than every token handed
out before it, to pass to the resource the lock protects so that it can refuse a write
from a holder whose lease ran out without it noticing.  Waiters block server-side (BLPOP
on a token list, see _protocol) and are woken by the release; when the holder might be
dead they wake up as its lease runs out.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .. import _core
from .._checks import check_int
from .._errors import NotOwnerError, ObjectTypeError
from .._surface import CounterOperators
from . import _protocol as P
from ._base import RedisObject, blocking_timeout, check_release_count, wait_timeout
from ._zone import RedisZone, Wait, new_id, process_identity

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._aio import AioEvent, AioLock, AioSemaphore

__all__ = ["RedisLock", "RedisRLock", "RedisSemaphore", "RedisBoundedSemaphore", "RedisEvent",
           "RedisCounter", "RedisLockStats", "RedisSemaphoreStats", "RedisEventStats",
           "RedisCounterStats"]


def _int(v: Any) -> int:
    return int(v) if v not in (None, b"") else 0


def _str(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return "" if v is None else str(v)


class RedisHoldBase(RedisObject):
    """What RedisLockBase and RedisSemaphore share: an acquire that waits on a token list
    (see _protocol, "Waiting"), a hold that is a lease renewed while this process lives,
    ``fencing_token`` and ``owner_died``.  The awaitable acquire is _aio.aacquire."""

    #: the acquire script, and where in its ARGV (from 0) prev_wid stands: wid, wait_ms
    #: and first_try follow it
    _acquire_script: ClassVar[P.Script]
    _round_at: ClassVar[int]
    _keys: tuple[str, ...]
    owner_died: bool
    fencing_token: int | None

    def _acquire_args(self) -> tuple[str, list[P.Arg]]:
        """What a hold taken now is recorded as, and the acquire script's arguments."""
        raise NotImplementedError

    def _record(self, hold: str) -> None:
        """Remember ``hold`` (just granted) for renewal and release."""
        raise NotImplementedError

    def _give_back(self, hold: str) -> tuple[P.Script, list[P.Arg]]:
        """The script and arguments that release ``hold`` (granted to an acquire that was
        cancelled before it heard so)."""
        raise NotImplementedError

    def _renew(self) -> None:
        """Renew the leases of this process's holds (the zone's renewing thread)."""
        raise NotImplementedError

    def _acquire(self, seconds: float | None) -> bool:
        zone = self._live()
        hold, args = self._acquire_args()
        at = self._round_at

        def attempt(wid: str, prev: str, ms: int) -> P.Reply:
            args[at], args[at + 1], args[at + 2] = prev, wid, ms
            r = zone.run(self._acquire_script, self._keys, args)
            args[at + 3] = "0"      # a contention is counted on the first try only
            return r

        got, r = Wait(zone, self._base, seconds).until(attempt, P.granted, P.lease_left_ms)
        if got:
            self._held(r, hold)
        return got

    def _held(self, r: P.Reply, hold: str) -> None:
        """The acquire script granted ``hold`` (reply ``r``): recorded, renewed from now."""
        self.fencing_token = int(r[1])
        self.owner_died = bool(r[2])
        self._record(hold)
        self._zone._renew_later(self)

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._acquire(None)         # acquire(), blocking for ever
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- Lock and RLock ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RedisLockStats:
    """``statistics()`` of a RedisLock or RedisRLock (a snapshot)."""

    name: str
    locked: bool
    owner: str                 #: "<host>:<pid>:<random>" (RLock: ":<thread id>" added); "" free
    lease_left: float          #: seconds before the holder's lease runs out (<= 0: ran out)
    fencing_token: int         #: token of the current (or last) hold
    count: int                 #: recursion depth (RLock)
    waiters: int               #: blocked acquirers (approximate)
    acquisitions: int
    contentions: int           #: acquires that found it held
    owner_deaths: int          #: holds taken over after the holder's lease ran out
    last_owner_death_ns: int   #: the server's clock at the last take-over (0: never)
    last_dead_owner: str       #: the holder whose lease ran out last


class RedisLockBase(RedisHoldBase):
    """What RedisLock and RedisRLock share (the rlock owns per thread, the lock per
    process)."""

    _kind = "lock"
    _reentrant = False
    _acquire_script = P.LOCK_ACQUIRE
    _round_at = 4

    def __init__(self, name: str, *, zone: RedisZone, create: bool = True,
                 lease: float | None = None) -> None:
        self._setup(zone, name, create=create, lease=lease)
        self._keys = (f"{self._base}:lock", f"{self._base}:waiters")
        self.owner_died = False
        self.fencing_token: int | None = None
        self._held_as: str | None = None   # the owner string this handle renews, while held
        self._renew_lock = threading.Lock()

    @classmethod
    def _reopen(cls, zone: RedisZone, name: str, kw: dict[str, Any]) -> Self:
        return cls(name, zone=zone, create=False, **kw)

    def _owner(self) -> str:
        ident = process_identity()
        if self._reentrant:
            return f"{ident}:{threading.get_ident()}"
        return ident

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock: True when taken, False when not (``blocking=False``, or the
        timeout passed).  After it, ``owner_died`` says whether the previous holder's
        lease ran out while it held the lock, and ``fencing_token`` is this hold's token."""
        return self._acquire(blocking_timeout(blocking, timeout))

    # -- what the blocking and the awaitable calls share ----------------------------------
    def _acquire_args(self) -> tuple[str, list[P.Arg]]:
        owner = self._owner()
        return owner, [self._base, owner, self._lease_ms, "1" if self._reentrant else "0",
                       "", "", 0, "1", new_id()]

    def _record(self, hold: str) -> None:
        with self._renew_lock:
            self._held_as = hold

    def _give_back(self, hold: str) -> tuple[P.Script, list[P.Arg]]:
        return P.LOCK_RELEASE, self._release_args(hold)

    def _release_args(self, owner: str) -> list[P.Arg]:
        return [self._base, owner, "1" if self._reentrant else "0"]

    def _released(self, r: P.Reply, owner: str) -> None:
        """After LOCK_RELEASE (reply ``r``): NotOwnerError, or the hold forgotten once the
        last level of it is released."""
        if r == -1:
            raise NotOwnerError(f"release of {self._kind} {self._name!r}, which "
                                f"{'this thread' if self._reentrant else 'this process'} "
                                "does not hold (never acquired, already released, or its "
                                "lease ran out and another process took it)")
        if r == 0:
            with self._renew_lock:
                if self._held_as == owner:
                    self._held_as = None

    @property
    def aio(self) -> AioLock:
        """Awaitable twins: ``await lock.aio.acquire()``, ``await lock.aio.release()``,
        ``async with lock.aio:``."""
        from ._aio import AioLock
        return AioLock(self)

    def release(self) -> None:
        """Release the lock; NotOwnerError (a RuntimeError) when this process (RLock: this
        thread) does not hold it, also when its lease ran out and another took it."""
        zone = self._live()
        owner = self._owner()
        self._released(zone.run(P.LOCK_RELEASE, self._keys, self._release_args(owner)), owner)

    def _renew(self) -> None:
        with self._renew_lock:
            owner = self._held_as
        if owner is None or self._closed:
            return
        if not self._zone.run(P.LOCK_RENEW, self._keys, [self._base, owner, self._lease_ms]):
            with self._renew_lock:
                if self._held_as == owner:
                    self._held_as = None

    def locked(self) -> bool:
        """True if some process holds it (and its lease has not run out)."""
        s = self._state()
        return bool(s[0]) and int(s[1]) > 0

    def _state(self) -> P.Reply:
        # [owner, ms left, fence, count, waiters, acquisitions, contentions, deaths,
        #  last death ms, last dead owner]
        return self._live().run(P.LOCK_STATE, self._keys, [self._base])

    def statistics(self) -> RedisLockStats:
        s = self._state()
        owner = _str(s[0])
        left = int(s[1]) / 1000
        return RedisLockStats(self._name, bool(owner) and left > 0, owner, left if owner else 0.0,
                              _int(s[2]), _int(s[3]), int(s[4]), _int(s[5]), _int(s[6]),
                              _int(s[7]), _int(s[8]) * 1_000_000, _str(s[9]))

    def _repr_state(self) -> str:
        s = self._state()
        owner = _str(s[0])
        if not owner or int(s[1]) <= 0:
            return "unlocked"
        return f"held by {owner}"


class RedisLock(RedisLockBase):
    """A lock shared by every process that names it in the same RedisZone.

    ``zone.lock(name, *, create=True, lease=None)``.  ``acquire(blocking=True,
    timeout=-1)``, ``release()``, ``locked()``, ``with``, as ``shmkit.Lock``.  It belongs
    to the *process* that acquired it (any of its threads may release it).  If that
    process dies or is partitioned from Redis, the lock is free once its lease runs out;
    the next acquire returns True with ``owner_died`` True.  ``fencing_token`` is the
    token of this handle's last acquisition (increasing with every acquisition).
    """


class RedisRLock(RedisLockBase):
    """A reentrant lock on Redis: the *thread* that holds it may acquire it again; it is
    free when released as many times.  Otherwise as RedisLock."""

    _kind = "rlock"
    _reentrant = True


# -- Semaphores ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RedisSemaphoreStats:
    """``statistics()`` of a RedisSemaphore."""

    name: str
    value: int            #: units available now
    initial: int
    bounded: bool
    holders: int          #: units held under a lease now
    waiters: int          #: blocked acquirers (approximate)
    acquisitions: int
    contentions: int
    reclaimed: int        #: units given back because their holder's lease ran out


# units of a semaphore this process holds, shared by its handles: base -> [unit, ...]
# (RedisSemaphore._hold, _mine and _forget are the only ones to touch them)
_units: dict[str, list[str]] = {}
_units_lock = threading.Lock()
_units_pid: list[int | None] = [None]


def _held_units(base: str) -> list[str]:
    with _units_lock:
        if _units_pid[0] != os.getpid():      # a forked child holds nothing
            _units.clear()
            _units_pid[0] = os.getpid()
        return _units.setdefault(base, [])


class RedisSemaphore(RedisHoldBase):
    """A counting semaphore on Redis: ``zone.semaphore(name, value=1, *, create=True,
    lease=None)``.

    ``acquire(blocking=True, timeout=None)`` -> bool, ``release(n=1)``, ``get_value()``,
    ``value``, ``with``.  Each unit taken is leased to the acquiring process: the units of
    a process that dies or is cut off come back when their lease runs out (like
    ``undo=True`` locally; ``owner_died`` is True after an acquire that needed such a
    unit, ``statistics().reclaimed`` counts them).  A release gives back a unit this
    process holds if it has one, else adds a unit (as threading.Semaphore does).
    """

    _kind = "semaphore"
    _bounded = False
    _acquire_script = P.SEM_ACQUIRE
    _round_at = 3

    def __init__(self, name: str, value: int = 1, *, zone: RedisZone, create: bool = True,
                 lease: float | None = None, undo: bool | None = None,
                 max_processes: int | None = None) -> None:
        # undo and max_processes are shmkit.Semaphore's: every unit here is leased to its
        # process, which is what undo=True means, for any number of processes
        check_int("semaphore initial value", value, 0, _core.SEM_VALUE_MAX, OverflowError)
        self._setup(zone, name, create=create, lease=lease)
        self._keys = (f"{self._base}:sem", f"{self._base}:holders", f"{self._base}:waiters")
        initial, bounded = zone.run(P.SEM_INIT, self._keys,
                                    [self._base, value, "1" if self._bounded else "0"])
        if (bounded == b"1") != self._bounded:
            kind = "BoundedSemaphore" if bounded == b"1" else "Semaphore"
            raise ObjectTypeError(f"{name!r} exists as a {kind}, not a {type(self).__name__}")
        self._initial = int(initial)
        self.owner_died = False
        self.fencing_token: int | None = None
        self._renew_lock = threading.Lock()

    @classmethod
    def _reopen(cls, zone: RedisZone, name: str, kw: dict[str, Any]) -> Self:
        return cls(name, zone=zone, create=False, **kw)

    # -- the units this process holds (its blocking and awaitable calls share them) ----------
    def _hold(self, unit: str) -> None:
        """Record ``unit`` (``owner#nonce``), just granted: renewed, and given back first."""
        units = _held_units(self._base)
        with _units_lock:
            units.append(unit)

    def _mine(self, n: int) -> list[str]:
        """The (up to ``n``) units of this process that a release of ``n`` gives back."""
        units = _held_units(self._base)
        with _units_lock:
            return units[-n:] if n <= len(units) else list(units)

    def _forget(self, gone: list[str]) -> None:
        """``gone`` are held no more (released, or their lease ran out)."""
        units = _held_units(self._base)
        with _units_lock:
            for u in gone:
                if u in units:
                    units.remove(u)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take one unit; True when taken, False when not in time."""
        return self._acquire(blocking_timeout(blocking, timeout, default=None))

    def _acquire_args(self) -> tuple[str, list[P.Arg]]:
        owner = process_identity()
        nonce = new_id()
        return f"{owner}#{nonce}", [self._base, owner, self._lease_ms, "", "", 0, "1", nonce]

    def _record(self, hold: str) -> None:
        self._hold(hold)

    def _give_back(self, hold: str) -> tuple[P.Script, list[P.Arg]]:
        return P.SEM_RELEASE, [self._base, 1, hold]

    @property
    def aio(self) -> AioSemaphore:
        """Awaitable twins: ``await sem.aio.acquire()``, ``await sem.aio.release()``,
        ``async with sem.aio:``."""
        from ._aio import AioSemaphore
        return AioSemaphore(self)

    def release(self, n: int = 1) -> None:
        """Give ``n`` units back (this process's own first).  A BoundedSemaphore raises
        ValueError when that would pass its initial value."""
        n = check_release_count(n, bounded=self._bounded)
        zone = self._live()
        mine = self._mine(n)
        self._released(zone.run(P.SEM_RELEASE, self._keys, [self._base, n, *mine]), mine)

    def _released(self, r: P.Reply, mine: list[str]) -> None:
        """After SEM_RELEASE of ``mine`` (reply ``r``)."""
        if r == -1:
            raise ValueError("Semaphore released too many times")
        self._forget(mine)

    def _renew(self) -> None:
        units = _held_units(self._base)
        with _units_lock:
            mine = list(units)
        if not mine or self._closed:
            return
        lost = self._zone.run(P.SEM_RENEW, self._keys, [self._base, self._lease_ms, *mine])
        if lost:
            self._forget([_str(u) for u in lost])

    def _state(self) -> P.Reply:
        # [value, initial, bounded, holders, waiters, acquisitions, contentions, reclaimed]
        return self._live().run(P.SEM_STATE, self._keys, [self._base])

    def get_value(self) -> int:
        """Units available now (after giving back those of expired leases)."""
        return int(self._state()[0])

    @property
    def value(self) -> int:
        return self.get_value()

    def statistics(self) -> RedisSemaphoreStats:
        s = self._state()
        return RedisSemaphoreStats(self._name, int(s[0]), int(s[1]), s[2] == b"1", int(s[3]),
                                   int(s[4]), int(s[5]), int(s[6]), int(s[7]))

    def _repr_state(self) -> str:
        return f"value={self.get_value()}"


class RedisBoundedSemaphore(RedisSemaphore):
    """A RedisSemaphore whose value never goes above its initial value: such a release
    raises ValueError ("Semaphore released too many times")."""

    _kind = "semaphore"
    _bounded = True


# -- Event -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RedisEventStats:
    name: str
    is_set: bool
    waiters: int    #: blocked in wait() (approximate)
    sets: int       #: set() calls that changed the flag
    waits: int      #: wait() calls that had to wait


class RedisEvent(RedisObject):
    """A flag processes on any machine can wait for: ``set()``, ``clear()``,
    ``is_set()``, ``wait(timeout=None)`` -> the flag.  A waiter returns True if the flag
    was set while it waited, even if it was cleared again at once."""

    _kind = "event"

    def __init__(self, name: str, *, zone: RedisZone, create: bool = True,
                 lease: float | None = None) -> None:
        self._setup(zone, name, create=create, lease=lease)
        self._keys = (f"{self._base}:event", f"{self._base}:waiters")

    @classmethod
    def _reopen(cls, zone: RedisZone, name: str, kw: dict[str, Any]) -> Self:
        return cls(name, zone=zone, create=False, **kw)

    def set(self) -> None:
        self._live().run(P.EVENT_SET, self._keys, [self._base])

    def clear(self) -> None:
        self._live().execute("HSET", self._keys[0], "flag", "0")

    def is_set(self) -> bool:
        return bool(self._live().execute("HGET", self._keys[0], "flag") == b"1")

    isSet = is_set

    @property
    def aio(self) -> AioEvent:
        """Awaitable twin: ``await event.aio.wait(timeout=None)``."""
        from ._aio import AioEvent
        return AioEvent(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set (True) or ``timeout`` seconds pass (False)."""
        try:
            seconds = wait_timeout(timeout)
        except (TypeError, ValueError, OverflowError):
            if self.is_set():  # as threading's (and the local) Event: no wait, no look
                return True
            raise
        zone = self._live()
        seen = ""              # the generation of the flag at the first look

        def attempt(wid: str, prev: str, ms: int) -> P.Reply:
            nonlocal seen
            r = zone.run(P.EVENT_WAIT, self._keys, [self._base, prev, wid, ms, seen])
            if seen == "" and not P.granted(r):
                seen = str(r[1])
            return r

        return Wait(zone, self._base, seconds).until(attempt, P.granted)[0]

    def statistics(self) -> RedisEventStats:
        s = self._live().run(P.EVENT_STATE, self._keys, [self._base])
        return RedisEventStats(self._name, s[0] == b"1", int(s[3]), _int(s[1]), _int(s[2]))

    def _repr_state(self) -> str:
        return "set" if self.is_set() else "unset"


# -- Counter ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RedisCounterStats:
    name: str
    value: int


class RedisCounter(CounterOperators, RedisObject):
    """A signed 64-bit integer changed atomically by the server (INCRBY):
    ``add(n=1)``, ``sub(n=1)``, ``inc()``, ``dec()`` return the new value; ``get()``,
    ``set(v)``, ``exchange(v)`` (returns the old value), ``compare_and_swap(expected,
    new)`` -> bool, ``value``, ``c += n``.  ``initial`` is used only when it is created.
    Unlike the local Counter, a result outside the 64-bit range raises OverflowError
    instead of wrapping around (Redis refuses it)."""

    _kind = "counter"

    def __init__(self, name: str, initial: int = 0, *, zone: RedisZone, create: bool = True,
                 lease: float | None = None) -> None:
        if not isinstance(initial, int) or isinstance(initial, bool):
            raise TypeError(f"initial must be an int, not {type(initial).__name__}")
        if not P.INT64_MIN <= initial <= P.INT64_MAX:
            raise OverflowError("Counter holds a signed 64-bit integer")
        self._setup(zone, name, create=create, lease=lease)
        self._key = f"{self._base}:value"
        zone.execute("SET", self._key, initial, "NX")
        self._exec = zone.execute

    @classmethod
    def _reopen(cls, zone: RedisZone, name: str, kw: dict[str, Any]) -> Self:
        return cls(name, zone=zone, create=False, **kw)

    def _n(self, n: object) -> int:
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"a Counter adds ints, not {type(n).__name__}")
        if not P.INT64_MIN <= n <= P.INT64_MAX:
            raise OverflowError("Counter holds a signed 64-bit integer")
        return n

    def add(self, n: int = 1) -> int:
        self._live()
        try:
            return int(self._exec("INCRBY", self._key, self._n(n)))
        except Exception as err:  # noqa: BLE001  (the overflow Redis reports)
            if "overflow" in str(err):
                raise OverflowError(f"counter {self._name!r}: the result would not fit in "
                                    "a signed 64-bit integer") from None
            raise

    def sub(self, n: int = 1) -> int:
        return self.add(-self._n(n))

    def inc(self) -> int:
        return self.add(1)

    def dec(self) -> int:
        return self.add(-1)

    def get(self) -> int:
        self._live()
        return int(self._exec("GET", self._key) or 0)

    def set(self, value: int) -> None:
        self._live()
        self._exec("SET", self._key, self._n(value))

    def exchange(self, value: int) -> int:
        self._live()
        old = self._exec("SET", self._key, self._n(value), "GET", get=True)
        return int(old or 0)

    def compare_and_swap(self, expected: int, new: int) -> bool:
        zone = self._live()
        return bool(zone.run(P.COUNTER_CAS, (self._key,),
                             [self._base, self._n(expected), self._n(new)]))

    @property
    def value(self) -> int:
        return self.get()

    @value.setter
    def value(self, v: int) -> None:
        self.set(v)

    def statistics(self) -> RedisCounterStats:
        return RedisCounterStats(self._name, self.get())

