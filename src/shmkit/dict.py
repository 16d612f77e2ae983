"""Dict: a dictionary shared by processes, with OpenResty's lua_shared_dict surface.

``Dict("cache", 64 << 20)`` finds or creates a dict of 64 MiB in the default zone (or in
``zone=``).  Any number of processes use it at once: lookups take no lock, writes lock one
shard of the dict for a few hundred nanoseconds, and a process killed in the middle of a
write leaves every key with its old or its new value.

It is ``ngx.shared.DICT`` for Python: TTLs with millisecond resolution, eviction of the
least recently used items when full (``set`` reports it; the ``safe_`` variants refuse),
atomic ``incr`` with an initial value, lists, ``flush_all``/``flush_expired``, and
``capacity``/``free_space`` that tell the truth.  It is also a
``collections.abc.MutableMapping``.  Semantics, crash behaviour and the byte layout are in
docs/dict.md.

Keys are ``str`` or ``bytes`` (``"a"`` and ``b"a"`` are different keys).  Values are
stored natively when they are ``bytes``, ``str``, ``int`` (any size), ``float``, ``bool``
or ``None``, and through pickle (or ``serializer=``) otherwise; each comes back as the
type it went in.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _core
from ._checks import check_dict_serializer, check_object_name
from ._surface import LiveMapping, serializer_by_name, serializer_from_name
from ._types import Key
from .zone import Zone, default_zone

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._types import Serializer

__all__ = ["Dict", "DictStats", "DEFAULT_CAPACITY"]

#: capacity of a dict created without one: item memory in bytes
DEFAULT_CAPACITY = 16 << 20

_MISSING = object()


@dataclass(frozen=True)
class DictStats:
    """What ``Dict.statistics()`` returns.

    ``hits`` and ``misses`` count lookups (``get``, ``d[k]``, ...) of every process; each
    process adds its own counts to the shared ones every 1024 lookups, when it asks for
    statistics and when it closes the dict, so another process's latest few are not in
    yet.  ``memory`` is what the dict takes in its zone (items, index, bitmaps);
    ``capacity`` and ``free_space`` count item memory only.
    """

    items: int              #: keys held (expired ones count until they are reclaimed)
    hits: int               #: lookups that found a value
    misses: int             #: lookups that found none (or only an expired one)
    evictions: int          #: unexpired items removed to make room
    expirations: int        #: expired items reclaimed
    memory: int             #: bytes the dict occupies in its zone
    capacity: int           #: bytes of item memory
    free_space: int         #: bytes of item memory free now
    ttl_items: int          #: items that have an expiry time
    recoveries: int         #: times a shard was rebuilt after a writer died (or corruption)
    shards: int             #: independent parts, each with its own lock and memory
    max_item_size: int      #: the largest item (key + value + 48 bytes) a shard can hold


class Dict(_core.Dict, LiveMapping):
    """A dictionary in shared memory, for any number of processes.

    ``Dict(name, capacity=None, *, zone=None, serializer=None, shards=None, clock=None,
    create=True)``

    - ``name``: the dict's name in its zone (1..63 bytes).
    - ``capacity``: bytes of item memory (default 16 MiB when creating).  Given, an
      existing dict must have that capacity (ObjectMismatchError otherwise); omitted, any
      existing dict is attached to.  Each item takes ``item_size(key, value)`` bytes: a
      48-byte header, the key, the value, rounded up to 32 bytes.
    - ``zone``: the Zone to live in; ``shmkit.zone.default_zone()`` when omitted.
    - ``serializer``: an object with ``dumps``/``loads`` (like ``pickle``) for values that
      are not bytes, str, int, float, bool or None.  Every process must use the same.
    - ``shards``: a power of two (1..256): parts with their own lock and memory.  Default:
      two per CPU, at least 8, at most 64 and at most one per MiB of capacity.  An item
      must fit in one shard.
    - ``clock``: a callable returning seconds since the epoch, used by this handle instead
      of the real clock for TTLs (tests, simulations).
    - ``create``: False to attach only (ObjectNotFoundError when missing).

    Lookups (``get``, ``d[k]``, ``in``) take no lock and never write shared memory except
    to mark an item as recently used.  Writes hold the lock of one shard.

    Return values, compared with ``ngx.shared.DICT``:

    ==========================  ===================================================
    ``get(k, default=None)``    value (OpenResty: value, flags)
    ``get_with_flags(k)``       ``(value, flags)``
    ``get_stale(k)``            ``(value, flags, stale)``
    ``set(k, v, ttl, flags)``   number of unexpired items evicted (OpenResty's
                                ``forcible`` is ``> 0``); ZoneFullError if it cannot fit
    ``safe_set(...)``           None; ZoneFullError instead of evicting
    ``add(...)``                True, or False if the key exists ("exists")
    ``safe_add(...)``           same, never evicting
    ``replace(...)``            True, or False if the key is missing ("not found")
    ``delete(k)``               True if the key was there
    ``incr(k, step, init,       the new value; KeyError if missing without init
    init_ttl)``
    ``ttl(k)``                  seconds left (float), None if no expiry; KeyError
    ``expire(k, ttl)``          True, or False if missing
    ``lpush/rpush(k, v)``       the list's new length
    ``lpop/rpop(k)``            the value, or None when there is no list
    ``llen(k)``                 length (0 if missing)
    ``flush_all()``             number of items removed (memory is freed)
    ``flush_expired(n=0)``      number of expired items reclaimed
    ``keys(max_count)``         list of at most max_count keys (0: all)
    ``capacity()``              bytes of item memory
    ``free_space()``            bytes of item memory free now
    ==========================  ===================================================
    """

    _zone: Zone
    name: str
    _serializer: Serializer | None = None

    def __new__(cls, name: str, capacity: int | None = None, *, zone: Zone | None = None,
                serializer: Serializer | None = None, shards: int | None = None,
                clock: Callable[[], float] | None = None, create: bool = True) -> Self:
        check_object_name(name)
        if capacity is not None and (not isinstance(capacity, int) or isinstance(capacity, bool)
                                     or capacity <= 0):
            raise ValueError(f"capacity must be a number of bytes > 0, not {capacity!r}")
        if shards is not None and (not isinstance(shards, int) or isinstance(shards, bool)
                                   or not 1 <= shards <= _core.DICT_MAX_SHARDS
                                   or shards & (shards - 1)):
            raise ValueError(f"shards must be a power of two from 1 to "
                             f"{_core.DICT_MAX_SHARDS}, not {shards!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, not {clock!r}")
        dumps, loads = check_dict_serializer(serializer)
        if zone is None:
            zone = default_zone()
        elif not isinstance(zone, Zone):
            raise TypeError(f"zone must be a shmkit.Zone, not {type(zone).__name__}")
        flags = 0
        if create:
            flags |= _core.DICT_OPEN_CREATE
        if capacity is not None:
            flags |= _core.DICT_OPEN_STRICT
        # an existing dict with another capacity or shard count: ObjectMismatchError (the
        # core's SHK_EOBJMISMATCH)
        self = super().__new__(cls, zone._live(), name,
                               capacity if capacity is not None else DEFAULT_CAPACITY,
                               shards or 0, flags)
        self._zone = zone
        self.name = name
        self._serializer = serializer
        if dumps is not None and loads is not None:
            self._set_serializer(dumps, loads)
        if clock is not None:
            self._set_clock(clock)
        return self

    # -- identity ----------------------------------------------------------------------------
    @property
    def zone(self) -> Zone:
        """The zone the dict lives in."""
        return self._zone

    @property
    def created(self) -> bool:
        """True if this handle created the dict (False: it attached to an existing one)."""
        return self._created

    def __repr__(self) -> str:
        if self.closed:
            return f"<shmkit.Dict {self.name!r} closed>"
        return (f"<shmkit.Dict {self.name!r} in {self._zone.name!r} capacity={self.capacity()} "
                f"free={self.free_space()}>")

    # -- the OpenResty surface implemented in Python -----------------------------------------
    def get_keys(self, max_count: int = 1024) -> list[Key]:
        """At most ``max_count`` unexpired keys (0: all), as a list (OpenResty's name).

        The dict is read a few buckets at a time without holding any lock (so is it by
        keys() and iteration), so keys written meanwhile may or may not appear; keys
        present throughout appear exactly once.
        """
        if not isinstance(max_count, int) or max_count < 0:
            raise ValueError(f"max_count must be an int >= 0 (0: all), not {max_count!r}")
        out: list[Key] = []
        cursor: int | None = 0
        while cursor is not None:
            cursor, batch = self._scan(cursor)
            out.extend(batch)
            if max_count and len(out) >= max_count:
                del out[max_count:]
                break
        return out

    def __iter__(self) -> Iterator[Key]:
        cursor: int | None = 0
        while cursor is not None:
            cursor, batch = self._scan(cursor)
            yield from batch

    # -- statistics and checks ------------------------------------------------------------------
    def statistics(self) -> DictStats:
        """Counters: items, hits, misses, evictions, expirations, memory (see DictStats)."""
        s = self._stats()
        return DictStats(items=s["items"], hits=s["hits"], misses=s["misses"],
                         evictions=s["evictions"], expirations=s["expirations"],
                         memory=s["memory"], capacity=s["capacity"], free_space=s["free_bytes"],
                         ttl_items=s["ttl_items"], recoveries=s["recoveries"],
                         shards=s["shards"], max_item_size=s["max_item_bytes"])

    def check(self) -> list[str]:
        """Verify every invariant of every shard (each under its lock); returns the
        problems found, an empty list when the dict is consistent."""
        n, lines = self._check()
        if n and not lines:
            lines = [f"{n} problem(s) found"]
        return lines

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Detach this handle (the dict stays in its zone for everyone else)."""
        self._close()

    def destroy(self) -> None:
        """Remove the dict from its zone and free its memory.  Every process must have
        stopped using it: handles still open elsewhere would read freed memory."""
        self._close()
        self._zone.destroy(self.name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_attach, (self._zone, self.name, serializer_by_name(self._serializer)))

    # Mapping makes instances unhashable (it defines __eq__); two handles are equal when
    # their contents are, like dicts.


def _attach(zone: Zone, name: str, serializer: object) -> Dict:
    return Dict(name, zone=zone, serializer=serializer_from_name(serializer), create=False)


# keep pickle imported: it is the default serializer (the C half imports it too)
_ = pickle
