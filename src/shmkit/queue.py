"""Queue: the multi-producer multi-consumer queue between processes.

``Queue("jobs")`` finds or creates a queue of that name in the default zone (or
``zone=``); every process that names it shares it.  The surface is ``queue.Queue``'s
(put/get with block and timeout, the ``_nowait`` pair, qsize/empty/full, QueueEmpty and
QueueFull which *are* ``queue.Empty`` and ``queue.Full``), plus batching (put_many,
get_many), close() for the whole queue, zero-copy hand-off of large payloads
(``reserve()``/``commit()``) and ``statistics()``.

Two modes:

``mode="bytes"`` (default)
    put() takes any bytes-like object; get() returns bytes (or, with ``view=True``, a
    memoryview of a fresh receive buffer).  put/get are the C methods themselves.

``mode="objects"``
    Anything picklable, with pickle protocol 5: out-of-band buffers (NumPy arrays,
    PickleBuffer) are written straight from their memory into the ring, not copied into
    the pickle first; the consumer's arrays are views of one receive buffer.  Give
    ``serializer=`` (an object with ``dumps``/``loads``, or a ``(dumps, loads)`` pair)
    to use another format.

Capacity is in bytes (rounded up to a power of two; 1 MiB by default): a message takes
16 bytes of header plus its length rounded up to 16.  ``max_messages`` optionally limits
the count too.  A message that can never fit raises TooLargeError at once.

What happens when processes die (see docs/queue.md): a producer killed mid-put never
makes a partial message visible: its claim is skipped and counted in ``drops``; a
consumer killed mid-get loses the message(s) it was taking (also ``drops``); the queue
stays usable and its space comes back.  Waiters repair this within ~20 ms.

Task accounting, as ``queue.Queue`` / ``multiprocessing.JoinableQueue``: ``task_done()``
marks the oldest message this handle took as done, ``join()`` waits until every message
put is done.  Two delivery modes, chosen at creation (``delivery=``):

``"at-most-once"`` (default)
    A message is handed to one consumer; if that consumer dies before ``task_done()`` the
    message is gone and its task is released (``abandoned_tasks``): join() cannot hang.

``"at-least-once"``
    A message taken stays in the ring, owned by its consumer, until ``task_done()``
    acknowledges it; if the consumer dies (or detaches) first, it is delivered again to
    another one (``redeliveries``).
"""

from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass

from . import _core
from ._errors import ClosedError, QueueEmpty, QueueFull  # noqa: F401  (re-exported names)

__all__ = ["Queue", "QueueStatistics", "Reservation", "DEFAULT_CAPACITY", "DELIVERY_MODES"]

DEFAULT_CAPACITY = 1 << 20
DEFAULT_SPIN = 50e-6

#: a block of zone memory for one zero-copy message (returned by Queue.reserve)
Reservation = _core.Reservation

_MODES = ("bytes", "objects")

#: the delivery modes, in the order of the core's codes (SHK_QDELIVERY_*: 1, 2)
DELIVERY_MODES = ("at-most-once", "at-least-once")


@dataclass(frozen=True)
class QueueStatistics:
    """What ``Queue.statistics()`` returns (counters are totals over all processes)."""

    depth: int          #: messages in the queue (claimed by producers, not yet taken)
    bytes_used: int     #: ring bytes in use, headers included
    capacity: int       #: ring bytes
    max_messages: int   #: message limit, 0 for none
    puts: int           #: messages put
    gets: int           #: messages got
    waits: int          #: times a caller slept (futex) waiting for data or space
    drops: int          #: messages lost to crashes: dropped_puts + dropped_gets
    dropped_puts: int   #: claimed by producers that died before committing (never visible)
    dropped_gets: int   #: committed, but taken by consumers that died holding them
    recoveries: int     #: repairs of what dead processes left behind
    members: int        #: handles attached now (all processes)
    reservations: int   #: zero-copy blocks alive (reserved, queued or being read)
    closed: bool
    unfinished_tasks: int  #: messages put and not yet marked done (nor released)
    in_flight: int      #: messages taken and not yet marked done
    redeliveries: int   #: at-least-once: given back by dead or detached consumers
    abandoned_tasks: int  #: at-most-once: tasks released with dead or detached consumers
    acknowledged: int   #: tasks marked done (task_done)
    delivery: str       #: "at-most-once" or "at-least-once"


def _check_serializer(serializer):
    if serializer is None:
        return None, None
    if isinstance(serializer, tuple) and len(serializer) == 2:
        dumps, loads = serializer
    else:
        dumps = getattr(serializer, "dumps", None)
        loads = getattr(serializer, "loads", None)
    if not callable(dumps) or not callable(loads):
        raise TypeError("serializer must have callable dumps() and loads() (like the pickle "
                        "module), or be a (dumps, loads) pair")
    return dumps, loads


