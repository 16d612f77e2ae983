"""RedisDict: shmkit.Dict's surface (OpenResty's lua_shared_dict plus MutableMapping)
on Redis.

Each item is one Redis key, ``<base>:k:s:<key>`` for a str key and ``<base>:k:b:<key>``
for a bytes key, so ``d[k]`` is one GET and ``d[k] = v`` one SET (the hot path is the
command itself: no script, no extra round trip), a TTL is Redis's own key expiry
(PX, milliseconds; this works on every Redis since 2.6 and needs no hash-field TTL), and
``incr`` runs INCRBY inside a script.  Values keep their type (see _protocol: an int is
its decimal text, everything else has a one-byte type tag).  Because every key of the
dict shares the hash tag ``{zone/name}``, a dict lives on one node of a cluster.

What the server decides: eviction (its ``maxmemory-policy``; ``set`` returns 0 because
it cannot know), and expiry (expired items are gone at once: ``get_stale`` never sees
one, ``flush_expired`` has nothing to do).  ``len()``, iteration, ``keys()`` and
``flush_all()`` walk the dict's keys with SCAN (they cost a pass over the node's keys).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis import exceptions as rx

from .._checks import check_dict_serializer
from .._errors import ObjectMismatchError, ObjectTypeError
from .._surface import LiveMapping, serializer_by_name, serializer_from_name
from .._types import Key
from . import _protocol as P
from ._base import RedisObject
from ._zone import RedisZone, translate

if TYPE_CHECKING:
    from typing_extensions import Self

    from .._types import Serializer

__all__ = ["RedisDict", "RedisDictStats"]

_MISSING = object()
_decode = P.decode_value
_encode = P.encode_value


@dataclass(frozen=True)
class RedisDictStats:
    """What ``RedisDict.statistics()`` returns."""

    items: int          #: keys of this dict now
    capacity: int       #: the server's maxmemory (its total memory when unlimited)
    free_space: int     #: capacity minus the memory the server uses
    memory: int         #: bytes the server uses (all keys, not only this dict's)
    eviction_policy: str


def _ttl_ms(ttl: object) -> int:
    """Seconds -> milliseconds for PX (0: no expiry), with shmkit.Dict's rules."""
    if ttl is None or ttl == 0:
        return 0
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
        raise TypeError(f"ttl must be a number of seconds or None, not {type(ttl).__name__}")
    if math.isnan(ttl) or ttl < 0 or ttl > 1e10:
        raise ValueError(f"ttl must be None, 0 or from 0.001 to 1e10 seconds, not {ttl!r}")
    return max(1, int(round(ttl * 1000)))


