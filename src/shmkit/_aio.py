"""Awaitable twins of the shared objects (issue 16): ``await lock.aio.acquire()``,
``async with lock.aio:``, ``await event.aio.wait()``, ``await board.aio.wait_newer(v)``...

Every object that can wait has an ``aio`` attribute with the same method names and
arguments as its blocking methods, returning what they return and raising what they
raise (a timed-out ``acquire`` returns False, ``wait_newer`` raises ShmkitTimeoutError).

How a wait runs (docs/asyncio.md has the picture):

* The *attempt* runs in the event loop's thread, inside the coroutine: when the object is
  ready there is no thread hop and no system call.  An attempt that finds it busy spins
  briefly (at most 50 µs, adapted per object; ``shmkit.aio_configure(spin=False)`` turns
  it off), then registers as a waiter and hands the futex word it would sleep on to the
  process's *hub*.
* The hub (``_core``, ``core/waitv.c``) is one thread per 127 distinct words waited on,
  blocked in ``futex_waitv`` (Linux 5.16; older kernels: a thread per word, see the docs).
  When a word changes, or a holder's liveness check or the deadline is due, it puts the
  wait on its event loop's notifier: an eventfd the loop watches (``add_reader``).  The
  loop resolves the coroutine's future, and the coroutine attempts again.  Waiting costs
  no CPU and no thread per coroutine.
* Cancellation is safe by construction: attempts happen only inside the coroutine, so a
  cancelled ``aio.get()`` or ``aio.acquire()`` has taken nothing; the cancellation takes
  the registration back and undoes any partial progress (an RWLock writer waiting for
  readers lets the writer word go; a barrier party that arrived breaks the barrier, as an
  interrupted ``threading.Barrier.wait`` does).
* Closing the object or its zone while coroutines wait wakes them with ClosedError.

``release()`` (and ``release_read``/``release_write``) happens at once and returns an
awaitable that is already done, so ``lock.aio.release()`` and ``await lock.aio.release()``
both work (the latter is what RedisZone's twins need).

Locks belong to what owns them in the blocking API: a Lock, an RWLock hold and semaphore
units to the process (any task may release them); an RLock to a *task* (the blocking RLock
belongs to a thread, and every task of an event loop runs in the same thread).
"""

from __future__ import annotations

import asyncio
import collections
import os
import pickle
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

from . import _core
from ._errors import (BrokenBarrierError, NotOwnerError, QueueEmpty, QueueFull,
                      ShmkitTimeoutError)

if TYPE_CHECKING:
    # the façades, for annotations only: they import this module (inside their `aio`
    # properties), never the other way round
    from ._types import Buffer
    from .board import Board
    from .config import SharedConfig, Snapshot
    from .queue import Queue
    from .sync import Barrier, Condition, Event, Lock, RLock, RWLock, Semaphore

__all__ = ["AioLock", "AioRLock", "AioRWLock", "AioSemaphore", "AioEvent", "AioCondition",
           "AioBarrier", "AioBoard", "AioConfig", "AioQueue", "aio_configure", "aio_statistics"]

_EAGAIN = _core.AIO_EAGAIN
_ETIMEDOUT = _core.AIO_ETIMEDOUT
_GOT = (0, _core.E_OWNERDEAD)   # an acquire's results that mean "acquired"


def aio_configure(*, spin: bool | None = None, spin_max: float | None = None,
                  mode: str | None = None, max_threads: int | None = None) -> dict[str, Any]:
    """Set (where given) and return the process's asyncio settings.

    ``spin``: whether an awaited call that finds its object busy first spins briefly in
    the event loop's thread before it waits through the hub.  On by default: when the
    other side answers within microseconds (both sides awaiting a tight exchange) it
    saves two thread wake-ups and a turn of the event loop each way.  The spin adapts per
    object (it grows where it wins, halves where it loses, stops where waits are long,
    probing again every 16th wait) and never exceeds ``spin_max`` seconds (default
    50 µs; ``shmkit.sync.configure(spin_max=0)`` turns it off too).  Off, no coroutine
    holds the loop longer than its attempts.
    ``mode``: ``"auto"`` (futex_waitv when the kernel has it), ``"futex_waitv"`` or
    ``"fallback"`` (a thread per word, as on kernels before 5.16).  ``max_threads``:
    bound on the hub's threads (0: the default, 256 with futex_waitv, 64 without).
    ``mode`` and ``max_threads`` can be changed only while no coroutine waits.
    """
    ns = None
    if spin_max is not None:
        if not isinstance(spin_max, (int, float)) or spin_max != spin_max:
            raise ValueError(f"spin_max must be a number of seconds, not {spin_max!r}")
        ns = int(spin_max * 1e9)
    return _core.aio_configure(mode, max_threads, spin, ns)


