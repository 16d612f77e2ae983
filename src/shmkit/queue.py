"""Queue: the multi-producer multi-consumer queue between processes.

``Queue("jobs")`` finds or creates a queue of that name in the default zone (or
``zone=``); every process that names it shares it.  The surface is ``queue.Queue``'s
(put/get with block and timeout, the ``_nowait`` pair, qsize/empty/full, QueueEmpty and
QueueFull which *are* ``queue.Empty`` and ``queue.Full``), plus batching (put_many,
get_many), close() for the whole queue, zero-copy hand-off of large payloads
(``reserve()``/``commit()``) and ``statistics()``.

Two modes:

``mode="bytes"`` (the default when creating)
    put() takes any bytes-like object; get() returns bytes (or, with ``view=True``, a
    memoryview of a fresh receive buffer).  put/get are the C methods themselves.

``mode="objects"``
    Anything picklable, with pickle protocol 5: out-of-band buffers (NumPy arrays,
    PickleBuffer) are written straight from their memory into the ring, not copied into
    the pickle first; the consumer's arrays are views of one receive buffer.  Give
    ``serializer=`` (an object with ``dumps``/``loads``, or a ``(dumps, loads)`` pair)
    to use another format.

The mode is recorded with the queue when it is created: opening it again with the other
mode raises ObjectMismatchError naming both; ``mode=None`` (the default) takes the
recorded one (a queue made before modes were recorded opens as "bytes" unless told).

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
from dataclasses import dataclass
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from . import _core
from ._checks import check_object_name, check_serializer
from ._deprecation import renamed
from ._errors import ClosedError, QueueEmpty, QueueFull  # noqa: F401  (re-exported names)
from .zone import Zone, default_zone

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._aio import AioQueue
    from ._types import Buffer, SerializerArg, Timeout

__all__ = ["Queue", "QueueStats", "Reservation", "DEFAULT_CAPACITY", "DELIVERY_MODES"]

DEFAULT_CAPACITY = 1 << 20
DEFAULT_SPIN = 50e-6

#: a block of zone memory for one zero-copy message (returned by Queue.reserve)
Reservation = _core.Reservation

_MODES = ("bytes", "objects")

#: the delivery modes, in the order of the core's codes (SHK_QDELIVERY_*: 1, 2)
DELIVERY_MODES = ("at-most-once", "at-least-once")


@dataclass(frozen=True)
class QueueStats:
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


class Queue(_core.Queue):
    """A multi-producer multi-consumer queue shared by processes.

    ``Queue(name, capacity=None, *, zone=None, max_messages=None, mode=None,
    serializer=None, spin=None, delivery=None, create=True, exclusive=False)``

    - ``name``: the queue's name in the zone (1 to 63 bytes).
    - ``capacity``: ring bytes (default 1 MiB when creating; when attaching, None accepts
      whatever exists and a different number raises ZoneMismatchError).
    - ``zone``: a :class:`shmkit.Zone`; None means ``shmkit.zone.default_zone()``.
    - ``max_messages``: optional limit on the number of messages.
    - ``mode``: "bytes" or "objects" (see the module documentation), recorded with the
      queue; None takes what exists ("bytes" when creating), another value than the
      existing queue's raises ObjectMismatchError.  ``serializer`` needs
      ``mode="objects"``.
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

    name: str
    zone: Zone
    mode: str
    _serializer: SerializerArg | None
    _dumps: Callable[..., Any] | None
    _loads: Callable[..., Any] | None
    _pid: int

    def __new__(cls, name: str, capacity: int | None = None, *, zone: Zone | None = None,
                max_messages: int | None = None, mode: str | None = None,
                serializer: SerializerArg | None = None, spin: float | None = None,
                delivery: str | None = None, create: bool = True,
                exclusive: bool = False) -> Self:
        check_object_name(name)
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
        if mode is not None and mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, not {mode!r}")
        if delivery is not None and delivery not in DELIVERY_MODES:
            raise ValueError(f"delivery must be one of {DELIVERY_MODES}, not {delivery!r}")
        delivery_code = 0 if delivery is None else DELIVERY_MODES.index(delivery) + 1
        dumps, loads = check_serializer(serializer)
        if serializer is not None and mode != "objects":
            raise ValueError('a serializer is only used with mode="objects"')
        if zone is None:
            zone = default_zone()
        elif not isinstance(zone, Zone):
            raise TypeError(f"zone must be a shmkit.Zone, not {type(zone).__name__}")
        # objects mode: a Queue whose put/get (de)serialise, as Self promises
        made: Any = _ObjectQueue if cls is Queue and mode == "objects" else cls
        self: Self = super().__new__(made, zone._live(), name, capacity or 0, max_messages or 0,
                                     bool(create), bool(exclusive), delivery_code,
                                     0 if mode is None else _MODES.index(mode) + 1)
        if mode is None:  # what the queue recorded (none recorded: bytes)
            mode = self._mode_recorded or "bytes"
            if mode == "objects" and cls is Queue:
                self.__class__ = cast("type[Self]", _ObjectQueue)  # as `made` above
        self.name = name
        self.zone = zone
        self.mode = mode
        self._serializer = serializer
        self._dumps = dumps
        self._loads = loads
        self.spin = DEFAULT_SPIN if spin is None else spin
        self._pid = os.getpid()
        return self

    @property
    def aio(self) -> AioQueue:
        """Awaitable twins: ``await q.aio.get(block=True, timeout=None)``, ``put(item,
        block=True, timeout=None)``, ``get_many(...)``, ``put_many(...)`` (docs/asyncio.md;
        a cancelled get never takes a message)."""
        from ._aio import AioQueue
        return AioQueue(self)

    def _encode(self, obj: Any) -> tuple[Buffer, None] | tuple[None, list[Buffer]]:
        """What obj becomes in the ring: ``(data, None)``, one message, or ``(None,
        parts)``, one framed message.  A bytes queue puts the bytes-like object as it is;
        mode="objects" pickles (see _ObjectQueue)."""
        return obj, None

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

    def statistics(self) -> QueueStats:
        """Counters and state (see QueueStats)."""
        return QueueStats(**super().statistics(), delivery=self.delivery)

    def destroy(self) -> None:
        """Remove the queue from its zone and free its memory.  Every other process must
        have stopped using it: their handles would point at freed memory."""
        self.detach()
        self.zone.destroy(self.name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reattach, (self.zone, self.name, self.mode, self._serializer, self.spin))

    def __repr__(self) -> str:
        if self.detached:
            return f"<shmkit.Queue {self.name!r} detached>"
        return (f"<shmkit.Queue {self.name!r} mode={self.mode} capacity={self.capacity} "
                f"depth={self.qsize()}{' closed' if self.closed else ''}>")


