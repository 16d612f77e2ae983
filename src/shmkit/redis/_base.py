"""What every RedisZone object shares: name, zone, lease, pickling by name, argument
conventions of threading."""

from __future__ import annotations


from .. import _core
from .._errors import ClosedError
from ._zone import RedisZone, _check_lease


class RedisObject:
    """Base of the objects of a RedisZone."""

    _kind = ""
    _closed = True
    _zone = None
    _name = None

    def _setup(self, zone, name, *, create: bool = True, lease=None, exclusive: bool = False):
        if not isinstance(zone, RedisZone):
            raise TypeError(f"zone must be a shmkit.RedisZone, not {type(zone).__name__}")
        self._zone = zone
        self._name = name
        self._lease = zone.lease if lease is None else _check_lease(lease)
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

    def _reduce_kwargs(self) -> dict:
        return {}

    def __reduce__(self):
        kw = self._reduce_kwargs()
        if self._lease != self._zone.lease:
            kw["lease"] = self._lease
        return (_reopen, (type(self), self._zone, self._name, kw))

    def _repr_state(self) -> str:
        return ""

    def __repr__(self):
        state = "closed" if self._closed else self._repr_state()
        return (f"<shmkit.{type(self).__name__} {self._name!r} in Redis zone "
                f"{self._zone.name!r}{' ' + state if state else ''}>")


def _reopen(cls, zone, name, kwargs):
    return cls._reopen(zone, name, kwargs)


def blocking_timeout(blocking, timeout, *, default=-1) -> float | None:
    """threading's ``acquire(blocking, timeout)`` conventions, checked by the same code as
    the local objects' (shmkit._core.timeout_seconds): the seconds to wait, None for
    ever, 0 for a single try.  ``default=-1``: Lock's rules (-1 is forever);
    ``default=None``: Semaphore's (None is forever, <= 0 a single try)."""
    rule = _core.TIMEOUT_LOCK if default is not None else _core.TIMEOUT_SEMAPHORE
    return _core.timeout_seconds(timeout, blocking, rule)


def wait_timeout(timeout) -> float | None:
    """``wait(timeout=None)``: None for ever, 0.0 (<= 0) a single look, else seconds."""
    return _core.timeout_seconds(timeout, True, _core.TIMEOUT_WAIT)
