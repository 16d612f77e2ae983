"""What every RedisZone object shares: name, zone, lease, pickling by name, argument
conventions of threading and queue.Queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _core
from .._errors import ClosedError, TooLargeError
from ._zone import RedisZone, check_lease

if TYPE_CHECKING:
    from typing_extensions import Self


class RedisObject:
    """Base of the objects of a RedisZone."""

    _kind = ""
    _closed = True
    # set by _setup(), first thing in every constructor
    _zone: RedisZone
    _name: str
    _lease: float
    _lease_ms: int
    _created: bool
    _base: str

    def _setup(self, zone: RedisZone, name: str, *, create: bool = True,
               lease: float | None = None, exclusive: bool = False) -> None:
        if not isinstance(zone, RedisZone):
            raise TypeError(f"zone must be a shmkit.RedisZone, not {type(zone).__name__}")
        self._zone = zone
        self._name = name
        self._lease = zone.lease if lease is None else check_lease(lease)
        self._lease_ms = int(self._lease * 1000)
        self._created = zone._register(name, self._kind, create, exclusive)
        self._base = zone.base(name)
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def zone(self) -> RedisZone:
        return self._zone

    @property
    def lease(self) -> float:
        """Seconds a hold of this process survives without renewal (see RedisZone)."""
        return self._lease

    @property
    def created(self) -> bool:
        """True if this handle created the object (False: it attached to it)."""
        return self._created

    @property
    def closed(self) -> bool:
        return self._closed

    def _live(self) -> RedisZone:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")
        return self._zone

    def close(self) -> None:
        """Drop this handle (the object stays on the server)."""
        self._closed = True

    @classmethod
    def _reopen(cls, zone: RedisZone, name: str, kw: dict[str, Any]) -> Self:
        """The object ``name`` of ``zone`` attached again (an unpickled handle): each kind
        of object says how."""
        raise NotImplementedError

    def _reduce_kwargs(self) -> dict[str, Any]:
        return {}

    def __reduce__(self) -> tuple[Any, ...]:
        kw = self._reduce_kwargs()
        if self._lease != self._zone.lease:
            kw["lease"] = self._lease
        return (_reopen, (type(self), self._zone, self._name, kw))

    def _repr_state(self) -> str:
        return ""

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._repr_state()
        return (f"<shmkit.{type(self).__name__} {self._name!r} in Redis zone "
                f"{self._zone.name!r}{' ' + state if state else ''}>")


def _reopen(cls: type[RedisObject], zone: RedisZone, name: str,
            kw: dict[str, Any]) -> RedisObject:
    return cls._reopen(zone, name, kw)


def blocking_timeout(blocking: object, timeout: object, *,
                     default: float | None = -1) -> float | None:
    """threading's ``acquire(blocking, timeout)`` conventions, checked by the same code as
    the local objects' (shmkit._core.timeout_seconds): the seconds to wait, None for
    ever, 0 for a single try.  ``default=-1``: Lock's rules (-1 is forever);
    ``default=None``: Semaphore's (None is forever, <= 0 a single try)."""
    rule = _core.TIMEOUT_LOCK if default is not None else _core.TIMEOUT_SEMAPHORE
    return _core.timeout_seconds(timeout, blocking, rule)


def queue_timeout(block: object, timeout: float | None) -> float | None:
    """queue.Queue's ``put/get(block, timeout)``: 0 for a single try, None for ever."""
    if not block:
        return 0.0
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return wait_timeout(timeout)


def wait_timeout(timeout: object) -> float | None:
    """``wait(timeout=None)``: None for ever, 0.0 (<= 0) a single look, else seconds."""
    return _core.timeout_seconds(timeout, True, _core.TIMEOUT_WAIT)


def check_release_count(n: object, *, bounded: bool = False) -> int:
    """``release(n)`` of a semaphore: an int >= 1, at most what a semaphore counts (as
    the local semaphore: TooLargeError, a ValueError)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be an int, not {type(n).__name__}")
    if n < 1:
        raise ValueError("n must be one or more")
    if n > _core.SEM_VALUE_MAX:
        raise TooLargeError("Semaphore released too many times" if bounded
                            else "semaphore value would overflow")
    return n
