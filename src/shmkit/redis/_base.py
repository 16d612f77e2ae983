"""What every RedisZone object shares: name, zone, lease, pickling by name, argument
conventions of threading and queue.Queue."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

from .._errors import ClosedError
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
    """threading's ``acquire(blocking, timeout)`` conventions: the seconds to wait, None
    for ever, 0 for a single try."""
    blocking = bool(blocking)
    if timeout is None:
        timeout = default if default is not None else None
    if timeout is not None:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
            raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
        if math.isnan(timeout):
            raise ValueError("timeout must not be NaN")
        if not blocking and timeout != default:
            raise ValueError("can't specify a timeout for a non-blocking call")
        if timeout < 0 and timeout != -1:
            raise ValueError("timeout value must be a non-negative number")
        if timeout > threading.TIMEOUT_MAX:
            raise OverflowError("timeout value is too large")
    if not blocking:
        return 0.0
    if timeout is None or timeout == -1:
        return None
    return float(timeout)


def queue_timeout(block: object, timeout: float | None) -> float | None:
    """queue.Queue's ``put/get(block, timeout)``: 0 for a single try, None for ever."""
    if not block:
        return 0.0
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return wait_timeout(timeout)


def wait_timeout(timeout: object) -> float | None:
    """``wait(timeout=None)``: None for ever, <= 0 a single look."""
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    if math.isnan(timeout):
        raise ValueError("timeout must not be NaN")
    if timeout > threading.TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    return max(float(timeout), 0.0)