class RedisDict(RedisObject, LiveMapping):
    """A dictionary on Redis with shmkit.Dict's surface.

    ``zone.dict(name, capacity=None, *, serializer=None, create=True)``.  ``capacity`` is
    recorded and checked like shmkit.Dict's (ObjectMismatchError when it differs) but the
    server's ``maxmemory`` is what bounds the data.  ``shards`` is accepted and ignored;
    ``clock`` cannot be honoured (expiry runs on the server's clock) and is refused.
    """

    _kind = "dict"

    def __init__(self, name: str, capacity: int | None = None, *, zone: RedisZone,
                 serializer: Serializer | None = None, shards: int | None = None,
                 clock: object = None, create: bool = True,
                 lease: float | None = None) -> None:
        if capacity is not None and (not isinstance(capacity, int) or isinstance(capacity, bool)
                                     or capacity <= 0):
            raise ValueError(f"capacity must be a number of bytes > 0, not {capacity!r}")
        if clock is not None:
            raise ValueError("clock= cannot be used with a RedisDict: TTLs run on the Redis "
                             "server's clock")
        dumps, loads = check_dict_serializer(serializer)
        self._setup(zone, name, create=create, lease=lease)
        meta = f"{self._base}:meta"
        if capacity is not None:
            zone.execute("HSETNX", meta, "capacity", capacity)
            have = int(zone.execute("HGET", meta, "capacity") or 0)
            if have != capacity:
                raise ObjectMismatchError(f"dict {name!r} exists with capacity={have}, not "
                                          f"{capacity}")
        self._serializer = serializer
        self._dumps = dumps
        self._loads = loads
        self._ks = f"{self._base}:k:s:"
        self._kb = self._ks[:-2].encode() + b"b:"
        self._kprefix = f"{self._base}:k:".encode()
        self._exec: Callable[..., P.Reply] = zone.command

    @classmethod
    def _reopen(cls, zone: RedisZone, name: str, kw: dict[str, Any]) -> Self:
        if "serializer" in kw:
            kw = dict(kw, serializer=serializer_from_name(kw["serializer"]))
        return cls(name, zone=zone, create=False, **kw)

    def _reduce_kwargs(self) -> dict[str, Any]:
        return {"serializer": serializer_by_name(self._serializer)}

    def _key(self, key: Any) -> str | bytes:
        # exact types (a str subclass is refused, as by shmkit.Dict); checkers do not
        # follow ``t is str``, so the result is declared
        t = type(key)
        k: str | bytes
        if t is str:
            k = self._ks + key
        elif t is bytes:
            k = self._kb + key
        else:
            raise TypeError(f"dict keys are str or bytes, not {t.__name__}")
        return k

    def _call(self, *args: Any) -> P.Reply:
        try:
            return self._exec(*args)
        except rx.RedisError as err:
            raise translate(err) from err

    def _list(self, k: str | bytes) -> list[Any]:
        return [_decode(r, self._loads) for r in self._call("LRANGE", k, 0, -1)]

    # -- the mapping -----------------------------------------------------------------------
    def __getitem__(self, key: Key) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def _read(self, k: str | bytes, *command: Any, **options: Any) -> tuple[Any, list[Any] | None]:
        """Run ``command``, which reads the value at ``k``: ``(reply, None)``, or ``(None,
        items)`` when ``k`` holds a list (lpush, rpush), which Redis answers with WRONGTYPE."""
        try:
            return self._exec(*command, **options), None
        except rx.ResponseError as err:
            if str(err).startswith("WRONGTYPE"):
                return None, self._list(k)
            raise translate(err) from err
        except rx.RedisError as err:
            raise translate(err) from err

    def get(self, key: Key, default: Any = None) -> Any:
        """The value, or ``default`` when the key is missing (or expired)."""
        k = self._key(key)
        raw, items = self._read(k, "GET", k)
        if items is not None:
            return items
        return default if raw is None else _decode(raw, self._loads)

    def __setitem__(self, key: Key, value: Any) -> None:
        k = self._key(key)
        try:
            self._exec("SET", k, _encode(value, self._dumps))
        except rx.RedisError as err:
            raise translate(err) from err

    def __delitem__(self, key: Key) -> None:
        if not self._call("DEL", self._key(key)):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if type(key) not in (str, bytes):
            return False
        return bool(self._call("EXISTS", self._key(key)))

    def __iter__(self) -> Iterator[Key]:
        n = len(self._kprefix)
        for raw in self._zone._object_keys(self._name):
            if raw.startswith(self._kprefix):
                rest = raw[n:]
                if rest[:2] == b"s:":
                    yield rest[2:].decode("utf-8", "surrogateescape")
                elif rest[:2] == b"b:":
                    yield rest[2:]

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def get_keys(self, max_count: int = 1024) -> list[Key]:
        if not isinstance(max_count, int) or max_count < 0:
            raise ValueError(f"max_count must be an int >= 0 (0: all), not {max_count!r}")
        out: list[Key] = []
        for k in self:
            out.append(k)
            if max_count and len(out) >= max_count:
                break
        return out

    def pop(self, key: Key, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (atomic); ``default`` or KeyError when
        missing."""
        r = self._zone.run(P.DICT_POP, (self._key(key),), [self._base])
        if not r:
            if default is _MISSING:
                raise KeyError(key)
            return default
        if r[0] == b"l":
            return [_decode(x, self._loads) for x in r[1:]]
        return _decode(r[1], self._loads)

    def setdefault(self, key: Key, default: Any = None) -> Any:
        """The value of ``key``; if it is missing, store ``default`` and return it (one
        atomic SET NX GET)."""
        k = self._key(key)
        old, items = self._read(k, "SET", k, _encode(default, self._dumps), "NX", "GET",
                                get=True)
        if items is not None:
            return items
        return default if old is None else _decode(old, self._loads)

    # -- batches: one round trip ------------------------------------------------------------
    def _keys_of(self, keys: Iterable[Any]) -> list[str | bytes]:
        prefix = self._ks
        out: list[str | bytes]
        try:
            out = [prefix + k for k in keys]        # all str: the common case, no call each
        except TypeError:
            out = [self._key(k) for k in keys]
        return out

    def get_many(self, keys: Iterable[Key], default: Any = None) -> list[Any]:
        """The values of ``keys`` in one round trip (MGET), ``default`` for each missing
        one (and for lists: use ``get`` for those).  A RedisDict extension: the local
        Dict answers each ``get`` in well under a microsecond, a server in a round trip."""
        ks = self._keys_of(keys)
        if not ks:
            return []
        loads = self._loads
        # bytes values (tag 0) are sliced here; anything else goes through decode_value
        return [v[1:] if v is not None and v[:1] == b"\x00" else
                (default if v is None else _decode(v, loads))
                for v in self._call("MGET", *ks)]

    def set_many(self, items: Mapping[Key, Any] | Iterable[tuple[Key, Any]],
                 ttl: float | None = None) -> None:
        """Store every (key, value) of ``items`` (a mapping or pairs) in one round trip:
        MSET, or with ``ttl`` one SET PX each, pipelined."""
        # a mapping is anything with items(), as for dict.update (checkers cannot follow
        # hasattr: hence the Any)
        given: Any = items
        pairs: Iterable[tuple[Key, Any]] = given.items() if hasattr(given, "items") else given
        dumps = self._dumps
        prefix = self._ks
        args: list[str | bytes] = []
        append = args.append
        for k, v in pairs:
            append(prefix + k if type(k) is str else self._key(k))
            append(b"\x00" + v if type(v) is bytes else _encode(v, dumps))
        if not args:
            return
        ms = _ttl_ms(ttl)
        if not ms:
            self._call("MSET", *args)
            return
        try:
            pipe = self._zone.client.pipeline(transaction=False)
            for i in range(0, len(args), 2):
                pipe.execute_command("SET", args[i], args[i + 1], "PX", ms)
            pipe.execute()
        except rx.RedisError as err:
            raise translate(err) from err

    # -- the OpenResty surface ---------------------------------------------------------------
    def _store(self, key: Key, value: Any, ttl: float | None, flags: int,
               *cond: str) -> P.Reply:
        enc = P.with_flags(_encode(value, self._dumps), P.check_flags(flags))
        ms = _ttl_ms(ttl)
        if ms:
            return self._call("SET", self._key(key), enc, "PX", ms, *cond)
        return self._call("SET", self._key(key), enc, *cond)

    def set(self, key: Key, value: Any, ttl: float | None = None, flags: int = 0) -> int:
        """Store ``value`` (``ttl`` seconds, None: no expiry).  Returns the number of items
        evicted to make room: always 0 here (eviction is the server's business).
        ZoneFullError when the server is out of memory and may not evict."""
        self._store(key, value, ttl, flags)
        return 0

    def safe_set(self, key: Key, value: Any, ttl: float | None = None, flags: int = 0) -> None:
        """set() that never evicts: on Redis the same as set() (the server's policy
        decides); ZoneFullError when the server refuses the write."""
        self._store(key, value, ttl, flags)

    def add(self, key: Key, value: Any, ttl: float | None = None, flags: int = 0) -> bool:
        """Store only if the key is missing (or expired): True, else False."""
        return bool(self._store(key, value, ttl, flags, "NX"))

    safe_add = add

    def replace(self, key: Key, value: Any, ttl: float | None = None, flags: int = 0) -> bool:
        """Store only if the key exists: True, else False."""
        return bool(self._store(key, value, ttl, flags, "XX"))

    def delete(self, key: Key) -> bool:
        """Remove ``key``; True if it was there."""
        return bool(self._call("DEL", self._key(key)))

    def get_with_flags(self, key: Key, default: Any = None) -> tuple[Any, int]:
        """``(value, flags)``; ``(default, 0)`` when missing."""
        k = self._key(key)
        raw, items = self._read(k, "GET", k)
        if items is not None:
            return items, 0
        if raw is None:
            return default, 0
        return P.decode_with_flags(raw, self._loads)

    def get_stale(self, key: Key, default: Any = None) -> tuple[Any, int, bool]:
        """``(value, flags, stale)``: Redis removes expired items at once, so ``stale``
        is always False."""
        value, flags = self.get_with_flags(key, _MISSING)
        if value is _MISSING:
            return default, 0, False
        return value, flags, False

    def incr(self, key: Key, step: int | float = 1, init: int | float | None = None,
             init_ttl: float | None = None) -> int | float:
        """Add ``step`` atomically and return the new value.  Missing: KeyError, or with
        ``init`` the key becomes ``init + step`` with ``init_ttl``.  An existing value that
        is not an int or float: ObjectTypeError."""
        if type(step) not in (int, float):
            raise TypeError(f"step must be an int or a float, not {type(step).__name__}")
        if init is not None and type(init) not in (int, float):
            raise TypeError(f"init must be an int or a float, not {type(init).__name__}")
        k = self._key(key)
        init_enc = "" if init is None else _encode(init + step)
        ms = _ttl_ms(init_ttl) if init is not None else 0
        if type(step) is int and not P.INT64_MIN <= step <= P.INT64_MAX:
            return self._incr_slow(key, k, step, init, ms)
        kind, text = ("i", str(step)) if type(step) is int else ("f", P.float_text(step))
        r = self._zone.run(P.DICT_INCR, (k,), [self._base, kind, text, init_enc, ms])
        what = r[0]
        if what == b"i":
            return int(r[1])
        if what == b"f":
            result: float = P.decode_value(b"\x02" + r[1])
            return result
        if what == b"new":
            assert init is not None      # the script creates the key only with an init
            return init + step
        if what == b"missing":
            raise KeyError(key)
        if what == b"type":
            raise ObjectTypeError(f"incr of {key!r}: its value is not an int or a float")
        return self._incr_slow(key, k, step, init, ms)

    def _incr_slow(self, key: Key, k: str | bytes, step: int | float,
                   init: int | float | None, ms: int) -> int | float:
        """Arbitrary-precision ints: read, add in Python, store if unchanged (retry)."""
        for _ in range(10_000):
            raw = self._call("GET", k)
            if raw is None:
                if init is None:
                    raise KeyError(key)
                new = init + step
                args = ("PX", ms) if ms else ()
                if self._call("SET", k, _encode(new), *args, "NX"):
                    return new
                continue
            value, flags = P.decode_with_flags(raw, self._loads)
            if type(value) not in (int, float):
                raise ObjectTypeError(f"incr of {key!r}: its value is a "
                                      f"{type(value).__name__}, not an int or a float")
            new = value + step
            assert isinstance(new, (int, float))
            if self._zone.run(P.DICT_CAS, (k,),
                              [self._base, raw, P.with_flags(_encode(new), flags)]):
                return new
        raise RuntimeError(f"incr of {key!r}: too much contention")

    def ttl(self, key: Key) -> float | None:
        """Seconds left (ms resolution), None if it never expires; KeyError if missing."""
        r = self._call("PTTL", self._key(key))
        if r == -2:
            raise KeyError(key)
        if r == -1:
            return None
        return int(r) / 1000

    def expire(self, key: Key, ttl: float | None) -> bool:
        """Set the key's ttl (0 or None: no expiry); False if it is missing."""
        return bool(self._zone.run(P.DICT_EXPIRE, (self._key(key),), [self._base, _ttl_ms(ttl)]))

    def lpush(self, key: Key, value: Any) -> int:
        return int(self._call("LPUSH", self._key(key), _encode(value, self._dumps)))

    def rpush(self, key: Key, value: Any) -> int:
        return int(self._call("RPUSH", self._key(key), _encode(value, self._dumps)))

    def lpop(self, key: Key, default: Any = None) -> Any:
        r = self._call("LPOP", self._key(key))
        return default if r is None else _decode(r, self._loads)

    def rpop(self, key: Key, default: Any = None) -> Any:
        r = self._call("RPOP", self._key(key))
        return default if r is None else _decode(r, self._loads)

    def llen(self, key: Key) -> int:
        return int(self._call("LLEN", self._key(key)))

    def flush_all(self) -> int:
        """Remove every item; returns how many there were."""
        n = 0
        batch: list[bytes] = []
        for raw in self._zone._object_keys(self._name):
            if raw.startswith(self._kprefix):
                batch.append(raw)
                if len(batch) >= 500:
                    n += self._call("UNLINK", *batch)
                    batch = []
        if batch:
            n += self._call("UNLINK", *batch)
        return n

    def flush_expired(self, max_count: int = 0) -> int:
        """Redis reclaims expired keys itself: nothing to do, returns 0."""
        return 0

    def _memory(self) -> tuple[int, int, str]:
        """(capacity, used, eviction policy) from INFO memory."""
        reply = self._zone.execute("INFO", "memory")
        info: dict[str, Any]
        if isinstance(reply, bytes):
            info = {}
            for line in reply.decode().splitlines():
                key, sep, value = line.partition(":")
                if sep:
                    info[key] = value
        else:
            info = reply                           # parsed by redis-py: a dict
            if info and all(isinstance(v, dict) for v in info.values()):
                info = next(iter(info.values()))   # a cluster client answers per node
        used = int(info.get("used_memory", 0))
        cap = int(info.get("maxmemory", 0)) or int(info.get("total_system_memory", 0))
        return cap, used, str(info.get("maxmemory_policy", ""))

    def capacity(self) -> int:
        """The server's maxmemory (its total memory when maxmemory is 0)."""
        return self._memory()[0]

    def free_space(self) -> int:
        """capacity() minus the memory the server uses now (all of its keys)."""
        cap, used, _ = self._memory()
        return max(cap - used, 0)

    def statistics(self) -> RedisDictStats:
        cap, used, policy = self._memory()
        return RedisDictStats(len(self), cap, max(cap - used, 0), used, policy)

    def check(self) -> list[str]:
        """Nothing to verify on the client side: the server owns the structure."""
        return []

    def destroy(self) -> None:
        """Remove the dict and all its items."""
        zone = self._zone
        self.close()
        zone.destroy(self._name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # unhashable, as every MutableMapping (Mapping defines __eq__, so its __hash__ is None)
