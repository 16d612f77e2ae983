"""Awaitable twins of the RedisZone objects (issue 16): ``await q.aio.get()``,
``async with lock.aio:``, ``await event.aio.wait()``, ``await board.aio.wait_newer(v)``.

They send the same scripts as the blocking objects (``_protocol``) over ``redis.asyncio``,
on one client per event loop, and wait the same way: server-side, in BLMOVE or BLPOP on a
connection of their own, so a thousand waiting coroutines cost no thread and no CPU.

Cancellation is safe:

- a cancelled ``aio.get()`` never loses a message: a BLMOVE cut off by the cancellation
  has its connection closed (the server drops it) and whatever it moved stays in the
  consumer's landing list for its next get; a take script whose reply the cancellation
  cut off still completes, and what it took is kept by the handle and returned first by
  its next get (``aio`` or not);
- a cancelled ``aio.acquire()`` never leaves the lock (or semaphore unit) held: if the
  server granted it after all, it is released at once;
- ``aio.put()`` cancelled while its script ran may or may not have put the message (as a
  put whose connection broke).

Timeouts raise what the blocking methods raise (QueueEmpty, QueueFull, ShmkitTimeoutError).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Union

import redis.asyncio
from redis import exceptions as rx

from .._errors import QueueEmpty
from . import _protocol as P
from ._base import blocking_timeout, check_release_count, queue_timeout, wait_timeout
from ._errors import BackendConnectionError
from ._zone import RedisZone, Wait, translate

if TYPE_CHECKING:
    import redis.asyncio.cluster
    from typing_extensions import Self, TypeAlias

    from ..config import Snapshot
    from .._types import Timeout
    from ._board import RedisBoard, RedisConfig
    from ._queue import RedisQueue
    from ._sync import RedisEvent, RedisHoldBase, RedisLockBase, RedisSemaphore

    #: the redis.asyncio client of a zone: a single server's or a cluster's
    AsyncClient: TypeAlias = Union[redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster]

    class AsyncCommands(Protocol):
        """``execute_command`` of either client (see _zone.Commands)."""

        async def execute_command(self, *args: Any, **options: Any) -> Any: ...

__all__ = ["AioQueue", "AioLock", "AioSemaphore", "AioEvent", "AioBoard", "AioConfig"]

T = TypeVar("T")


# -- the async client of a zone, one per event loop ----------------------------------------

_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[int, tuple[RedisZone, AsyncClient]]] = \
    weakref.WeakKeyDictionary()


def aclient(zone: RedisZone) -> AsyncClient:
    """The redis.asyncio client of ``zone`` for the running event loop."""
    loop = asyncio.get_running_loop()
    per_loop = _clients.setdefault(loop, {})
    c = per_loop.get(id(zone))
    if c is None or c[0] is not zone:
        if zone._given_client:
            raise TypeError("aio needs a RedisZone made from a url (it opens its own "
                            "redis.asyncio client)")
        url = zone.url
        assert url is not None           # (a zone made from a url)
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        opts = dict(zone._options)
        client: AsyncClient
        if zone.cluster:
            from redis.asyncio.cluster import RedisCluster
            client = RedisCluster.from_url(url, **opts)
        else:
            opts.setdefault("retry", Retry(NoBackoff(), 0))
            client = redis.asyncio.Redis.from_url(url, **opts)
        c = (zone, client)
        per_loop[id(zone)] = c
    return c[1]


async def arun(zone: RedisZone, script: P.Script, keys: Sequence[str | bytes],
               args: Sequence[P.Arg]) -> P.Reply:
    client: AsyncCommands = aclient(zone)
    try:
        try:
            return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except rx.NoScriptError:
            return await client.execute_command("EVAL", script.source, len(keys), *keys, *args)
    except rx.RedisError as err:
        raise translate(err) from err


async def ablocking(zone: RedisZone, key: str, *args: Any) -> P.Reply:
    """A blocking command on a connection of its own; closed if anything (a cancellation)
    interrupts it, so that the server drops the command and no reply is left behind."""
    client = aclient(zone)
    conn: Any     # redis.asyncio's Connection (two classes, the same methods used here)
    release: Callable[[], object]      # a cluster node's returns None, a pool's a coroutine
    if zone.cluster:
        from redis.asyncio.cluster import RedisCluster
        assert isinstance(client, RedisCluster)
        node = client.get_node_from_key(key)
        assert node is not None        # (None only when asking for a replica)
        conn = node.acquire_connection()
        release = functools.partial(node.release, conn)
    else:
        assert isinstance(client, redis.asyncio.Redis)
        pool = client.connection_pool
        conn = await pool.get_connection()
        release = functools.partial(pool.release, conn)
    try:
        await conn.send_command(*args)
        return await conn.read_response()
    except BaseException as err:
        await asyncio.shield(conn.disconnect(nowait=True))
        if isinstance(err, rx.RedisError):
            raise translate(err) from err
        raise
    finally:
        r = release()
        if asyncio.iscoroutine(r):
            await r


async def ablock(w: Wait, wid: str, hint_ms: float | None = None) -> None:
    """Wait.block(), awaitable."""
    seconds = w.slice_seconds(hint_ms)
    if seconds <= 0:
        return
    key = f"{w.base}:w:{wid}"
    await ablocking(w.zone, key, "BLPOP", key, f"{max(seconds, 0.001):.3f}")


async def aretry_or_raise(w: Wait, err: BackendConnectionError) -> None:
    """Wait.retry_or_raise(), awaitable."""
    await asyncio.sleep(w.pause_after(err))


async def await_until(w: Wait, attempt: Callable[[str, str, int], Awaitable[T]],
                      done: Callable[[T], bool],
                      hint_ms: Callable[[T], float | None] | None = None, *,
                      resend: bool = True) -> tuple[bool, T]:
    """Wait.until(), awaitable: the one loop of the awaitable calls that wait on a token
    list (``attempt`` is awaited; blocking and backing off are the awaitable twins)."""
    while True:
        wid, prev, ms = w.round()
        try:
            r = await attempt(wid, prev, ms)
        except BackendConnectionError as err:
            if not resend:
                raise
            await aretry_or_raise(w, err)
            continue
        if done(r):
            return True, r
        if not wid:
            return False, r
        try:
            await ablock(w, wid, None if hint_ms is None else hint_ms(r))
        except BackendConnectionError as err:
            await aretry_or_raise(w, err)


async def shielded(coro: Awaitable[T], on_orphan: Callable[[T], object]) -> T:
    """Await ``coro`` so that a cancellation of the caller does not cut it off: it runs to
    its end, and its result then goes to ``on_orphan``."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        def done(t: asyncio.Future[T]) -> None:
            if not t.cancelled() and t.exception() is None:
                on_orphan(t.result())
        task.add_done_callback(done)
        raise


