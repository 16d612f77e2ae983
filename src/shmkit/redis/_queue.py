"""RedisQueue: shmkit.Queue's surface on a Redis list, with the delivery modes of
docs/design/delivery.md.

Data flow (keys in _protocol, "Queue"): producers RPUSH onto ``<base>:ready`` (a script
that also counts ``unfinished_tasks`` and enforces the limits); a consumer takes from the
head with a script.  In at-least-once mode the script *moves* each message into the
consumer's own list ``<base>:c:<consumer id>``, where it stays until the consumer's
task_done(); in at-most-once mode it pops it and counts it as the consumer's task.
Each consumer handle holds a lease (``lease`` seconds, renewed by the zone's background
thread while the handle lives).  Whenever a consumer's lease is found expired (by any
take, join or statistics call), what it held goes back to the head of the queue
(at-least-once: redelivered, counted in ``redeliveries``) or its tasks are released
(at-most-once: ``abandoned_tasks``), so join() cannot hang on a dead consumer.

Blocking: a get that finds nothing blocks server-side in ``BLMOVE ready -> <base>:t:<id>``
(woken by the next put, no polling), in slices of at most 2 s so that a close() of the
queue is noticed; the message it moved is then taken by the same script as above (so a
consumer killed or interrupted between the two steps loses nothing: the message is given
back).  join() and a put waiting for room block in BLPOP on a token list (see _protocol).
Ctrl-C interrupts any of these: Python raises KeyboardInterrupt inside the socket read,
and the connection is closed, which ends the blocked command on the server.
"""

from __future__ import annotations

import collections
import os
import pickle
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from .._checks import check_serializer
from .._deprecation import renamed
from .._errors import (ClosedError, ObjectMismatchError, QueueEmpty, QueueFull,
                       ShmkitTimeoutError, TooLargeError, ZoneMismatchError)
from . import _protocol as P
from ._base import RedisObject, queue_timeout, wait_timeout
from ._errors import BackendConnectionError, LeaseLostError
from ._zone import (BLOCK_SLICE, RedisZone, Wait, detach_at_exit, new_id, process_identity,
                    timeout_error)

if TYPE_CHECKING:
    from typing_extensions import Self

    from .._types import SerializerArg
    from ._aio import AioQueue

__all__ = ["RedisQueue", "RedisQueueStats", "DELIVERY_MODES"]

DELIVERY_MODES = ("at-most-once", "at-least-once")
_MODES = ("bytes", "objects")
#: what Redis takes as one value by default (proto-max-bulk-len)
MAX_MESSAGE_SIZE = 512 << 20


@dataclass(frozen=True)
class RedisQueueStats:
    """What ``RedisQueue.statistics()`` returns (totals over all processes)."""

    depth: int              #: messages waiting to be taken
    bytes_used: int | None  #: payload bytes queued (and, at-least-once, held by consumers);
    #:                         counted only when the queue has a capacity (else None)
    capacity: int           #: bound on bytes_used, 0 for none
    max_messages: int       #: bound on messages (waiting + held), 0 for none
    puts: int
    gets: int               #: messages handed to consumers (a redelivery counts again)
    unfinished_tasks: int   #: put and not yet marked done
    in_flight: int          #: taken and not yet marked done
    redeliveries: int       #: at-least-once: messages given back to be delivered again
    abandoned_tasks: int    #: at-most-once: tasks of dead consumers released
    acknowledged: int       #: tasks marked done
    consumers: int          #: consumer handles holding a lease now
    delivery: str
    closed: bool


def _pickle(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=5)