class _ObjectQueue(Queue):
    """Queue(mode="objects"): pickles (protocol 5, out-of-band buffers into the ring) or
    uses the given serializer."""

    def _encode(self, obj: Any) -> tuple[Buffer, None] | tuple[None, list[Buffer]]:
        """What obj becomes in the ring: ``(data, None)``, one message, or ``(None,
        parts)``, one framed message (pickle's out-of-band buffers as parts)."""
        if self._dumps is not None:
            return self._dumps(obj), None
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        if not buffers:
            return data, None
        try:
            parts: list[Buffer] = [data]
            parts.extend(b.raw() for b in buffers)
        except BufferError:  # a non-contiguous buffer: pickle it in-band instead
            return pickle.dumps(obj, protocol=5), None
        return None, parts

    def _encode_put(self, obj: Any, block: bool, timeout: Timeout) -> None:
        data, parts = self._encode(obj)
        if parts is None:
            assert data is not None
            return _core.Queue.put(self, data, block, timeout)
        return self._put_parts(parts, block, timeout)

    def _decode(self, raw: Any) -> Any:
        if type(raw) is tuple:
            return pickle.loads(raw[0], buffers=raw[1:])
        if type(raw) is memoryview:
            return raw  # a zero-copy block sent with reserve()/commit()
        if self._loads is not None:
            return self._loads(raw)
        return pickle.loads(raw)

    def put(self, item: Any, block: bool = True, timeout: Timeout = None) -> None:
        """Put any picklable object (see Queue.put)."""
        self._encode_put(item, block, timeout)

    def put_nowait(self, item: Any) -> None:
        self._encode_put(item, False, None)

    # objects come back decoded: no view= (a bytes queue's receive buffer) here
    def get(self, block: bool = True, timeout: Timeout = None) -> Any:  # type: ignore[override]
        """Remove and return the oldest object (see Queue.get)."""
        return self._decode(_core.Queue.get(self, block, timeout))

    def get_nowait(self) -> Any:
        return self._decode(_core.Queue.get_nowait(self))

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: Timeout = None) -> int:
        dumps = self._dumps or (lambda o: pickle.dumps(o, protocol=5))
        return _core.Queue.put_many(self, [dumps(o) for o in items], block, timeout)

    def get_many(self, max_messages: int = 1024, max_bytes: int | None = None,
                 block: bool = True, timeout: Timeout = None) -> list[Any]:
        decode = self._decode
        return [decode(r) for r in _core.Queue.get_many(self, max_messages, max_bytes, block,
                                                        timeout)]


def _reattach(zone: Zone, name: str, mode: str, serializer: SerializerArg | None,
              spin: float) -> Queue:
    return Queue(name, zone=zone, mode=mode, serializer=serializer, spin=spin)


# the old name of QueueStats (shmkit 0.1): every statistics class is now <Thing>Stats
if TYPE_CHECKING:
    QueueStatistics = QueueStats
else:
    __getattr__ = renamed(__name__, {"QueueStatistics": ("QueueStats", QueueStats)})