# -- queue -----------------------------------------------------------------------------------

class AioQueue:
    """``q.aio``: awaitable get, get_many, put, put_many, join of a RedisQueue."""

    def __init__(self, q: RedisQueue) -> None:
        self._q = q

    def _stash(self) -> collections.deque[bytes]:
        st = self._q._stash
        if st is None:
            st = self._q._stash = collections.deque()
        return st

    async def _take(self, n: int, max_bytes: int | None, block: bool,
                    timeout: Timeout) -> list[bytes]:
        q = self._q
        zone = q._live()
        st = q._stash
        if st:
            return [st.popleft() for _ in range(min(n, len(st)))]
        cid, args = q._take_args(n, max_bytes)

        def orphan(r: P.Reply) -> None:
            if r and r[0] > 0:
                self._stash().extend(r[1:])

        r = await shielded(arun(zone, P.QUEUE_TAKE, q._keys, args), orphan)
        got = q._taken(r, n, forget_landing=False)
        if got is not None:
            return got
        if not block:
            raise QueueEmpty(f"queue {q._name!r} is empty")
        w = Wait(zone, q._base, queue_timeout(block, timeout))
        while True:
            seconds = q._take_slice(w, timeout)
            try:
                q._maybe_taking = True
                args[4] = "1"
                await ablocking(zone, q._ready, *q._blmove(cid, seconds))
                r = await shielded(arun(zone, P.QUEUE_TAKE, q._keys, args), orphan)
            except BackendConnectionError as err:
                await aretry_or_raise(w, err)
                continue
            got = q._taken(r, n, forget_landing=False)
            if got is not None:
                return got

    async def get(self, block: bool = True, timeout: Timeout = None, *,
                  view: bool = False) -> Any:
        """Awaitable ``get``: the oldest message; QueueEmpty after ``timeout``."""
        return self._q._decode((await self._take(1, 0, block, timeout))[0], view)

    async def get_many(self, max_messages: int = 1024, max_bytes: int | None = None,
                       block: bool = True, timeout: Timeout = None) -> list[Any]:
        raws = await self._take(max_messages, max_bytes, block, timeout)
        if self._q._objects:
            return [self._q._loads(r) for r in raws]
        return list(raws)

    async def _put(self, datas: list[bytes], block: bool, timeout: Timeout) -> int:
        q = self._q
        zone = q._live()
        n = len(datas)
        done = q._count_put(0, await arun(zone, P.QUEUE_PUT, q._keys, ["", "", "", 0, *datas]))
        if done < n and block:
            async def attempt(wid: str, prev: str, ms: int) -> int:
                nonlocal done
                r = await arun(zone, P.QUEUE_PUT, q._keys, ["", prev, wid, ms, *datas[done:]])
                done = q._count_put(done, r)
                return done

            w = Wait(zone, q._base, queue_timeout(block, timeout))
            await await_until(w, attempt, lambda put: put == n, resend=False)
        return q._put_result(done, block, timeout)

    async def put(self, item: Any, block: bool = True, timeout: Timeout = None) -> None:
        await self._put([self._q._encode(item)], block, timeout)

    async def put_many(self, items: Iterable[Any], block: bool = True,
                       timeout: Timeout = None) -> int:
        datas = [self._q._encode(i) for i in items]
        return await self._put(datas, block, timeout) if datas else 0

    async def join(self, timeout: Timeout = None) -> None:
        q = self._q
        zone = q._live()

        async def attempt(wid: str, prev: str, ms: int) -> P.Reply:
            return await arun(zone, P.QUEUE_JOIN, q._keys, ["", prev, wid, ms])

        w = Wait(zone, q._base, wait_timeout(timeout))
        joined, r = await await_until(w, attempt, P.all_done, P.consumer_lease_left_ms)
        if not joined:
            raise q._join_timeout(r, timeout)