def _check_limit(value: object, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int or None, not {value!r}")
    if value <= 0:
        raise ValueError(f"{what} must be > 0, not {value}")
    return value


class RedisQueue(RedisObject):
    """A multi-producer multi-consumer queue on Redis with shmkit.Queue's surface.

    ``zone.queue(name, capacity=None, *, max_messages=None, mode=None,
    serializer=None, delivery=None, lease=None, create=True, exclusive=False)``

    - ``capacity``: bound on the payload bytes in the queue (None: none; Redis's
      maxmemory bounds it anyway).  ``max_messages``: bound on the count.
    - ``mode``: "bytes" (put bytes-like, get bytes) or "objects" (pickle protocol 5, or
      ``serializer``), recorded with the queue; None takes what exists ("bytes" when
      creating), the other mode raises ObjectMismatchError (as the local Queue).
    - ``delivery``: "at-most-once" (default when creating) or "at-least-once"; None takes
      what exists.  See docs/design/delivery.md and docs/redis.md.
    - ``lease``: seconds a consumer stays registered without renewal (default: the
      zone's).  A consumer killed holding messages loses them to redelivery (or has its
      tasks released) that long after its last renewal.

    put/get/put_nowait/get_nowait/put_many/get_many/qsize/empty/full/close/reopen/
    task_done/join/unfinished_tasks/maxsize/statistics as shmkit.Queue and queue.Queue.
    """

    _kind = "queue"

    def __init__(self, name: str, capacity: int | None = None, *, zone: RedisZone,
                 max_messages: int | None = None, mode: str | None = None,
                 serializer: SerializerArg | None = None, delivery: str | None = None,
                 lease: float | None = None, create: bool = True, exclusive: bool = False,
                 spin: float | None = None) -> None:
        capacity = _check_limit(capacity, "capacity")
        max_messages = _check_limit(max_messages, "max_messages")
        if mode is not None and mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, not {mode!r}")
        if delivery is not None and delivery not in DELIVERY_MODES:
            raise ValueError(f"delivery must be one of {DELIVERY_MODES}, not {delivery!r}")
        dumps, loads = check_serializer(serializer)
        if serializer is not None and mode != "objects":
            raise ValueError('a serializer is only used with mode="objects"')
        self._setup(zone, name, create=create, lease=lease, exclusive=exclusive)
        self._keys: tuple[str] = (f"{self._base}:meta",)
        self._ready = f"{self._base}:ready"
        have = zone.run(P.QUEUE_INIT, self._keys,
                        ["", delivery or "at-most-once", max_messages or 0, capacity or 0,
                         mode or "bytes"])
        have_delivery: str = have[0].decode()
        # the mode recorded at creation (None: a queue made before modes were recorded)
        have_mode: str | None = have[4].decode() if len(have) > 4 and have[4] else None
        if mode is not None and have_mode is not None and mode != have_mode:
            raise ObjectMismatchError(f"queue {name!r} exists with mode {have_mode}; it was "
                                      f"declared again with mode {mode}")
        mode = mode or have_mode or "bytes"
        have_max, have_cap = int(have[1] or 0), int(have[2] or 0)
        if delivery is not None and delivery != have_delivery:
            raise ObjectMismatchError(f"queue {name!r} exists with delivery={have_delivery!r}, "
                                      f"not {delivery!r}")
        if max_messages is not None and max_messages != have_max:
            raise ZoneMismatchError(f"queue {name!r} exists with max_messages={have_max or None}, "
                                    f"not {max_messages}")
        if capacity is not None and capacity != have_cap:
            raise ZoneMismatchError(f"queue {name!r} exists with capacity={have_cap or None}, "
                                    f"not {capacity}")
        self._delivery = have_delivery
        self._max_messages = have_max
        self._capacity = have_cap
        self.mode = mode
        self._serializer = serializer
        self._dumps: P.Dumps = dumps or _pickle
        self._loads: P.Loads = loads or pickle.loads
        self._objects = mode == "objects"
        self.spin = spin
        self._cid = ""
        self._cid_pid: int | None = None
        self._took = False
        # messages a cancelled aio.get() took (returned first)
        self._stash: collections.deque[bytes] | None = None
        self._aio: AioQueue | None = None
        self._registered = False      # our lease is in <base>:consumers (renewed for us)
        self._maybe_taking = False    # a BLMOVE may have left a message in our landing list
        self._detached = False
        self._cid_lock = threading.Lock()

    @classmethod
    def _reopen(cls, zone: RedisZone, name: str, kw: dict[str, Any]) -> Self:
        return cls(name, zone=zone, create=False, **kw)

    def _reduce_kwargs(self) -> dict[str, Any]:
        return {"mode": self.mode, "serializer": self._serializer}

    # -- identity --------------------------------------------------------------------------
    @property
    def delivery(self) -> str:
        """"at-most-once" or "at-least-once" (chosen when the queue was created)."""
        return self._delivery

    @property
    def maxsize(self) -> int:
        """queue.Queue's maxsize: ``max_messages``, or 0 when the count is unbounded."""
        return self._max_messages

    @property
    def max_messages(self) -> int:
        return self._max_messages

    @property
    def capacity(self) -> int:
        """Bound on payload bytes (0: none)."""
        return self._capacity

    @property
    def max_message_size(self) -> int:
        return min(self._capacity, MAX_MESSAGE_SIZE) if self._capacity else MAX_MESSAGE_SIZE

    @property
    def detached(self) -> bool:
        return self._detached

    def _consumer(self) -> str:
        pid = os.getpid()
        if self._cid_pid != pid:
            with self._cid_lock:
                if self._cid_pid != pid:
                    self._cid = f"{process_identity()}:{new_id()[:8]}"
                    self._cid_pid = pid
                    self._took = False
                    self._registered = False
        return self._cid

    def _live(self) -> RedisZone:
        if self._detached:
            raise ClosedError(f"{self!r} is detached")
        return super()._live()

    # -- encoding --------------------------------------------------------------------------
    def _encode(self, item: Any) -> bytes:
        data: bytes | str
        if self._objects:
            data = self._dumps(item)
            if isinstance(data, str):          # a text serializer (json): sent as UTF-8
                data = data.encode()
        elif type(item) is bytes:
            data = item
        else:
            try:
                data = bytes(memoryview(item))
            except TypeError:
                raise TypeError(f"a bytes-mode queue takes bytes-like objects, not "
                                f"{type(item).__name__} (use mode=\"objects\")") from None
        if self._capacity and len(data) > self._capacity:
            raise TooLargeError(f"queue {self._name!r}: a message of {len(data)} bytes can "
                                f"never fit its capacity of {self._capacity} bytes")
        if len(data) > MAX_MESSAGE_SIZE:
            raise TooLargeError(f"a message of {len(data)} bytes is larger than Redis takes "
                                f"({MAX_MESSAGE_SIZE})")
        return data

    def _decode(self, raw: bytes, view: bool = False) -> Any:
        if self._objects:
            return self._loads(raw)
        return memoryview(raw) if view else raw

    # -- put -------------------------------------------------------------------------------
    def _put(self, datas: list[bytes], block: bool, timeout: float | None) -> int:
        zone = self._live()
        n = len(datas)
        done = self._count_put(0, zone.run(P.QUEUE_PUT, self._keys, ["", "", "", 0, *datas]))
        if done < n and block:
            def attempt(wid: str, prev: str, ms: int) -> int:
                nonlocal done
                r = zone.run(P.QUEUE_PUT, self._keys, ["", prev, wid, ms, *datas[done:]])
                done = self._count_put(done, r)
                return done

            w = Wait(zone, self._base, queue_timeout(block, timeout))
            w.until(attempt, lambda put: put == n, resend=False)
        return self._put_result(done, block, timeout)

    def _count_put(self, done: int, r: int) -> int:
        """Messages put so far, after QUEUE_PUT put ``r`` more (-1: the queue is closed)."""
        if r == -1:
            raise ClosedError(f"queue {self._name!r} is closed")
        return done + r

    def _put_result(self, done: int, block: bool, timeout: float | None) -> int:
        """What a put returns once over: the count put (all, or what fitted in time);
        QueueFull if nothing fitted."""
        if done:
            return done
        raise QueueFull(f"queue {self._name!r} is full"
                        + (f" (timeout {timeout} s)" if block else ""))

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item`` at the tail.  Blocks while the queue is full (max_messages or
        capacity), then QueueFull; ClosedError if the queue is closed.  One round trip."""
        self._put([self._encode(item)], block, timeout)

    def put_nowait(self, item: Any) -> None:
        self._put([self._encode(item)], False, None)

    def put_many(self, items: Iterable[Any], block: bool = True,
                 timeout: float | None = None) -> int:
        """Put every item in order in one round trip (more only while waiting for room).
        Returns how many were put; non-blocking, what fits (QueueFull if nothing)."""
        datas = [self._encode(i) for i in items]
        if not datas:
            return 0
        return self._put(datas, block, timeout)

    # -- get -------------------------------------------------------------------------------
    def _take(self, n: int, max_bytes: int | None, block: bool,
              timeout: float | None) -> list[bytes]:
        zone = self._live()
        st = self._stash
        if st:
            return [st.popleft() for _ in range(min(n, len(st)))]
        cid, args = self._take_args(n, max_bytes)
        got = self._taken(zone.run(P.QUEUE_TAKE, self._keys, args), n, forget_landing=True)
        if got is not None:
            return got
        if not block:
            raise QueueEmpty(f"queue {self._name!r} is empty")
        w = Wait(zone, self._base, queue_timeout(block, timeout))
        while True:
            seconds = self._take_slice(w, timeout)
            try:
                self._maybe_taking = True
                args[4] = "1"
                zone.blocking(self._ready, *self._blmove(cid, seconds))
                r = zone.run(P.QUEUE_TAKE, self._keys, args)
            except BackendConnectionError as err:
                w.retry_or_raise(err)
                continue
            got = self._taken(r, n, forget_landing=True)
            if got is not None:
                return got

    # -- what the blocking and the awaitable takes share --------------------------------------
    def _take_args(self, n: int, max_bytes: int | None) -> tuple[str, list[P.Arg]]:
        """This process's consumer id (on its first take: renewed, and detached at exit)
        and QUEUE_TAKE's arguments; 4 says a BLMOVE may have left a message in the
        consumer's landing list, 5 that the lease must be registered."""
        cid = self._consumer()
        args: list[P.Arg] = [cid, self._lease_ms, n, max_bytes or 0,
                             "1" if self._maybe_taking else "",
                             "" if self._registered else "1"]
        if not self._took:
            self._took = True
            self._zone._renew_later(self)
            detach_at_exit(self)
        self._registered = True
        return cid, args

    def _taken(self, r: P.Reply, n: int, *, forget_landing: bool) -> list[bytes] | None:
        """A reply of QUEUE_TAKE (``[count, message...]``; count -1: closed and drained):
        the messages taken, None if none.  ``forget_landing``: fewer than ``n`` means the
        landing list is empty (not for aio, where another coroutine's BLMOVE, cancelled,
        may have left a message there meanwhile)."""
        if r[0] > 0:
            if forget_landing and r[0] < n:
                self._maybe_taking = False
            return list(r[1:])
        if r[0] == -1:
            raise ClosedError(f"queue {self._name!r} is closed and drained")
        return None

    def _take_slice(self, w: Wait, timeout: float | None) -> float:
        """Seconds the next BLMOVE may block; QueueEmpty once the deadline has passed."""
        left = w.left()
        if left is not None and left <= 0:
            raise QueueEmpty(f"queue {self._name!r} is empty (timeout {timeout} s)")
        return BLOCK_SLICE if left is None else min(left, BLOCK_SLICE)

    def _blmove(self, cid: str, seconds: float) -> tuple[str, ...]:
        """The server-side wait of a take: the next message moved from the queue to the
        consumer's landing list (taken from there by QUEUE_TAKE)."""
        return ("BLMOVE", self._ready, f"{self._base}:t:{cid}", "LEFT", "RIGHT",
                f"{max(seconds, 0.001):.3f}")

    def get(self, block: bool = True, timeout: float | None = None, *,
            view: bool = False) -> Any:
        """Remove and return the oldest message; QueueEmpty when nothing comes in time,
        ClosedError once the queue is closed and drained.  Blocking waits server-side."""
        return self._decode(self._take(1, 0, block, timeout)[0], view)

    def get_nowait(self) -> Any:
        return self._decode(self._take(1, 0, False, None)[0])

    def get_many(self, max_messages: int = 1024, max_bytes: int | None = None,
                 block: bool = True, timeout: float | None = None) -> list[Any]:
        """Remove and return up to ``max_messages`` messages in one round trip (at least
        one; blocking, waits for it), stopping before their payloads would pass
        ``max_bytes``."""
        if not isinstance(max_messages, int) or max_messages < 1:
            raise ValueError(f"max_messages must be an int >= 1, not {max_messages!r}")
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 1):
            raise ValueError(f"max_bytes must be an int >= 1 or None, not {max_bytes!r}")
        raws = self._take(min(max_messages, 100_000), max_bytes, block, timeout)
        if self._objects:
            loads = self._loads
            return [loads(r) for r in raws]
        return list(raws)

    @property
    def aio(self) -> AioQueue:
        """Awaitable twins: ``await q.aio.get()``, ``get_many``, ``put``, ``put_many``,
        ``join`` (redis.asyncio; see _aio for what cancellation does)."""
        if self._aio is None:
            from ._aio import AioQueue
            self._aio = AioQueue(self)
        return self._aio

    # -- task accounting -------------------------------------------------------------------
    def task_done(self, count: int = 1) -> None:
        """Mark done the oldest ``count`` messages this handle took and has not marked
        done.  ValueError when it has fewer outstanding; LeaseLostError when its lease ran
        out meanwhile (its messages were redelivered or its tasks released)."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"count must be an int >= 1, not {count!r}")
        zone = self._live()
        cid = self._consumer()
        r = zone.run(P.QUEUE_TASK_DONE, self._keys, [cid, count, self._lease_ms])
        if r[0] == 0:
            return
        if r[0] == -2 and self._took:
            raise LeaseLostError(f"queue {self._name!r}: this consumer's lease ran out; what "
                                 f"it held was {'redelivered' if self._delivery == 'at-least-once' else 'released'}")
        raise ValueError("task_done() called too many times")

    def join(self, timeout: float | None = None) -> None:
        """Block until every message put has been marked done (also the tasks of dead
        consumers, once their lease runs out).  ShmkitTimeoutError after ``timeout``."""
        zone = self._live()

        def attempt(wid: str, prev: str, ms: int) -> P.Reply:
            return zone.run(P.QUEUE_JOIN, self._keys, ["", prev, wid, ms])

        w = Wait(zone, self._base, wait_timeout(timeout))
        joined, r = w.until(attempt, P.all_done, P.consumer_lease_left_ms)
        if not joined:
            raise self._join_timeout(r, timeout)

    def _join_timeout(self, r: P.Reply, timeout: float | None) -> ShmkitTimeoutError:
        return timeout_error(f"queue {self._name!r}: join() with {r[1]} unfinished task(s)",
                             timeout)

    @property
    def unfinished_tasks(self) -> int:
        """Messages put and not yet marked done (taken or not)."""
        return self.statistics().unfinished_tasks

    # -- the rest of the queue.Queue surface -------------------------------------------------
    def qsize(self) -> int:
        """Messages waiting to be taken."""
        return int(self._live().execute("LLEN", self._ready))

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        """True when one more (empty) message would not fit now."""
        if not self._max_messages and not self._capacity:
            return False
        s = self.statistics()
        held = s.in_flight if self._delivery == "at-least-once" else 0
        if self._max_messages and s.depth + held >= self._max_messages:
            return True
        return bool(self._capacity and (s.bytes_used or 0) >= self._capacity)

    def close(self) -> None:
        """Close the queue for every process: put() raises ClosedError at once, get()
        drains what is left, then raises ClosedError (a blocked get notices within 2 s)."""
        self._live().run(P.QUEUE_CLOSE, self._keys, ["", "1"])

    def reopen(self) -> None:
        """Undo close()."""
        self._live().run(P.QUEUE_CLOSE, self._keys, ["", "0"])

    @property
    def closed(self) -> bool:
        """True after close() (by any process)."""
        return bool(self._zone.execute("HGET", self._keys[0], "closed") == b"1")

    def reserve(self, nbytes: int, block: bool = True, timeout: float | None = None) -> NoReturn:
        """Not on Redis: zero-copy hand-off needs memory both processes map.  put() the
        bytes instead."""
        raise NotImplementedError("RedisQueue has no reserve(): a zero-copy block needs "
                                  "memory shared by both processes; put() the bytes")

    def repair(self) -> int:
        """Reclaim now what consumers whose lease ran out held (get, join and
        statistics do it too).  Returns the number of messages redelivered plus tasks
        released so far (the totals)."""
        s = self.statistics()
        return s.redeliveries + s.abandoned_tasks

    def statistics(self) -> RedisQueueStats:
        r = self._zone.run(P.QUEUE_STATE, self._keys, [""])
        depth, closed, consumers, flat = r
        if isinstance(flat, dict):
            st = {k.decode(): int(v) for k, v in flat.items()}
        else:
            st = {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        puts, gets = st.get("puts", 0), st.get("gets", 0)
        acked, redelivered = st.get("acknowledged", 0), st.get("redeliveries", 0)
        abandoned = st.get("abandoned_tasks", 0)
        return RedisQueueStats(
            depth=int(depth), bytes_used=st.get("bytes", 0) if self._capacity else None,
            capacity=self._capacity, max_messages=self._max_messages, puts=puts, gets=gets,
            unfinished_tasks=puts - acked - abandoned,
            in_flight=gets - acked - redelivered - abandoned, redeliveries=redelivered,
            abandoned_tasks=abandoned, acknowledged=acked, consumers=int(consumers),
            delivery=self._delivery, closed=closed == b"1")

    # -- leases and lifecycle ----------------------------------------------------------------
    def _renew(self) -> None:
        if self._detached or self._closed or not self._took:
            return
        if self._cid_pid != os.getpid():
            return
        lost = self._zone.run(P.QUEUE_RENEW, self._keys, ["", self._lease_ms, self._cid])
        if lost:
            self._registered = False      # the next take registers again

    def detach(self) -> None:
        """Give this handle up: what it holds and has not marked done goes back at once
        (at-least-once: redelivered; at-most-once: its tasks released).  The handle is
        unusable after."""
        if self._detached:
            return
        try:
            if self._took and self._cid_pid == os.getpid() and not self._zone.closed:
                self._zone.run(P.QUEUE_DETACH, self._keys, [self._cid])
        finally:
            self._detached = True
            self._closed = True

    def _exit(self) -> None:
        self.detach()

    def destroy(self) -> None:
        """Remove the queue and everything in it from Redis (nobody may use it after)."""
        zone = self._zone
        self.detach()
        zone.destroy(self._name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _repr_state(self) -> str:
        return f"delivery={self._delivery} mode={self.mode}"


# the name RedisQueueStats had when the Redis backend was merged (issue 14): every
# statistics class is <Thing>Stats (pickles made then name the class here)
if TYPE_CHECKING:
    RedisQueueStatistics = RedisQueueStats
else:
    __getattr__ = renamed(__name__, {"RedisQueueStatistics": ("RedisQueueStats", RedisQueueStats)})
