"""RedisZone: a namespace of shmkit objects on a Redis server or Redis Cluster.

The zone is the connection (a redis-py client, created lazily once per process), the
directory of its objects (``shmkit:{zone}:objects``), the process's identity for leases,
and one background thread per process that renews the leases its objects hold.

The objects' modules build on this one; the zone reaches them only by name, through
``_FACTORIES`` (as shmkit.Zone does), so that no import runs in a circle.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Union, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis import exceptions as rx

from .._checks import check_object_name
from .._errors import (ClosedError, InvalidNameError, ObjectExistsError, ObjectNotFoundError,
                       ObjectTypeError, ShmkitTimeoutError, ZoneFullError)
from .._surface import LateBound, ObjectDirectory
from . import _protocol as P
from ._errors import BackendConnectionError

if TYPE_CHECKING:  # the factories' return types: never imported at run time (see _FACTORIES)
    from redis.cluster import RedisCluster
    from typing_extensions import Self, TypeAlias

    from .._types import Serializer, SerializerArg
    from ._board import RedisBoard, RedisConfig
    from ._dict import RedisDict
    from ._queue import RedisQueue
    from ._sync import (RedisBoundedSemaphore, RedisCounter, RedisEvent, RedisLock, RedisRLock,
                        RedisSemaphore)

    #: what a zone talks through: a single server's client or a cluster's
    Client: TypeAlias = Union[redis.Redis, RedisCluster]

    class Commands(Protocol):
        """``execute_command`` of either client.  redis-py leaves it unannotated, which
        pyproject's untyped_calls_exclude allows, except that mypy does not apply that
        to a call on the union Client: such calls go through this."""

        def execute_command(self, *args: Any, **options: Any) -> Any: ...

__all__ = ["RedisZone", "RedisObjectInfo", "DEFAULT_URL", "DEFAULT_LEASE"]

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_LEASE = 30.0
#: longest single server-side block: a blocked call comes back this often to look at
#: what a block cannot see (a queue closed, a lease that may have run out)
BLOCK_SLICE = 2.0

T = TypeVar("T")


@dataclass(frozen=True)
class RedisObjectInfo:
    """One entry of a RedisZone's directory (``zone.objects()``, ``shmkit ls --url``)."""

    name: str
    type: str           #: "queue", "dict", "lock", ...
    created_ns: int     #: the server's clock when it was created
    creator: str        #: "<host>:<pid>:<random>" of the creating process
    items: int | None = None   #: messages queued, keys, holders... (info only)
    bytes: int | None = None   #: memory the object's keys take on the server (info only)


# -- errors --------------------------------------------------------------------------------

def translate(err: Exception) -> Exception:
    """The shmkit exception for a redis-py one (the caller raises it ``from err``)."""
    if isinstance(err, (rx.ConnectionError, rx.TimeoutError, rx.BusyLoadingError,
                        rx.ClusterDownError, rx.MasterDownError, rx.TryAgainError,
                        rx.ReadOnlyError)):
        return BackendConnectionError(f"Redis: {err}")
    if isinstance(err, rx.OutOfMemoryError):
        return ZoneFullError(f"Redis is out of memory (maxmemory reached, no key it may "
                             f"evict): {err}")
    if isinstance(err, rx.ResponseError) and str(err).startswith("WRONGTYPE"):
        return ObjectTypeError(f"Redis: {err}")
    return err


_ident_lock = threading.Lock()
_ident: tuple[int | None, str] = (None, "")


def process_identity() -> str:
    """``<host>:<pid>:<random>`` of this process (a forked child gets its own)."""
    global _ident
    pid = os.getpid()
    if _ident[0] != pid:
        with _ident_lock:
            if _ident[0] != pid:
                _ident = (pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}")
    return _ident[1]


def new_id() -> str:
    return uuid.uuid4().hex[:16]


# -- the zone ------------------------------------------------------------------------------