# -- locks and semaphores --------------------------------------------------------------------

async def aacquire(holder: RedisHoldBase, seconds: float | None) -> bool:
    """RedisHoldBase._acquire(), awaitable: a hold the server grants to an acquire that
    is cancelled before it hears so is given back at once."""
    zone = holder._live()
    hold, args = holder._acquire_args()
    at = holder._round_at

    def orphan(r: P.Reply) -> None:
        if P.granted(r):
            script, give_back = holder._give_back(hold)
            asyncio.ensure_future(arun(zone, script, holder._keys, give_back))

    async def attempt(wid: str, prev: str, ms: int) -> P.Reply:
        args[at], args[at + 1], args[at + 2] = prev, wid, ms
        r = await shielded(arun(zone, holder._acquire_script, holder._keys, list(args)),
                           orphan)
        args[at + 3] = "0"          # a contention is counted on the first try only
        return r

    got, r = await await_until(Wait(zone, holder._base, seconds), attempt, P.granted,
                               P.lease_left_ms)
    if got:
        holder._held(r, hold)
    return got


class AioLock:
    """``lock.aio``: ``await lock.aio.acquire(blocking=True, timeout=-1)``,
    ``await lock.aio.release()``, ``async with lock.aio:``."""

    def __init__(self, lock: RedisLockBase) -> None:
        self._lock = lock

    async def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return await aacquire(self._lock, blocking_timeout(blocking, timeout))

    async def release(self) -> None:
        lock = self._lock
        zone = lock._live()
        owner = lock._owner()
        lock._released(await arun(zone, P.LOCK_RELEASE, lock._keys, lock._release_args(owner)),
                       owner)

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class AioSemaphore:
    """``sem.aio``: ``await sem.aio.acquire(blocking=True, timeout=None)``,
    ``await sem.aio.release(n=1)``, ``async with sem.aio:``."""

    def __init__(self, sem: RedisSemaphore) -> None:
        self._sem = sem

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        return await aacquire(self._sem, blocking_timeout(blocking, timeout, default=None))

    async def release(self, n: int = 1) -> None:
        sem = self._sem
        n = check_release_count(n, bounded=sem._bounded)
        zone = sem._live()
        mine = sem._mine(n)
        sem._released(await arun(zone, P.SEM_RELEASE, sem._keys, [sem._base, n, *mine]), mine)

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