def aio_statistics() -> dict[str, Any]:
    """The hub's counters: ``mode``, ``threads`` (started), ``slots`` (distinct words
    watched now), ``waits`` (coroutines waiting now), ``watches``, ``doorbells``,
    ``sleeps``, ``ready``, ``retries``, ``forwarded``..."""
    return _core.aio_stats()


# -- the event loop's side ----------------------------------------------------------------

class _LoopHub:
    """One per event loop: the notifier the hub reports ready waits to, watched with
    add_reader.  It holds no reference to its loop (the loop holds it)."""

    __slots__ = ("notifier", "pid", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.notifier = _core.AioNotifier()
        self.pid = os.getpid()
        loop.add_reader(self.notifier.fileno(), self._ready)

    def _ready(self) -> None:
        for w in self.notifier.drain():
            fut = w.future
            if fut is not None and not fut.done():
                fut.set_result(None)


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopHub]" = \
    weakref.WeakKeyDictionary()


def _loop_notifier() -> tuple[asyncio.AbstractEventLoop, _core.AioNotifier]:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None or hub.pid != os.getpid():
        hub = _hubs[loop] = _LoopHub(loop)
    return loop, hub.notifier


async def _run(w: _core.AioWait, loop: asyncio.AbstractEventLoop) -> int:
    """Drive one AioWait to its end: attempt; while it must wait, await the future the
    loop resolves when the hub reports it ready; attempt again.  Whatever interrupts it
    (a cancellation, a timeout of asyncio.wait_for...) undoes it."""
    try:
        r = w.step()
        while r == _EAGAIN:
            fut: asyncio.Future[None] = loop.create_future()
            w.future = fut
            await fut
            r = w.step()
        return r
    except BaseException:
        w.cancel()
        raise
    finally:
        w.future = None