_zones: weakref.WeakValueDictionary[tuple[object, ...], RedisZone] = weakref.WeakValueDictionary()
_zones_lock = threading.Lock()

#: RedisZone.<method> -> (module of this package, constructor): imported on first use, as
#: shmkit.Zone's factories are, because those modules import this one
_FACTORIES: dict[str, tuple[str, str]] = {
    "queue": ("_queue", "RedisQueue"),
    "dict": ("_dict", "RedisDict"),
    "lock": ("_sync", "RedisLock"),
    "rlock": ("_sync", "RedisRLock"),
    "semaphore": ("_sync", "RedisSemaphore"),
    "bounded_semaphore": ("_sync", "RedisBoundedSemaphore"),
    "event": ("_sync", "RedisEvent"),
    "counter": ("_sync", "RedisCounter"),
    "board": ("_board", "RedisBoard"),
    "config": ("_board", "RedisConfig"),
}
#: the constructor behind ``RedisZone.<method>``, imported on first use
_factory = LateBound("shmkit.redis", _FACTORIES)


def _check_zone_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"zone name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidNameError("zone name is empty")
    if "/" in name or "\0" in name:
        raise InvalidNameError(f"zone name {name!r} contains '/' or a NUL byte")
    if name.startswith("}"):
        raise InvalidNameError(f"zone name {name!r} starts with '}}' (it would break the "
                               "hash tag that keeps an object's keys in one cluster slot)")
    if len(name.encode()) > 255:
        raise InvalidNameError("zone name is longer than 255 bytes")
    return name