# -- event, board, config ----------------------------------------------------------------------

class AioEvent:
    """``event.aio``: ``await event.aio.wait(timeout=None)`` -> the flag."""

    def __init__(self, event: RedisEvent) -> None:
        self._event = event

    async def wait(self, timeout: Timeout = None) -> bool:
        ev = self._event
        try:
            seconds = wait_timeout(timeout)
        except (TypeError, ValueError, OverflowError):
            if ev.is_set():  # as threading's Event (one round trip, on this error path only)
                return True
            raise
        zone = ev._live()
        seen = ""              # the generation of the flag at the first look

        async def attempt(wid: str, prev: str, ms: int) -> P.Reply:
            nonlocal seen
            r = await arun(zone, P.EVENT_WAIT, ev._keys, [ev._base, prev, wid, ms, seen])
            if seen == "" and not P.granted(r):
                seen = str(r[1])
            return r

        return (await await_until(Wait(zone, ev._base, seconds), attempt, P.granted))[0]


class AioBoard:
    """``board.aio``: ``await board.aio.wait_newer(version=0, timeout=None)`` ->
    ``(value, version)``."""

    def __init__(self, board: RedisBoard) -> None:
        self._board = board

    async def wait_newer(self, version: int = 0, timeout: Timeout = None, *,
                         copy: bool = True) -> tuple[Any, int]:
        b = self._board
        zone = b._live()

        async def attempt(wid: str, prev: str, ms: int) -> P.Reply:
            return await arun(zone, P.BOARD_READ, b._keys, [b._base, version, prev, wid, ms])

        w = Wait(zone, b._base, wait_timeout(timeout))
        found, r = await await_until(w, attempt, P.newer)
        if not found:
            raise b._wait_timeout(version, timeout)
        return b._newest(r)

    async def wait(self, version: int = 0, timeout: Timeout = None) -> int:
        return (await self.wait_newer(version, timeout))[1]


class AioConfig:
    """``cfg.aio``: ``await cfg.aio.wait_for_change(version=None, timeout=None)`` ->
    ``(snapshot, version)``."""

    def __init__(self, cfg: RedisConfig) -> None:
        self._cfg = cfg

    async def wait_for_change(self, version: int | None = None,
                              timeout: Timeout = None) -> tuple[Snapshot, int]:
        cfg = self._cfg
        if version is None:
            version = cfg._board.version
        snap = cfg._frozen(await cfg._board.aio.wait_newer(version, timeout))
        return snap[0], snap[1]

    wait_changed = wait_for_change