class _Done:
    """What release() returns: the release has happened; awaiting this is instant."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]

    def __repr__(self) -> str:
        return "<released>"


_DONE = _Done()


# -- Lock, RLock ----------------------------------------------------------------------------

class AioLock:
    """``lock.aio``: ``await lock.aio.acquire(blocking=True, timeout=-1)`` -> bool,
    ``lock.aio.release()``, ``async with lock.aio:``.  The lock belongs to the process,
    as the blocking Lock does: one task may release what another acquired."""

    __slots__ = ("_lock",)

    def __init__(self, lock: Lock | RLock) -> None:
        self._lock = lock

    async def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        """Acquire; True when acquired, False when not (``blocking=False``, or the timeout
        passed).  ``owner_died`` is True after an acquire that took the lock over from a
        holder that died."""
        loop, n = _loop_notifier()
        return await _run(_core.aio_acquire(n, self._lock, blocking, timeout), loop) in _GOT

    def release(self) -> _Done:
        """Release now (NotOwnerError when this process does not hold it)."""
        self._lock.release()
        return _DONE

    def locked(self) -> bool:
        return self._lock.locked()

    @property
    def owner_died(self) -> bool:
        return self._lock.owner_died

    def _owned(self) -> bool:
        return self._lock._is_owned()

    def _release_save(self) -> int:
        self._lock.release()
        return 1

    async def _acquire_restore(self, saved: int) -> None:
        await self.acquire()

    async def __aenter__(self) -> AioLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()

    def __repr__(self) -> str:
        return f"<aio of {self._lock!r}>"


class _TaskOwner:
    """Which task of one event loop holds (or is acquiring) a shared RLock, and the tasks
    of that loop waiting for it to let go."""

    __slots__ = ("owner", "waiters")

    def __init__(self) -> None:
        self.owner: asyncio.Task[Any] | None = None
        self.waiters: collections.deque[asyncio.Future[object]] = collections.deque()

    def hand_on(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return


# per event loop: (zone identity, offset) of an RLock -> its _TaskOwner (kept while the
# loop lives: tasks waiting for their turn hold on to it)
_rlock_owners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                          dict[tuple[object, ...], _TaskOwner]] = \
    weakref.WeakKeyDictionary()
_TIMED_OUT = object()


def _rlock_key(lock: Lock | RLock) -> tuple[object, ...]:
    zone = lock.zone
    name = getattr(zone, "name", None)
    return (zone.backend, name, lock._offset) if name is not None else (id(zone), lock._offset)


class AioRLock(AioLock):
    """``rlock.aio``: as AioLock, but the lock belongs to the *task* that acquired it: it
    may acquire it again (and must release it as many times); other tasks of the same
    event loop wait, as do other threads and processes.  (The blocking RLock belongs to a
    thread, and all the tasks of a loop share one.)  Do not mix blocking and awaited use
    of one RLock in the event loop's thread."""

    __slots__ = ()

    def _state(self, loop: asyncio.AbstractEventLoop, create: bool = True) -> _TaskOwner | None:
        per_loop = _rlock_owners.get(loop)
        if per_loop is None:
            if not create:
                return None
            per_loop = _rlock_owners[loop] = {}
        key = _rlock_key(self._lock)
        st = per_loop.get(key)
        if st is None and create:
            st = per_loop[key] = _TaskOwner()
        return st

    async def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        loop, n = _loop_notifier()
        task = asyncio.current_task()
        st = self._state(loop)
        assert st is not None
        # the arguments are checked first, as threading.RLock checks them
        left = _core.timeout_seconds(timeout, blocking, _core.TIMEOUT_LOCK)
        if task is not None and st.owner is task:
            return self._lock.acquire(False)  # one level more: this thread holds it
        # the shared part's deadline starts now
        w = _core.aio_acquire(n, self._lock, blocking, timeout)
        end = None if left is None else time.monotonic() + left
        try:
            while st.owner is not None:
                # another task of this loop holds it, or is acquiring it: wait for it to
                # let go, then compete again
                if end is not None and time.monotonic() >= end:
                    w.cancel()
                    return False
                fut: asyncio.Future[object] = loop.create_future()
                st.waiters.append(fut)
                timer = None
                if end is not None:
                    timer = loop.call_later(max(end - time.monotonic(), 0), _time_up, fut)
                try:
                    got = await fut
                except BaseException:
                    if fut.done() and not fut.cancelled():
                        st.hand_on()  # our turn came with the cancellation: pass it on
                    raise
                finally:
                    if timer is not None:
                        timer.cancel()
                    if not fut.done():
                        fut.cancel()
                    try:
                        st.waiters.remove(fut)
                    except ValueError:
                        pass
                if got is _TIMED_OUT:
                    w.cancel()
                    return False
            st.owner = task
            try:
                r = await _run(w, loop)
            except BaseException:
                st.owner = None
                st.hand_on()
                raise
            if r not in _GOT:
                st.owner = None
                st.hand_on()
                return False
            return True
        except BaseException:
            w.cancel()
            raise

    def release(self) -> _Done:
        """Release one level; NotOwnerError when the current task does not hold it."""
        loop = asyncio.get_running_loop()
        st = self._state(loop, create=False)
        if st is None or st.owner is None or st.owner is not asyncio.current_task():
            raise NotOwnerError(f"release of {self._lock!r}: not held by this task")
        self._lock.release()
        if self._lock._owned_count == 0:
            st.owner = None
            st.hand_on()
        return _DONE

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def _owned(self) -> bool:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        st = self._state(loop, create=False)
        return st is not None and st.owner is not None and st.owner is asyncio.current_task()

    def _release_save(self) -> int:
        loop = asyncio.get_running_loop()
        st = self._state(loop)
        assert st is not None
        count = self._lock._owned_count
        for _ in range(count):
            self._lock.release()
        st.owner = None
        st.hand_on()
        return count

    async def _acquire_restore(self, saved: int) -> None:
        await self.acquire()
        for _ in range(saved - 1):
            self._lock.acquire(False)


def _time_up(fut: asyncio.Future[object]) -> None:
    if not fut.done():
        fut.set_result(_TIMED_OUT)


# -- RWLock -------------------------------------------------------------------------------