def split_url(url: str) -> tuple[str, str | None]:
    """``redis://host/0?zone=app`` -> (``redis://host/0``, ``"app"``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    zone = None
    rest = []
    for k, v in query:
        if k == "zone":
            zone = v
        else:
            rest.append((k, v))
    return urlunsplit(parts._replace(query=urlencode(rest))), zone


class RedisZone(ObjectDirectory):
    """A zone whose objects live on a Redis server or Redis Cluster.

    ``RedisZone(name, url="redis://localhost:6379/0", *, lease=30.0, cluster=None,
    client=None, **options)``

    - ``name``: the zone's name on the server (any text without '/'); every key the zone
      makes starts with ``shmkit:{name``.
    - ``url``: ``redis://``, ``rediss://`` (TLS) or ``unix://`` as redis-py takes it
      (user, password, db); a ``?zone=`` in it is ignored here (``open_zone`` reads it).
    - ``lease``: seconds a lock, semaphore unit, board writer role or queue consumer stays
      held by a process that stops renewing it (killed, partitioned).  A background
      thread renews every lease a third of the way through.  Objects take ``lease=`` too.
    - ``cluster``: True for Redis Cluster, False for a single server, None to ask the
      server (``INFO cluster``).
    - ``client``: an existing ``redis.Redis`` / ``redis.cluster.RedisCluster`` (created
      with ``decode_responses=False``) instead of ``url``; such a zone cannot be pickled.
    - ``options``: passed to redis-py's ``from_url`` (``password=``, ``ssl_*``,
      ``socket_connect_timeout=``, ...).

    The factory methods are those of :class:`shmkit.Zone` for the structures that make
    sense across machines: ``queue``, ``dict``, ``lock``, ``rlock``, ``semaphore``,
    ``bounded_semaphore``, ``event``, ``counter``, ``board``, ``config``.  The zone
    pickles as (name, url, options): a child process reconnects.
    """

    _client: Client | None = None
    _closed = False
    url: str | None

    def __init__(self, name: str, url: str = DEFAULT_URL, *, lease: float = DEFAULT_LEASE,
                 cluster: bool | None = None, client: Client | None = None,
                 **options: Any) -> None:
        self.name = _check_zone_name(name)
        self.lease = check_lease(lease)
        self._cluster: bool | None
        if client is not None:
            if getattr(client, "get_encoder", None) and client.get_encoder().decode_responses:
                raise ValueError("the client must be created with decode_responses=False")
            self.url = None
            self._client = client
            self._cluster = _is_cluster_client(client)
        else:
            if not isinstance(url, str) or "://" not in url:
                raise ValueError(f"url must be a redis://, rediss:// or unix:// URL, not {url!r}")
            if options.get("decode_responses"):
                raise ValueError("shmkit decodes values itself: leave decode_responses off")
            self.url, _ = split_url(url)
            self._cluster = cluster
        self._options = dict(options)
        self._given_client = client is not None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._directory = P.zone_key(self.name)
        self._tls = threading.local()

    # -- connection --------------------------------------------------------------------
    @property
    def client(self) -> Client:
        """The redis-py client (``redis.Redis`` or ``redis.cluster.RedisCluster``)."""
        if self._closed:
            raise ClosedError(f"{self!r} is closed")
        c = self._client
        if c is None:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
                c = self._client
        return c

    def _connect(self) -> Client:
        url = self.url
        assert url is not None     # a zone made from a client= never connects itself
        opts = dict(self._options)
        # never send a command twice behind the caller's back (see BackendConnectionError)
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        opts.setdefault("retry", Retry(NoBackoff(), 0))
        cluster = self._cluster
        try:
            if cluster is None:
                probe = redis.Redis.from_url(url, **opts)
                try:
                    # redis-py types every command of both clients as "an awaitable or
                    # anything"; the blocking client's INFO is a dict
                    info = probe.info("cluster")
                    assert isinstance(info, dict)
                    cluster = info.get("cluster_enabled") == 1
                finally:
                    probe.close()
                self._cluster = cluster
            if cluster:
                from redis.cluster import RedisCluster
                opts.pop("retry", None)   # the cluster client takes retries per node
                return RedisCluster.from_url(url, **opts)
            return redis.Redis.from_url(url, **opts)
        except rx.RedisError as err:
            raise translate(err) from err

    @property
    def cluster(self) -> bool:
        """True when the zone is on a Redis Cluster."""
        self.client  # noqa: B018  (connect to find out)
        return bool(self._cluster)

    def ping(self) -> float:
        """One round trip to the server; returns its duration in seconds."""
        t0 = time.perf_counter()
        self.execute("PING")
        return time.perf_counter() - t0

    def execute(self, *args: Any, **options: Any) -> P.Reply:
        """Run one Redis command; redis-py errors become shmkit's."""
        client: Commands = self.client
        try:
            return client.execute_command(*args, **options)
        except rx.RedisError as err:
            raise translate(err) from err

    def run(self, script: P.Script, keys: Sequence[str | bytes],
            args: Sequence[P.Arg]) -> P.Reply:
        """Run a protocol script (EVALSHA; EVAL when the server does not have it)."""
        command = self.command
        try:
            try:
                return command("EVALSHA", script.sha, len(keys), *keys, *args)
            except rx.NoScriptError:
                return command("EVAL", script.source, len(keys), *keys, *args)
        except rx.RedisError as err:
            raise translate(err) from err

    def command(self, *args: Any, **options: Any) -> P.Reply:
        """One command on this thread's own connection, the reply unparsed; redis-py's
        exceptions as they are (the hot paths translate them).

        This is the hot path of every object on a single server: it skips what
        ``execute_command`` does per call (taking a connection from the pool and giving
        it back under a lock, the retry wrapper, response callbacks, metrics).  Like the
        pool, it first looks whether the server closed the connection while it was idle
        (a restart) and reconnects then; a command is never sent twice.  On a cluster,
        redis-py's routing is needed: it is ``client.execute_command``."""
        tl = self._tls
        conn = getattr(tl, "conn", None)
        if conn is None or tl.pid != os.getpid():
            client = self.client
            if self._cluster:
                cluster: Commands = client
                return cluster.execute_command(*args, **options)
            assert isinstance(client, redis.Redis)
            pool = client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            tl.conn = conn
            tl.pid = os.getpid()
        try:
            if conn._sock is not None and conn.can_read():
                conn.disconnect()      # the server hung up (restart) or sent junk
        except rx.ConnectionError:
            conn.disconnect()
        try:
            conn.send_command(*args)
            return conn.read_response()
        except rx.ResponseError:
            raise
        except BaseException:
            conn.disconnect()          # no stray reply for the next command
            raise

    def _pool_for(self, key: str) -> redis.ConnectionPool:
        client = self.client
        if self._cluster:
            assert not isinstance(client, redis.Redis)
            node = client.get_node_from_key(key)
            assert node is not None        # (None only when asking for a replica)
            return client.get_redis_connection(node).connection_pool
        assert isinstance(client, redis.Redis)
        return client.connection_pool

    def blocking(self, key: str, *args: Any) -> P.Reply:
        """Run a blocking command (BLPOP, BLMOVE) that may wait for long.

        It runs on a connection of its own from the pool; if anything interrupts it (a
        KeyboardInterrupt from Ctrl-C, which Python delivers inside the socket read, or
        an error) that connection is closed, which makes the server drop the blocked
        command, so no reply is left behind for the next user of the connection."""
        pool = self._pool_for(key)
        try:
            conn = pool.get_connection()
        except TypeError:           # redis-py < 6 wants a command name
            conn = pool.get_connection(args[0])  # pyright: ignore[reportCallIssue]
        except rx.RedisError as err:
            raise translate(err) from err
        try:
            conn.send_command(*args)
            return conn.read_response()
        except BaseException as err:
            conn.disconnect()
            if isinstance(err, rx.RedisError):
                raise translate(err) from err
            raise
        finally:
            pool.release(conn)

    def wait_token(self, base: str, wid: str, seconds: float) -> bool:
        """Block server-side until a token arrives for waiter ``wid`` (True) or
        ``seconds`` pass (False)."""
        key = f"{base}:w:{wid}"
        r = self.blocking(key, "BLPOP", key, f"{max(seconds, 0.001):.3f}")
        return r is not None

    # -- the directory -------------------------------------------------------------------
    def _register(self, name: str, kind: str, create: bool, exclusive: bool = False) -> bool:
        """Find ``name`` (of type ``kind``) in the directory, or create its entry.
        Returns True when this call created it."""
        check_object_name(name)
        if create:
            t = self.execute("TIME")
            now_ms = int(t[0]) * 1000 + int(t[1]) // 1000
            record = P.directory_record(kind, now_ms, process_identity())
            if self.execute("HSETNX", self._directory, name, record):
                return True
            if exclusive:
                raise ObjectExistsError(f"{name!r} already exists in Redis zone {self.name!r}")
        raw = self.execute("HGET", self._directory, name)
        if raw is None:
            if not create:
                raise ObjectNotFoundError(f"no object {name!r} in Redis zone {self.name!r}")
            return self._register(name, kind, create, exclusive)   # destroyed meanwhile
        have, _, _ = P.parse_directory_record(raw)
        if have != kind:
            raise ObjectTypeError(f"{name!r} exists in Redis zone {self.name!r} as a {have}, "
                                  f"not a {kind}")
        return False

    def base(self, name: str) -> str:
        return P.object_base(self.name, name)

    def find(self, name: str) -> RedisObjectInfo:
        """The directory entry of ``name``; ObjectNotFoundError if there is none."""
        raw = self.execute("HGET", self._directory, check_object_name(name))
        if raw is None:
            raise ObjectNotFoundError(f"no object {name!r} in Redis zone {self.name!r}")
        kind, created_ms, creator = P.parse_directory_record(raw)
        return RedisObjectInfo(name, kind, created_ms * 1_000_000, creator)

    def objects(self, *, sizes: bool = False) -> list[RedisObjectInfo]:
        """Every object of the zone.  ``sizes=True`` also counts their items and the
        memory their keys take (MEMORY USAGE; a SCAN of the object's keys)."""
        entries = self.execute("HGETALL", self._directory) or {}
        if isinstance(entries, list):
            entries = dict(zip(entries[::2], entries[1::2]))
        out = []
        for raw_name, raw in sorted(entries.items()):
            name = raw_name.decode("utf-8", "surrogateescape")
            kind, created_ms, creator = P.parse_directory_record(raw)
            items = nbytes = None
            if sizes:
                items, nbytes = self._measure(name, kind)
            out.append(RedisObjectInfo(name, kind, created_ms * 1_000_000, creator, items,
                                       nbytes))
        return out

    def _object_keys(self, name: str) -> Iterator[bytes]:
        base = self.base(name)
        pattern = P.glob_escape(base) + ":*"
        client = self.client
        try:
            if self._cluster:
                assert not isinstance(client, redis.Redis)
                node = client.get_node_from_key(base)
                yield from client.scan_iter(match=pattern, count=1000, target_nodes=node)
            else:
                yield from client.scan_iter(match=pattern, count=1000)
        except rx.RedisError as err:
            raise translate(err) from err

    def _measure(self, name: str, kind: str) -> tuple[int | None, int]:
        base = self.base(name)
        nbytes = 0
        for key in self._object_keys(name):
            try:
                nbytes += self.execute("MEMORY", "USAGE", key, "SAMPLES", "0") or 0
            except rx.ResponseError:
                pass
        items: int | None
        if kind == "queue":
            items = int(self.execute("LLEN", f"{base}:ready"))
        elif kind == "dict":
            items = sum(1 for k in self._object_keys(name) if k.startswith(f"{base}:k:".encode()))
        elif kind in ("board", "config"):
            items = int(self.execute("HGET", f"{base}:board", "version") or 0)
        elif kind == "counter":
            items = int(self.execute("GET", f"{base}:value") or 0)
        else:
            items = None
        return items, nbytes

    def destroy(self, name: str) -> None:
        """Remove the object ``name``: every key it has and its directory entry.  Other
        processes must have stopped using it."""
        self.find(name)
        batch: list[bytes] = []
        for key in self._object_keys(name):
            batch.append(key)
            if len(batch) >= 500:
                self.execute("UNLINK", *batch)
                batch = []
        if batch:
            self.execute("UNLINK", *batch)
        self.execute("HDEL", self._directory, name)

    def destroy_all(self) -> int:
        """Remove every object of the zone and the zone's directory; returns how many
        objects there were."""
        names = [o.name for o in self.objects()]
        for n in names:
            try:
                self.destroy(n)
            except ObjectNotFoundError:
                pass
        self.execute("DEL", self._directory)
        return len(names)

    # -- leases ------------------------------------------------------------------------------
    def _renew_later(self, obj: Leased) -> None:
        """Have ``obj._renew()`` called every lease/3 seconds while it lives (by the one
        renewing thread of this process, shared by all zones)."""
        _process_renewer().add(obj)

    # -- structures: late-bound factories (see _FACTORIES) -------------------------------------
    def queue(self, name: str, capacity: int | None = None, *, max_messages: int | None = None,
              mode: str | None = None, serializer: SerializerArg | None = None,
              delivery: str | None = None, lease: float | None = None, create: bool = True,
              exclusive: bool = False, spin: float | None = None) -> RedisQueue:
        """The RedisQueue ``name`` of this zone (see RedisQueue)."""
        return cast("RedisQueue", _factory("queue")(
            name, capacity, zone=self, max_messages=max_messages, mode=mode,
            serializer=serializer, delivery=delivery, lease=lease, create=create,
            exclusive=exclusive, spin=spin))

    def dict(self, name: str, capacity: int | None = None, *,
             serializer: Serializer | None = None, shards: int | None = None,
             clock: object = None, create: bool = True,
             lease: float | None = None) -> RedisDict:
        """The RedisDict ``name`` of this zone (see RedisDict)."""
        return cast("RedisDict", _factory("dict")(
            name, capacity, zone=self, serializer=serializer, shards=shards, clock=clock,
            create=create, lease=lease))

    def lock(self, name: str, *, create: bool = True, lease: float | None = None) -> RedisLock:
        """The RedisLock ``name`` of this zone (see RedisLock)."""
        return cast("RedisLock", _factory("lock")(name, zone=self, create=create, lease=lease))

    def rlock(self, name: str, *, create: bool = True, lease: float | None = None) -> RedisRLock:
        """The RedisRLock ``name`` of this zone (see RedisRLock)."""
        return cast("RedisRLock", _factory("rlock")(name, zone=self, create=create, lease=lease))

    def semaphore(self, name: str, value: int = 1, *, create: bool = True,
                  lease: float | None = None, undo: bool | None = None,
                  max_processes: int | None = None) -> RedisSemaphore:
        """The RedisSemaphore ``name`` of this zone (see RedisSemaphore)."""
        return cast("RedisSemaphore", _factory("semaphore")(
            name, value, zone=self, create=create, lease=lease, undo=undo,
            max_processes=max_processes))

    def bounded_semaphore(self, name: str, value: int = 1, *, create: bool = True,
                          lease: float | None = None, undo: bool | None = None,
                          max_processes: int | None = None) -> RedisBoundedSemaphore:
        """The RedisBoundedSemaphore ``name`` of this zone (see RedisBoundedSemaphore)."""
        return cast("RedisBoundedSemaphore", _factory("bounded_semaphore")(
            name, value, zone=self, create=create, lease=lease, undo=undo,
            max_processes=max_processes))

    def event(self, name: str, *, create: bool = True, lease: float | None = None) -> RedisEvent:
        """The RedisEvent ``name`` of this zone (see RedisEvent)."""
        return cast("RedisEvent", _factory("event")(name, zone=self, create=create, lease=lease))

    def counter(self, name: str, initial: int = 0, *, create: bool = True,
                lease: float | None = None) -> RedisCounter:
        """The RedisCounter ``name`` of this zone (see RedisCounter)."""
        return cast("RedisCounter", _factory("counter")(name, initial, zone=self, create=create,
                                                        lease=lease))

    def board(self, name: str, max_bytes: int | None = None, *, buffers: int | None = None,
              writer: bool = False, create: bool = True, spin_us: float = 20.0,
              lease: float | None = None) -> RedisBoard:
        """The RedisBoard ``name`` of this zone (see RedisBoard; ``max_bytes=None``
        attaches to an existing board)."""
        return cast("RedisBoard", _factory("board")(
            name, max_bytes, zone=self, buffers=buffers, writer=writer, create=create,
            spin_us=spin_us, lease=lease))

    def config(self, name: str, max_bytes: int | None = 1 << 20, *, buffers: int | None = None,
               spin_us: float = 0.0, create: bool = True,
               lease: float | None = None) -> RedisConfig:
        """The RedisConfig ``name`` of this zone (see RedisConfig)."""
        return cast("RedisConfig", _factory("config")(
            name, max_bytes, zone=self, buffers=buffers, spin_us=spin_us, create=create,
            lease=lease))

    _LOCAL_ONLY = {
        "rwlock": "a readers-writer lock", "condition": "a condition variable",
        "barrier": "a barrier", "value": "a ctypes value", "array": "a ctypes array",
        "ndarray": "a NumPy array in shared memory", "alloc": "raw allocations",
        "calloc": "raw allocations", "view": "views of shared memory",
    }

    if not TYPE_CHECKING:
        # hidden from type checkers, which would otherwise accept any attribute: to them a
        # RedisZone simply has no rwlock() (run time says why)
        def __getattr__(self, attr):
            what = RedisZone._LOCAL_ONLY.get(attr)
            if what is None:
                raise AttributeError(f"'RedisZone' object has no attribute {attr!r}")
            raise AttributeError(f"RedisZone has no {attr}(): {what} needs memory shared by "
                                 "the processes of one machine (use shmkit.Zone).  On Redis: "
                                 "queue, dict, lock, rlock, semaphore, bounded_semaphore, "
                                 "event, counter, board, config")

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Drop this process's connections (the objects stay on the server)."""
        if self._closed:
            return
        self._closed = True
        conn = getattr(self._tls, "conn", None)
        if conn is not None:
            conn.disconnect()
            self._tls = threading.local()
        client, self._client = self._client, None
        if client is not None and not self._given_client:
            try:
                client.close()
            except Exception:
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        if self._given_client:
            raise TypeError("a RedisZone made from a client= cannot be pickled; make it "
                            "from a url so that other processes can connect")
        return (_attach_zone, (self.name, self.url, self.lease, self._cluster, self._options))

    def __repr__(self) -> str:
        where = self.url if self.url is not None else "client"
        return f"<shmkit.RedisZone {self.name!r} {where}{' closed' if self._closed else ''}>"