class Queue(_core.Queue):
    """A multi-producer multi-consumer queue shared by processes.

    ``Queue(name, capacity=None, *, zone=None, max_messages=None, mode="bytes",
    serializer=None, spin=None, delivery=None, create=True, exclusive=False)``

    - ``name``: the queue's name in the zone (1 to 63 bytes).
    - ``capacity``: ring bytes (default 1 MiB when creating; when attaching, None accepts
      whatever exists and a different number raises ZoneMismatchError).
    - ``zone``: a :class:`shmkit.Zone`; None means ``shmkit.zone.default_zone()``.
    - ``max_messages``: optional limit on the number of messages.
    - ``mode``: "bytes" or "objects" (see the module documentation).
    - ``spin``: seconds a blocked put/get spins before sleeping (adaptive, default 50 µs;
      0 sleeps at once, which is kinder when processes outnumber cores).
    - ``delivery``: "at-most-once" (the default when creating) or "at-least-once",
      recorded with the queue; None takes what exists, another value than the existing
      queue's raises ObjectMismatchError (see the module documentation).
    - ``create=False`` only attaches (ObjectNotFoundError if missing);
      ``exclusive=True`` fails with ObjectExistsError if it exists.

    A Queue pickles as (zone, name, mode): spawn and forkserver children reattach to the
    same queue; fork children can use an inherited one directly.
    """

    def __new__(cls, name, capacity=None, *, zone=None, max_messages=None, mode="bytes",
                serializer=None, spin=None, delivery=None, create=True, exclusive=False):
        from .zone import Zone, _check_object_name, default_zone

        _check_object_name(name)
        if capacity is not None:
            if not isinstance(capacity, int) or isinstance(capacity, bool):
                raise TypeError(f"capacity must be an int (bytes) or None, not {capacity!r}")
            if capacity <= 0:
                raise ValueError(f"capacity must be > 0 bytes, not {capacity}")
        if max_messages is not None:
            if not isinstance(max_messages, int) or isinstance(max_messages, bool):
                raise TypeError(f"max_messages must be an int or None, not {max_messages!r}")
            if max_messages <= 0:
                raise ValueError(f"max_messages must be > 0, not {max_messages}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, not {mode!r}")
        if delivery is not None and delivery not in DELIVERY_MODES:
            raise ValueError(f"delivery must be one of {DELIVERY_MODES}, not {delivery!r}")
        delivery_code = 0 if delivery is None else DELIVERY_MODES.index(delivery) + 1
        dumps, loads = _check_serializer(serializer)
        if serializer is not None and mode != "objects":
            raise ValueError('a serializer is only used with mode="objects"')
        if zone is None:
            zone = default_zone()
        elif not isinstance(zone, Zone):
            raise TypeError(f"zone must be a shmkit.Zone, not {type(zone).__name__}")
        if cls is Queue and mode == "objects":
            cls = _ObjectQueue
        self = super().__new__(cls, zone._live(), name, capacity or 0, max_messages or 0,
                               bool(create), bool(exclusive), delivery_code)
        self.name = name
        self.zone = zone
        self.mode = mode
        self._serializer = serializer
        self._dumps = dumps
        self._loads = loads
        self.spin = DEFAULT_SPIN if spin is None else spin
        self._pid = os.getpid()
        return self

    def __init__(self, *args, **kwargs):
        pass  # everything happens in __new__ (the C base allocates the handle)

    @property
    def aio(self):
        """Awaitable twins: ``await q.aio.get(block=True, timeout=None)``, ``put(item,
        block=True, timeout=None)``, ``get_many(...)``, ``put_many(...)`` (docs/asyncio.md;
        a cancelled get never takes a message)."""
        from ._aio import AioQueue
        return AioQueue(self)

    # -- the rest of the queue.Queue surface --------------------------------------------
    # put/get/task_done/join/qsize/empty/full/unfinished_tasks/delivery are the C base's

    @property
    def maxsize(self) -> int:
        """``queue.Queue.maxsize``: the message limit, 0 when the queue bounds bytes only
        (the stdlib's 0 means "no item limit")."""
        return int(self.max_messages)

    def join_thread(self) -> None:
        """``multiprocessing.Queue.join_thread()``: nothing to wait for (no feeder thread:
        put() has written the message into shared memory when it returns)."""

    def cancel_join_thread(self) -> None:
        """``multiprocessing.Queue.cancel_join_thread()``: nothing to cancel (see
        join_thread)."""

    def statistics(self) -> QueueStatistics:
        """Counters and state (see QueueStatistics)."""
        return QueueStatistics(**super().statistics(), delivery=self.delivery)

    def destroy(self) -> None:
        """Remove the queue from its zone and free its memory.  Every other process must
        have stopped using it: their handles would point at freed memory."""
        self.detach()
        self.zone.destroy(self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()

    def __reduce__(self):
        return (_reattach, (self.zone, self.name, self.mode, self._serializer, self.spin))

    def __repr__(self):
        if self.detached:
            return f"<shmkit.Queue {self.name!r} detached>"
        return (f"<shmkit.Queue {self.name!r} mode={self.mode} capacity={self.capacity} "
                f"depth={self.qsize()}{' closed' if self.closed else ''}>")


class _ObjectQueue(Queue):
    """Queue(mode="objects"): pickles (protocol 5, out-of-band buffers into the ring) or
    uses the given serializer."""

    def _encode(self, obj):
        """What obj becomes in the ring: ``(data, None)``, one message, or ``(None,
        parts)``, one framed message (pickle's out-of-band buffers as parts)."""
        if self._dumps is not None:
            return self._dumps(obj), None
        buffers = []
        data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        if not buffers:
            return data, None
        try:
            parts = [data]
            parts.extend(b.raw() for b in buffers)
        except BufferError:  # a non-contiguous buffer: pickle it in-band instead
            return pickle.dumps(obj, protocol=5), None
        return None, parts

    def _encode_put(self, obj, block, timeout):
        data, parts = self._encode(obj)
        if parts is None:
            return _core.Queue.put(self, data, block, timeout)
        return self._put_parts(parts, block, timeout)

    def _decode(self, raw):
        if type(raw) is tuple:
            return pickle.loads(raw[0], buffers=raw[1:])
        if type(raw) is memoryview:
            return raw  # a zero-copy block sent with reserve()/commit()
        if self._loads is not None:
            return self._loads(raw)
        return pickle.loads(raw)

    def put(self, item, block=True, timeout=None):
        """Put any picklable object (see Queue.put)."""
        self._encode_put(item, block, timeout)

    def put_nowait(self, item):
        self._encode_put(item, False, None)

    def get(self, block=True, timeout=None):
        """Remove and return the oldest object (see Queue.get)."""
        return self._decode(_core.Queue.get(self, block, timeout))

    def get_nowait(self):
        return self._decode(_core.Queue.get_nowait(self))

    def put_many(self, items, block=True, timeout=None):
        dumps = self._dumps or (lambda o: pickle.dumps(o, protocol=5))
        return _core.Queue.put_many(self, [dumps(o) for o in items], block, timeout)

    def get_many(self, max_messages=1024, max_bytes=None, block=True, timeout=None):
        decode = self._decode
        return [decode(r) for r in _core.Queue.get_many(self, max_messages, max_bytes, block,
                                                        timeout)]


def _reattach(zone, name, mode, serializer, spin):
    return Queue(name, zone=zone, mode=mode, serializer=serializer, spin=spin)


# -- demonstration (used by `shmkit demo`) ---------------------------------------------------

def _demo_producer(zone, name, size, deadline, batch):
    q = Queue(name, zone=zone)
    msg = bytes(size)
    msgs = [msg] * batch
    while time.monotonic() < deadline:
        try:
            q.put_many(msgs, timeout=0.2)
        except QueueFull:
            pass
        except ClosedError:
            break


def _demo_consumer(zone, name, deadline):
    q = Queue(name, zone=zone)
    while time.monotonic() < deadline + 1:
        try:
            q.get_many(4096, timeout=0.2)
        except QueueEmpty:
            pass
        except ClosedError:
            break


def _demo(duration: float = 5.0, producers: int = 2, consumers: int = 2, size: int = 64,
          batch: int = 256, print=print) -> dict:
    """Producers and consumers in spawned processes on one queue, printing the live
    throughput every half second.  Returns {"messages", "seconds", "rate", "drops"}."""
    import multiprocessing as mp

    from .zone import Zone

    ctx = mp.get_context("spawn")
    zname = f"shmkit-demo-{os.getpid()}"
    zone = Zone(zname, 64 << 20)
    procs = []
    try:
        q = Queue("demo", 4 << 20, zone=zone)
        deadline = time.monotonic() + duration + 1.0  # children need ~1 s to start
        procs = [ctx.Process(target=_demo_consumer, args=(zone, "demo", deadline))
                 for _ in range(consumers)]
        procs += [ctx.Process(target=_demo_producer, args=(zone, "demo", size, deadline, batch))
                  for _ in range(producers)]
        for p in procs:
            p.start()
        print(f"queue demo: {producers} producer(s) -> {consumers} consumer(s), {size}-byte "
              f"messages, batches of {batch}, {duration:.0f} s")
        while q.statistics().gets == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        t0, g0 = time.monotonic(), q.statistics().gets
        last_t, last_g = t0, g0
        while time.monotonic() < t0 + duration:
            time.sleep(0.5)
            st = q.statistics()
            now = time.monotonic()
            print(f"  {now - t0:5.1f} s  {(st.gets - last_g) / (now - last_t) / 1e6:8.2f} M msg/s"
                  f"  depth {st.depth:7d}  waits {st.waits}")
            last_t, last_g = now, st.gets
        st = q.statistics()
        total, secs = st.gets - g0, time.monotonic() - t0
        q.close()
        for p in procs:
            p.join(10)
        result = {"messages": total, "seconds": secs, "rate": total / secs, "drops": st.drops}
        print(f"  total {total} messages in {secs:.1f} s: {total / secs / 1e6:.2f} M msg/s")
        return result
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        zone.close()
        zone.unlink()