class _AioRWSide:
    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: Callable[[], Awaitable[bool]],
                 release: Callable[[], object]) -> None:
        self._acquire = acquire
        self._release = release

    async def __aenter__(self) -> _AioRWSide:
        await self._acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release()


class AioRWLock:
    """``rw.aio``: ``await rw.aio.acquire_read()``, ``await rw.aio.acquire_write()``
    (``blocking``, ``timeout`` as for Lock) -> bool, ``release_read()``,
    ``release_write()``, ``async with rw.aio.read_lock():``, ``async with
    rw.aio.write_lock():``.  Holds belong to the process.  A writer cancelled while it
    waits for readers to leave lets the writer word go again."""

    __slots__ = ("_rw",)

    def __init__(self, rw: RWLock) -> None:
        self._rw = rw

    async def acquire_read(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        loop, n = _loop_notifier()
        return await _run(_core.aio_acquire(n, self._rw, blocking, timeout, False), loop) in _GOT

    async def acquire_write(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        loop, n = _loop_notifier()
        return await _run(_core.aio_acquire(n, self._rw, blocking, timeout, True), loop) in _GOT

    def release_read(self) -> _Done:
        self._rw.release_read()
        return _DONE

    def release_write(self) -> _Done:
        self._rw.release_write()
        return _DONE

    def read_lock(self) -> _AioRWSide:
        """``async with rw.aio.read_lock(): ...``"""
        return _AioRWSide(self.acquire_read, self._rw.release_read)

    def write_lock(self) -> _AioRWSide:
        """``async with rw.aio.write_lock(): ...``"""
        return _AioRWSide(self.acquire_write, self._rw.release_write)

    @property
    def owner_died(self) -> bool:
        return self._rw.owner_died


# -- Semaphore, Event ----------------------------------------------------------------------

class AioSemaphore:
    """``sem.aio``: ``await sem.aio.acquire(blocking=True, timeout=None)`` -> bool,
    ``sem.aio.release(n=1)``, ``async with sem.aio:``."""

    __slots__ = ("_sem",)

    def __init__(self, sem: Semaphore) -> None:
        self._sem = sem

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        loop, n = _loop_notifier()
        return await _run(_core.aio_acquire(n, self._sem, blocking, timeout), loop) in _GOT

    def release(self, n: int = 1) -> _Done:
        self._sem.release(n)
        return _DONE

    async def __aenter__(self) -> AioSemaphore:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._sem.release()


class AioEvent:
    """``event.aio``: ``await event.aio.wait(timeout=None)`` -> the flag (False when the
    timeout passed).  True if the flag was set while it waited, even if cleared again."""

    __slots__ = ("_event",)

    def __init__(self, event: Event) -> None:
        self._event = event

    async def wait(self, timeout: float | None = None) -> bool:
        ev = self._event
        if ev.is_set():
            return True
        loop, n = _loop_notifier()
        return await _run(_core.aio_event_wait(n, ev, timeout), loop) == 0


# -- Condition, Barrier ------------------------------------------------------------------------

class AioCondition:
    """``cond.aio``: ``async with cond.aio:``, ``await cond.aio.wait(timeout=None)`` ->
    bool, ``await cond.aio.wait_for(predicate, timeout=None)``, ``notify(n=1)``,
    ``notify_all()``, ``acquire``/``release`` of its lock (through the lock's own twin:
    with the default RLock, the condition belongs to a task).  ``wait`` re-acquires the
    lock before it returns, even when cancelled (as asyncio.Condition does).  In one
    process, the coroutines waiting on one Condition count as one sleeper: a
    notification that reaches the process wakes them all (their predicates decide)."""

    __slots__ = ("_cond", "_lock")

    def __init__(self, cond: Condition) -> None:
        self._cond = cond
        self._lock: AioLock = cond.lock.aio

    async def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        return await self._lock.acquire(blocking, timeout)

    def release(self) -> _Done:
        return self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> AioCondition:
        await self._lock.acquire()
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None and not self._lock._owned():
            return  # wait() could not take the lock back (its zone was closed): say why
        self._lock.release()

    async def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait until notified or the timeout passes, re-acquire the
        lock.  False when the timeout passed."""
        if not self._lock._owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        loop, n = _loop_notifier()
        w = _core.aio_cond_wait(n, self._cond, timeout)  # registered while the lock is held
        saved = self._lock._release_save()
        try:
            r = await _run(w, loop)
        finally:
            cancelled = None
            while True:
                try:
                    await self._lock._acquire_restore(saved)
                    break
                except asyncio.CancelledError as err:
                    cancelled = err
            if cancelled is not None:
                try:
                    raise cancelled
                finally:
                    cancelled = None
        return r == 0

    async def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true (checked with the lock held); returns its
        last value, false only when the timeout passed."""
        end = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            left = None
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    break
            await self.wait(left)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up at most n waiters (the lock must be held by this task)."""
        if not self._lock._owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        self._cond.notify(n)

    def notify_all(self) -> None:
        if not self._lock._owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        self._cond.notify_all()


class AioBarrier:
    """``barrier.aio``: ``await barrier.aio.wait(timeout=None)`` -> the arrival index.
    The last party runs the barrier's action.  A wait that times out, or is cancelled
    after arriving, breaks the barrier (BrokenBarrierError for everyone), as a
    threading.Barrier wait that times out or is interrupted does."""

    __slots__ = ("_barrier",)

    def __init__(self, barrier: Barrier) -> None:
        self._barrier = barrier

    async def wait(self, timeout: float | None = None) -> int:
        b = self._barrier
        if timeout is None:
            timeout = b._timeout
        loop, n = _loop_notifier()
        w = _core.aio_barrier_wait(n, b, timeout)
        if await _run(w, loop) == _ETIMEDOUT:
            raise BrokenBarrierError(f"barrier {b.name!r}: wait timed out")
        index, gen, last = w.barrier_result()
        if last:
            if b._action is not None:
                try:
                    b._action()
                except BaseException:
                    b.abort()
                    raise
            b._complete(gen)
        return index


# -- Board, SharedConfig ----------------------------------------------------------------------

class AioBoard:
    """``board.aio``: ``await board.aio.wait_newer(version=0, timeout=None, *,
    copy=True)`` -> ``(value, version)``, ``await board.aio.wait(version=0,
    timeout=None)`` -> the newest version.  ShmkitTimeoutError when the timeout passes."""

    __slots__ = ("_board",)

    def __init__(self, board: Board) -> None:
        self._board = board

    async def _wait(self, version: int, timeout: float | None) -> None:
        b = self._board
        loop, n = _loop_notifier()
        w = _core.aio_board_wait(n, b._live(), version, timeout, b._spin_ns)
        if await _run(w, loop) == _ETIMEDOUT:
            raise ShmkitTimeoutError(f"board {b.name!r}: no version newer than {version} "
                                     f"within {timeout} s")

    async def wait_newer(self, version: int = 0, timeout: float | None = None, *,
                         copy: bool = True) -> tuple[Any, int]:
        b = self._board
        r = b.read_if_newer(version, copy=copy)
        if r is not None:
            return r
        await self._wait(version, timeout)
        return b._read_newest(copy)

    async def wait(self, version: int = 0, timeout: float | None = None) -> int:
        b = self._board
        if b.version <= version:
            await self._wait(version, timeout)
        return b.version


class AioConfig:
    """``cfg.aio``: ``await cfg.aio.wait_for_change(version=None, timeout=None)`` ->
    ``(snapshot, version)`` (``wait_changed`` is the same)."""

    __slots__ = ("_cfg",)

    def __init__(self, cfg: SharedConfig) -> None:
        self._cfg = cfg

    async def wait_for_change(self, version: int | None = None,
                              timeout: float | None = None) -> tuple[Snapshot, int]:
        cfg = self._cfg
        if version is None:
            version = cfg._board.version
        snap = cfg._frozen(await AioBoard(cfg._board).wait_newer(version, timeout))
        return snap[0], snap[1]

    wait_changed = wait_for_change


# -- Queue ------------------------------------------------------------------------------------

_QW_DATA = _core.AIO_QW_DATA
_QW_SPACE = _core.AIO_QW_SPACE
_QW_JOIN = _core.AIO_QW_JOIN


def _queue_end(block: bool, timeout: float | None) -> float | None:
    """queue.Queue's (block, timeout) as an absolute time.monotonic() deadline."""
    if not block or timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout != timeout:
        raise TypeError(f"timeout must be a number or None, not {timeout!r}")
    if timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return time.monotonic() + timeout


def _left(end: float | None) -> float | None:
    return None if end is None else max(end - time.monotonic(), 0.0)


class AioQueue:
    """``q.aio``: ``await q.aio.get(block=True, timeout=None)``, ``await q.aio.put(item,
    block=True, timeout=None)``, ``await q.aio.get_many(max_messages=1024,
    max_bytes=None, block=True, timeout=None)``, ``await q.aio.put_many(items,
    block=True, timeout=None)``.  QueueEmpty / QueueFull as the blocking calls raise them.

    The get or put itself is the queue's non-blocking call, made in the event loop's
    thread; only the wait for data (or for room for exactly this record) goes to the hub,
    and that wait takes nothing: a cancelled ``aio.get()`` has not taken a message, a
    cancelled ``aio.put()`` has not put one."""

    __slots__ = ("_q",)

    def __init__(self, q: Queue) -> None:
        self._q = q

    async def _wait(self, what: int, item: Buffer | list[Buffer] | None,
                    end: float | None) -> None:
        loop, n = _loop_notifier()
        await _run(_core.aio_queue_wait(n, self._q, what, item, _left(end)), loop)

    async def join(self, timeout: float | None = None) -> None:
        """Until every message put (by any process) is marked done, or released with a
        dead consumer: the wait of ``Queue.join()`` in the hub (a futex word that
        task_done() bumps, and liveness checks of consumers).  ShmkitTimeoutError after
        ``timeout`` seconds; a cancelled join has changed nothing."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        loop, n = _loop_notifier()
        r = await _run(_core.aio_queue_wait(n, self._q, _QW_JOIN, None, timeout), loop)
        if r != 0:
            raise ShmkitTimeoutError(f"join(): {self._q.unfinished_tasks} task(s) unfinished "
                                     "(timed out)")

    async def get(self, block: bool = True, timeout: float | None = None, *,
                  view: bool = False) -> Any:
        """The oldest message (bytes; an object in mode="objects"; a zero-copy view with
        ``view=True`` in bytes mode).  QueueEmpty after ``timeout`` seconds."""
        q = self._q
        end = _queue_end(block, timeout)
        while True:
            try:
                return q.get(False, view=True) if view else q.get(False)
            except QueueEmpty:
                if not block:
                    raise
            await self._wait(_QW_DATA, None, end)

    async def get_many(self, max_messages: int = 1024, max_bytes: int | None = None,
                       block: bool = True, timeout: float | None = None) -> list[Any]:
        """Up to max_messages messages (at least one), as get_many."""
        q = self._q
        end = _queue_end(block, timeout)
        while True:
            try:
                return q.get_many(max_messages, max_bytes, False)
            except QueueEmpty:
                if not block:
                    raise
            await self._wait(_QW_DATA, None, end)

    async def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put one message (any picklable object in mode="objects").  QueueFull after
        ``timeout`` seconds without room."""
        q = self._q
        end = _queue_end(block, timeout)
        if q.mode == "objects":
            data, parts = q._encode(item)      # once: every try puts these same bytes
            record = data if parts is None else parts
        else:
            data, parts, record = item, None, item
        while True:
            try:
                if parts is None:
                    _core.Queue.put(q, data, False)
                else:
                    q._put_parts(parts, False)
                return
            except QueueFull:
                if not block:
                    raise
            await self._wait(_QW_SPACE, record, end)

    async def put_many(self, items: Iterable[Any], block: bool = True,
                       timeout: float | None = None) -> int:
        """Put every item (in order), waiting for room as needed; returns how many were put
        (``block=False``: as many as fit, QueueFull if none)."""
        q = self._q
        end = _queue_end(block, timeout)
        if q.mode == "objects":
            dumps = q._dumps or (lambda o: pickle.dumps(o, protocol=5))
            items = [dumps(o) for o in items]
        else:
            items = list(items)
        done = 0
        while done < len(items):
            try:
                done += _core.Queue.put_many(q, items[done:], False)
            except QueueFull:
                if not block:
                    raise
            if done == len(items) or not block:
                break
            try:
                await self._wait(_QW_SPACE, items[done], end)
            except QueueFull:
                raise QueueFull(f"queue is full (timed out after putting {done} of "
                                f"{len(items)} items)") from None
        return done