def _is_cluster_client(client: object) -> bool:
    try:
        from redis.cluster import RedisCluster
    except ImportError:
        return False
    return isinstance(client, RedisCluster)


def check_lease(lease: object) -> float:
    if not isinstance(lease, (int, float)) or isinstance(lease, bool) or not lease >= 0.1:
        raise ValueError(f"lease must be a number of seconds >= 0.1, not {lease!r}")
    return float(lease)


def _attach_zone(name: str, url: str, lease: float, cluster: bool | None,
                 options: dict[str, Any]) -> RedisZone:
    """One RedisZone per (process, name, url, options) among unpickled objects."""
    key = (os.getpid(), name, url, lease, repr(sorted(options.items())))
    with _zones_lock:
        z = _zones.get(key)
        if z is None or z.closed:
            z = RedisZone(name, url, lease=lease, cluster=cluster, **options)
            _zones[key] = z
        return z


# -- waiting ---------------------------------------------------------------------------------

class Wait:
    """The client side of one blocking wait (see _protocol, "Waiting").

    ``for wid, prev, ms in w.rounds(): ...`` yields a fresh waiter id per round, the
    previous one (which the next attempt unregisters), and how long this round may block
    in milliseconds; after an attempt that registered ``wid``, call ``w.block(wid, hint)``.
    The last round has ``wid == ""`` (nothing is registered: just one more look)."""

    __slots__ = ("zone", "base", "deadline", "prev", "_failures")

    def __init__(self, zone: RedisZone, base: str, timeout: float | None) -> None:
        self.zone = zone
        self.base = base
        self.deadline: float | None = (None if timeout is None else
                                       time.monotonic() + max(timeout, 0.0))
        self.prev = ""
        self._failures = 0

    def left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def round(self) -> tuple[str, str, int]:
        left = self.left()
        if left is not None and left <= 0:
            wid = ""
            ms = 0
        else:
            wid = new_id()
            ms = int(1000 * (BLOCK_SLICE if left is None else min(left, BLOCK_SLICE))) + 1
        prev, self.prev = self.prev, wid
        return wid, prev, ms

    def slice_seconds(self, hint_ms: float | None = None) -> float:
        """How long the next block may last: the round's time, shortened to ``hint_ms``
        when the state may change by itself (a lease running out)."""
        left = self.left()
        seconds = BLOCK_SLICE if left is None else min(left, BLOCK_SLICE)
        if hint_ms is not None and hint_ms >= 0:
            seconds = min(seconds, hint_ms / 1000 + 0.005)
        return seconds

    def block(self, wid: str, hint_ms: float | None = None) -> None:
        """Block until woken, the round's time or ``hint_ms`` pass (see slice_seconds)."""
        seconds = self.slice_seconds(hint_ms)
        if seconds <= 0:
            return
        self.zone.wait_token(self.base, wid, seconds)

    def pause_after(self, err: BackendConnectionError) -> float:
        """After a connection error while waiting: the seconds to back off before going
        on (a restart of the server is ridden through until the deadline); ``err`` is
        raised once the deadline has passed.  The next round registers afresh."""
        left = self.left()
        if left is not None and left <= 0:
            raise err
        self._failures += 1
        pause = min(0.05 * 2.0 ** min(self._failures, 5), 1.0)
        if left is not None:
            pause = min(pause, left)
        self.prev = ""
        return pause

    def retry_or_raise(self, err: BackendConnectionError) -> None:
        """pause_after(err), slept."""
        time.sleep(self.pause_after(err))

    def until(self, attempt: Callable[[str, str, int], T], done: Callable[[T], bool],
              hint_ms: Callable[[T], float | None] | None = None, *,
              resend: bool = True) -> tuple[bool, T]:
        """The loop of every blocking call that waits on a token list (lock, semaphore,
        event, board, join, a put waiting for room): each round, ``attempt(wid, prev,
        ms)`` looks (a script that registers ``wid`` as a waiter when it must wait);
        ``(True, reply)`` as soon as ``done(reply)``, ``(False, reply)`` after the last
        round (the deadline passed).  Between rounds it blocks until woken or
        ``hint_ms(reply)`` (see slice_seconds).  A connection error is ridden through
        until the deadline (retry_or_raise), also in an attempt if ``resend`` (False for
        a put, which may have been stored: raised).  The awaitable twin is
        _aio.await_until."""
        while True:
            wid, prev, ms = self.round()
            try:
                r = attempt(wid, prev, ms)
            except BackendConnectionError as err:
                if not resend:
                    raise
                self.retry_or_raise(err)
                continue
            if done(r):
                return True, r
            if not wid:
                return False, r
            try:
                self.block(wid, None if hint_ms is None else hint_ms(r))
            except BackendConnectionError as err:
                self.retry_or_raise(err)


def timeout_error(what: str, timeout: float | None) -> ShmkitTimeoutError:
    return ShmkitTimeoutError(f"{what}: timed out after {timeout} s")


# -- lease renewal ---------------------------------------------------------------------------

class Leased(Protocol):
    """What the renewing thread renews: an object whose holds are leases."""

    _lease: float

    def _renew(self) -> None: ...


class Detachable(Protocol):
    """What is given back when the process exits: a queue consumer."""

    def _exit(self) -> None: ...


_renewer: _Renewer | None = None
_renewer_lock = threading.Lock()


def _process_renewer() -> _Renewer:
    global _renewer
    with _renewer_lock:
        if _renewer is None or not _renewer.alive(os.getpid()):
            _renewer = _Renewer()   # first use, or a forked child (threads do not fork)
        return _renewer


class _Renewer:
    """One daemon thread per process that calls ``_renew()`` on every registered object
    a third of the way through its lease (objects are held weakly)."""

    def __init__(self) -> None:
        self._objs: weakref.WeakSet[Leased] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = os.getpid()
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="shmkit-redis-leases",
                                         daemon=True)
        self._thread.start()

    def alive(self, pid: int) -> bool:
        return self._pid == pid and self._thread.is_alive()

    def add(self, obj: Leased) -> None:
        with self._lock:
            self._objs.add(obj)
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                objs = list(self._objs)
            period = min((o._lease for o in objs), default=DEFAULT_LEASE) / 3
            for o in objs:
                try:
                    o._renew()
                except Exception:
                    self.errors += 1   # the next round tries again; the lease may run out
            del objs
            self._wake.wait(period)
            self._wake.clear()


# -- clean exit: give back what this process holds -------------------------------------------

_detach_at_exit: weakref.WeakSet[Detachable] = weakref.WeakSet()


def detach_at_exit(obj: Detachable) -> None:
    _detach_at_exit.add(obj)


@atexit.register
def _exit_detach() -> None:
    for obj in list(_detach_at_exit):
        try:
            obj._exit()
        except Exception:
            pass
