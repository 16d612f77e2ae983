"""Latest-value boards: one writer publishes, any number of readers read the newest value.

A :class:`Board` is what a camera driver, a sensor or a configuration loader wants to
share: not a queue of everything that happened, but *the current value*.  The writer
never waits for readers; a reader always gets the newest *complete* value and never a
torn one; a reader whose value has not changed pays for one memory load.

::

    # producer
    board = shmkit.Board("frames", 1920 * 1080 * 3)
    board.publish(frame)                       # an ndarray, bytes, str or any picklable

    # consumers, in other processes
    board = shmkit.Board("frames", 1920 * 1080 * 3)
    frame, version = board.wait_newer(0)       # blocks until the first value exists
    while True:
        frame, version = board.wait_newer(version, copy=False)   # zero-copy view

Values and how they come back from ``read()``:

==============================  ===========================  ==========================
published                       ``copy=True`` (default)      ``copy=False`` (zero-copy)
==============================  ===========================  ==========================
bytes, bytearray, memoryview    bytes                        read-only memoryview
str                             str                          str
numpy.ndarray (no objects)      read-only ndarray (private)  read-only ndarray (shared)
anything else                   unpickled object             unpickled object whose
                                (pickle protocol 5)          out-of-band buffers are
                                                             read-only views
==============================  ===========================  ==========================

A zero-copy value stays valid until this handle returns a *newer* value (from read,
read_if_newer, wait_newer or follow), or ``release()`` / ``close()`` is called: until
then the writer does not touch its buffer (it *pins* it).  Using it after that is a bug
that ``board.intact(version)`` detects: it is False once the buffer has been reused.  A
board with N buffers serves N - 2 concurrent zero-copy readers (``buffers=``).

Crash behaviour: a writer killed in the middle of a publication leaves the previous
value in place (readers never see the half-written one); a new writer can take over as
soon as the old one (pid + start time) is gone.  A reader killed while holding a
zero-copy view loses its pin when another reader needs its record.

The bytes are specified in ``core/layout.h`` (Board); docs/board.md has the details.
"""

from __future__ import annotations

import errno
import math
import os
import pickle
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _core
from ._checks import check_object_name
from ._dtypes import dtype_descr, dtype_from_descr, is_ndarray, numpy_or_hint
from ._errors import (ClosedError, CorruptedError, NotOwnerError, ObjectMismatchError,
                      ShmkitOSError, ShmkitTimeoutError, TooLargeError)
from ._surface import ClosingHandle
from .zone import Zone, default_zone

if TYPE_CHECKING:
    import numpy
    from numpy.typing import DTypeLike

    from ._aio import AioBoard
    from ._types import Buffer, Timeout

__all__ = ["Board", "BoardStats"]

KIND_BYTES = _core.BOARD_KIND_BYTES
KIND_STR = _core.BOARD_KIND_STR
KIND_NDARRAY = _core.BOARD_KIND_NDARRAY
KIND_PICKLE = _core.BOARD_KIND_PICKLE
KIND_USER = _core.BOARD_KIND_USER

_ALIGN = _core.BOARD_ALIGN
_ARRAY_HEAD = struct.Struct("=IHHQ")          # struct shk_board_ndarray_head
_PICKLE_HEAD = struct.Struct("=IIQQ")         # struct shk_board_pickle_head
_PICKLE_ENTRY = struct.Struct("=QQ")
_SMALL = 64 << 10                             # below this, build payloads in Python


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _release(mv: memoryview) -> None:
    """Release our memoryview of a slot unless something still exports it (e.g. the
    ndarray a ``with board.loan(...) as frame`` block leaves bound to ``frame``)."""
    try:
        mv.release()
    except BufferError:
        pass


def _corrupt(msg: str) -> CorruptedError:
    return CorruptedError(msg)


@dataclass(frozen=True)
class BoardStats:
    """What ``board.statistics()`` returns: the board's shared counters, then this
    handle's own."""

    name: str
    version: int                 #: latest version (0: nothing published yet)
    max_bytes: int               #: largest value
    buffers: int                 #: slots
    zero_copy_readers: int       #: concurrent zero-copy readers it can serve (buffers - 2)
    zero_copy_readers_in_use: int
    waiters: int                 #: readers sleeping in wait_newer right now
    writer_pid: int              #: 0 when there is no writer
    writer_alive: bool
    last_publish_ns: int         #: CLOCK_REALTIME of the latest publication (0: never)
    pinned_skips: int            #: buffers the writer skipped because a reader pinned them
    takeovers: int               #: writers that replaced a dead writer
    reclaimed: int               #: zero-copy reader records taken back from dead processes
    # this handle
    is_writer: bool
    copies: int                  #: values copied out
    retries: int                 #: copies thrown away because the writer overwrote them
    fallbacks: int               #: copies that had to pin the buffer (lapped too often)
    pins: int                    #: zero-copy values taken
    waits: int                   #: wait_newer calls that had to wait
    sleeps: int                  #: ... of which slept on the futex (the rest spun)
    spin_hits: int               #: ... values caught while spinning
    spin_budget_ns: int          #: current adaptive spin budget


class Board(ClosingHandle):
    """A latest-value board in a zone: one writer, any number of readers.

    ``Board(name, max_bytes, *, zone=None, buffers=None, writer=False, create=True,
    spin_us=20)`` finds the board ``name`` in ``zone`` (default: ``default_zone()``) or
    creates it with room for values of up to ``max_bytes`` bytes.  ``max_bytes=None``
    attaches to an existing board whatever its size (ObjectNotFoundError if there is
    none); a board of that name with another size raises ObjectMismatchError.

    ``buffers`` (default 3 when creating) is the number of value buffers: 2 is the
    minimum (a writer and a reader alternate), each zero-copy reader that may hold a view
    at the same time as the others needs one more.  The board takes ``buffers *
    max_bytes`` bytes of the zone.

    ``writer=True`` makes this handle the writer now (OSError EBUSY if another live
    process is the writer); otherwise the first ``publish()`` claims the role if nobody
    holds it.  ``spin_us`` bounds how long ``wait_newer`` spins before sleeping (the
    actual spin adapts to how fast values come; 0 never spins).
    """

    _cb: _core.Board        # set by __init__ (until then _closed stays True)
    _closed = True

    def __init__(self, name: str, max_bytes: int | None = None, *, zone: Zone | None = None,
                 buffers: int | None = None, writer: bool = False, create: bool = True,
                 spin_us: float = 20.0, _type: int = _core.OBJ_BOARD):
        name = check_object_name(name)
        if max_bytes is not None and (not isinstance(max_bytes, int) or isinstance(max_bytes, bool)
                                      or max_bytes <= 0):
            raise ValueError(f"max_bytes must be an int > 0 (or None to attach), not {max_bytes!r}")
        if buffers is not None and (not isinstance(buffers, int) or isinstance(buffers, bool) or
                                    not _core.BOARD_MIN_BUFFERS <= buffers <= _core.BOARD_MAX_BUFFERS):
            raise ValueError(f"buffers must be an int in {_core.BOARD_MIN_BUFFERS}.."
                             f"{_core.BOARD_MAX_BUFFERS}, not {buffers!r}")
        if not isinstance(spin_us, (int, float)) or spin_us < 0 or spin_us != spin_us:
            raise ValueError(f"spin_us must be a number >= 0, not {spin_us!r}")
        if zone is None:
            zone = default_zone()
        self.name = name
        self.zone = zone
        self._type = _type
        capacity = max_bytes if (create and max_bytes) else 0
        self._cb = _core.Board(zone._live(), name, _type, capacity, buffers or 3)
        self._closed = False
        cb = self._cb
        if max_bytes is not None and cb.capacity != max_bytes:
            got = cb.capacity
            self.close()
            raise ObjectMismatchError(f"board {name!r} exists with max_bytes={got}, not "
                                      f"{max_bytes}")
        if buffers is not None and cb.buffers != buffers:
            got = cb.buffers
            self.close()
            raise ObjectMismatchError(f"board {name!r} exists with buffers={got}, not {buffers}")
        self._version = cb.version          # bound C method: one load of the latest version
        self._spin_ns = int(spin_us * 1000)
        # read()'s fast path is one C call: while the version is unchanged it returns the
        # cached (value, version); otherwise it calls self._read_newest(), which decodes
        # and caches.  (The handle refers to this board weakly: no cycle.)
        self._read_cached = cb.read_cached
        cb.bind_reader(self)
        cb.set_cache((None, 0), True)
        if writer:
            self.take_writer()

    # -- identity -------------------------------------------------------------------------
    @property
    def max_bytes(self) -> int:
        return self._live().capacity

    @property
    def buffers(self) -> int:
        return self._live().buffers

    @property
    def version(self) -> int:
        """The latest published version (0: nothing yet).  One memory load."""
        return self._version()

    @property
    def closed(self) -> bool:
        return self._closed

    def _live(self) -> _core.Board:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")
        return self._cb

    # -- writer -----------------------------------------------------------------------------
    @property
    def is_writer(self) -> bool:
        """True while this handle is the board's writer."""
        return not self._closed and self._cb.is_writer

    def take_writer(self) -> None:
        """Become the writer.  Succeeds when there is no writer or the writer process is
        dead (a take-over, counted in statistics); raises ShmkitOSError (errno EBUSY)
        naming the writer when another live process or handle holds the role."""
        self._live().take_writer()

    def release_writer(self) -> None:
        """Give the writer role up (close() does it too); another handle may then take it."""
        if not self._closed:
            self._cb.release_writer()

    def _writer(self) -> _core.Board:
        cb = self._live()
        if not cb.is_writer:
            try:
                cb.take_writer()
            except ShmkitOSError as err:
                if err.errno != errno.EBUSY:
                    raise
                raise NotOwnerError(f"board {self.name!r}: {err.strerror or err}; only the "
                                    "writer may publish") from err
        return cb

    def publish(self, value: object) -> int:
        """Publish ``value`` as the newest one; returns its version.

        bytes-like values and str are stored as they are, NumPy arrays (without Python
        objects inside) as raw elements with their shape and dtype, anything else with
        pickle protocol 5 (large buffers inside go straight into shared memory).  The
        first publish of a handle claims the writer role if nobody holds it
        (NotOwnerError if another live process does).  TooLargeError if the encoded value
        exceeds max_bytes.  Never waits for readers.
        """
        cb = self._writer()
        if isinstance(value, (bytes, bytearray)):
            return self._publish_raw(cb, value, KIND_BYTES)
        if isinstance(value, str):
            return self._publish_raw(cb, value.encode("utf-8", "surrogatepass"), KIND_STR)
        if isinstance(value, memoryview):
            if not value.c_contiguous:
                value = value.tobytes()
            return self._publish_raw(cb, value, KIND_BYTES)
        if is_ndarray(value) and not value.dtype.hasobject:
            return self._publish_array(cb, value)
        return self._publish_pickle(cb, value)

    def publish_bytes(self, data: Buffer, kind: int = KIND_BYTES, meta: int = 0) -> int:
        """Publish raw bytes with an application-defined ``kind`` (>= 1000 for your own
        formats; readers get the bytes back) and ``meta`` (an offset <= len(data))."""
        if not isinstance(kind, int) or kind <= 0:
            raise ValueError(f"kind must be an int > 0, not {kind!r}")
        return self._publish_raw(self._writer(), data, kind, meta)

    def _publish_raw(self, cb: _core.Board, data: Buffer, kind: int, meta: int = 0) -> int:
        try:
            return cb.publish(data, kind, meta)
        except TooLargeError:
            raise TooLargeError(f"board {self.name!r}: a value of {memoryview(data).nbytes} "
                                f"bytes does not fit max_bytes={cb.capacity}") from None

    def _too_large(self, n: int) -> TooLargeError:
        return TooLargeError(f"board {self.name!r}: the encoded value takes {n} bytes, more "
                             f"than max_bytes={self._cb.capacity}")

    def _publish_array(self, cb: _core.Board, a: numpy.ndarray[Any, Any]) -> int:
        np = sys.modules["numpy"]
        descr = dtype_descr(a.dtype)
        ndim = a.ndim
        head = _ARRAY_HEAD.size + 8 * ndim
        meta = _align(head + len(descr))
        total = meta + a.nbytes
        if total > cb.capacity:
            raise self._too_large(total)
        mv = cb.begin()
        try:
            _ARRAY_HEAD.pack_into(mv, 0, _core.BOARD_NDARRAY_MAGIC, ndim, len(descr), a.nbytes)
            struct.pack_into(f"={ndim}Q", mv, _ARRAY_HEAD.size, *a.shape)
            mv[head:head + len(descr)] = descr
            if a.nbytes:
                np.copyto(np.ndarray(a.shape, a.dtype, buffer=mv, offset=meta), a,
                          casting="no")
            return cb.commit(total, KIND_NDARRAY, meta)
        except BaseException:
            cb.abort()
            raise
        finally:
            _release(mv)

    def _publish_pickle(self, cb: _core.Board, value: object) -> int:
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        try:
            raws = [b.raw() for b in buffers]
        except BufferError:  # a non-contiguous buffer: keep everything in-band
            raws = []
            data = pickle.dumps(value, protocol=5)
        nb = len(raws)
        pickle_off = _PICKLE_HEAD.size + _PICKLE_ENTRY.size * nb
        if nb == 0 and len(data) < _SMALL:
            payload = _PICKLE_HEAD.pack(_core.BOARD_PICKLE_MAGIC, 0, pickle_off, len(data)) + data
            if len(payload) > cb.capacity:
                raise self._too_large(len(payload))
            return cb.publish(payload, KIND_PICKLE, pickle_off)
        pos = pickle_off + len(data)
        where = []
        for r in raws:
            pos = _align(pos)
            where.append(pos)
            pos += r.nbytes
        if pos > cb.capacity:
            raise self._too_large(pos)
        mv = cb.begin()
        try:
            _PICKLE_HEAD.pack_into(mv, 0, _core.BOARD_PICKLE_MAGIC, nb, pickle_off, len(data))
            for i, (off, r) in enumerate(zip(where, raws)):
                _PICKLE_ENTRY.pack_into(mv, _PICKLE_HEAD.size + _PICKLE_ENTRY.size * i, off,
                                        r.nbytes)
            mv[pickle_off:pickle_off + len(data)] = data
            for off, r in zip(where, raws):
                mv[off:off + r.nbytes] = r
            return cb.commit(pos, KIND_PICKLE, pickle_off)
        except BaseException:
            cb.abort()
            raise
        finally:
            _release(mv)
            for r in raws:
                _release(r)

    @contextmanager
    def loan(self, shape: int | tuple[int, ...] | None = None, dtype: DTypeLike = "uint8", *,
             nbytes: int | None = None) -> Iterator[Any]:
        """Build the next value in place, without a copy (writer only)::

            with board.loan((1080, 1920, 3), "uint8") as frame:
                camera.capture_into(frame)          # fills shared memory directly
            # published here; an exception inside the block publishes nothing

        With ``shape`` the block gets a writable ndarray and readers get an array; with
        ``nbytes`` instead it gets a writable memoryview of that many bytes and readers
        get bytes.  Do not keep the loaned object after the block: it is a view of a
        buffer that the writer reuses.
        """
        cb = self._writer()
        if (shape is None) == (nbytes is None):
            raise TypeError("loan() takes either shape (an array) or nbytes (bytes)")
        if nbytes is not None:
            if not isinstance(nbytes, int) or nbytes < 0:
                raise ValueError(f"nbytes must be an int >= 0, not {nbytes!r}")
            if nbytes > cb.capacity:
                raise self._too_large(nbytes)
            mv = cb.begin()
            try:
                view = mv[:nbytes]
                yield view
                _release(view)
                cb.commit(nbytes, KIND_BYTES, 0)
            except BaseException:
                cb.abort()
                raise
            finally:
                _release(mv)
            return
        np = numpy_or_hint("Board.loan(shape=...)")
        try:
            dt = np.dtype(dtype)
        except UnicodeError:  # numpy lets this one out of a str with a lone surrogate
            raise TypeError(f"dtype {dtype!r} is not a NumPy dtype") from None
        if dt.hasobject:
            raise TypeError("arrays of Python objects cannot live in shared memory")
        assert shape is not None  # (checked above: shape or nbytes)
        shape = tuple(int(n) for n in ((shape,) if isinstance(shape, int) else shape))
        if any(n < 0 for n in shape):
            raise ValueError(f"shape {shape} has a negative dimension")
        if len(shape) > _core.NDARRAY_MAX_DIMS:
            raise ValueError(f"at most {_core.NDARRAY_MAX_DIMS} dimensions are supported, not "
                             f"{len(shape)}")
        descr = dtype_descr(dt)
        head = _ARRAY_HEAD.size + 8 * len(shape)
        meta = _align(head + len(descr))
        data_bytes = math.prod(shape) * dt.itemsize
        total = meta + data_bytes
        if total > cb.capacity:
            raise self._too_large(total)
        mv = cb.begin()
        try:
            _ARRAY_HEAD.pack_into(mv, 0, _core.BOARD_NDARRAY_MAGIC, len(shape), len(descr),
                                  data_bytes)
            struct.pack_into(f"={len(shape)}Q", mv, _ARRAY_HEAD.size, *shape)
            mv[head:head + len(descr)] = descr
            arr = np.ndarray(shape, dt, buffer=mv, offset=meta)
            yield arr
            del arr
            cb.commit(total, KIND_NDARRAY, meta)
        except BaseException:
            cb.abort()
            raise
        finally:
            _release(mv)

    # -- readers ----------------------------------------------------------------------------
    def read(self, *, copy: bool = True) -> tuple[Any, int]:
        """The newest value and its version: ``(value, version)``; ``(None, 0)`` before
        anything is published.  While the version has not changed this returns the very
        same tuple again, for the price of one memory load (treat values as read-only).
        ``copy=False`` returns zero-copy views for bytes and arrays (see the module doc)."""
        return self._read_cached(copy)

    def read_if_newer(self, version: int, *, copy: bool = True) -> tuple[Any, int] | None:
        """``(value, version)`` if a version newer than ``version`` exists, else None."""
        if self._version() <= version:
            return None
        return self._read_cached(copy)

    def wait_newer(self, version: int = 0, timeout: Timeout = None, *,
                   copy: bool = True) -> tuple[Any, int]:
        """Block until a version newer than ``version`` exists and return ``(value,
        version)`` of the newest.  ``wait_newer(0)`` waits for the first value.  Spins
        briefly (adaptively, ``spin_us``), then sleeps; the GIL is released and Ctrl-C
        interrupts it.  ShmkitTimeoutError (a TimeoutError) when ``timeout`` seconds pass."""
        r = self.read_if_newer(version, copy=copy)
        if r is not None:
            return r
        if not self._live().wait(version, timeout, self._spin_ns):
            raise ShmkitTimeoutError(f"board {self.name!r}: no version newer than {version} "
                                     f"within {timeout} s")
        return self._read_newest(copy)

    def wait(self, version: int = 0, timeout: Timeout = None) -> int:
        """Block until a version newer than ``version`` exists, without reading it;
        returns the newest version (pair it with ``read_into`` to reuse one buffer).
        ShmkitTimeoutError when ``timeout`` seconds pass."""
        cb = self._live()
        if not cb.wait(version, timeout, self._spin_ns):
            raise ShmkitTimeoutError(f"board {self.name!r}: no version newer than {version} "
                                     f"within {timeout} s")
        return cb.version()

    def follow(self, timeout: Timeout = None, *, copy: bool = True,
               version: int = 0) -> Iterator[tuple[Any, int]]:
        """Iterate over ``(value, version)`` as values are published, skipping those that
        were replaced before this reader got to them.  Starts with the current value (if
        any, and newer than ``version``); ``timeout`` bounds each wait."""
        while True:
            value, version = self.wait_newer(version, timeout, copy=copy)
            yield value, version

    @property
    def aio(self) -> AioBoard:
        """Awaitable twins: ``await board.aio.wait_newer(version=0, timeout=None, *,
        copy=True)``, ``await board.aio.wait(version=0, timeout=None)``."""
        from ._aio import AioBoard
        return AioBoard(self)

    def read_into(self, out: Buffer, *, after: int = 0) -> int | None:
        """Copy the newest value's data into ``out`` (no allocation): an ndarray of the
        value's shape and dtype for array values, a writable buffer of exactly its length
        for bytes values.  Returns its version, or None if nothing newer than ``after``
        exists.  ValueError if ``out`` does not match (then its contents are unspecified)."""
        cb = self._live()
        r = cb.read_into(after, out, 4096)
        if r is None:
            return None
        head, version, kind, meta, _ = r
        if kind == KIND_NDARRAY:
            np = numpy_or_hint()
            shape, dtype = self._parse_array_head(head, meta, None)
            arr: Any = out
            if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
                raise ValueError(f"board {self.name!r}: the value is an array of shape {shape} "
                                 f"and dtype {dtype}; out is not")
        elif kind not in (KIND_BYTES, KIND_STR) and kind < KIND_USER:
            raise ValueError(f"board {self.name!r}: read_into() takes bytes and array values; "
                             "this one is a pickled object (use read())")
        if self._cb.pinned:
            self._release_views()
        return version

    def intact(self, version: int) -> bool:
        """True while the value of ``version`` is still complete in shared memory: always
        for the zero-copy value this handle holds; for an older one, until the writer
        reuses its buffer.  Use it to check that a view used past its validity was not
        overwritten meanwhile."""
        return self._live().intact(version)

    def release(self) -> None:
        """Give back the zero-copy value this handle holds (the writer may reuse its
        buffer).  The next read() makes a new one."""
        if not self._closed:
            self._release_views()

    def _release_views(self) -> None:
        self._cb.unpin()
        self._cb.set_cache(None, True)  # the next read reads again

    def _read_newest(self, copy: bool) -> tuple[Any, int]:
        cb = self._live()
        if copy:
            r = cb.read(0)
            if r is None:
                return (None, 0)
            payload, version, kind, meta, _ = r
            value = self._decode(payload, kind, meta)
            if cb.pinned:
                cb.unpin()  # a newer value was handed out: the old view's time is over
        else:
            r = cb.pin(0)
            if r is None:
                return (None, 0)
            view, version, kind, meta, _ = r
            value = self._decode(view, kind, meta)
        result = (value, version)
        cb.set_cache(result, copy)
        return result

    # -- decoding (payloads are validated: they come from shared memory) ----------------------
    def _decode(self, payload: Any, kind: int, meta: int) -> Any:
        if kind == KIND_BYTES or kind >= KIND_USER:
            return payload
        if kind == KIND_STR:
            return str(payload, "utf-8", "surrogatepass")
        if kind == KIND_NDARRAY:
            np = numpy_or_hint("reading an array value")
            shape, dtype = self._parse_array_head(payload, meta, len(payload))
            return np.ndarray(shape, dtype, buffer=payload, offset=meta)
        if kind == KIND_PICKLE:
            return self._decode_pickle(memoryview(payload), meta)
        raise _corrupt(f"board {self.name!r}: unknown value kind {kind}")

    def _parse_array_head(self, head: Buffer, meta: int,
                          total: int | None) -> tuple[tuple[int, ...], numpy.dtype[Any]]:
        mv = memoryview(head)
        if len(mv) < _ARRAY_HEAD.size:
            raise _corrupt(f"board {self.name!r}: array value without a head")
        magic, ndim, dlen, nbytes = _ARRAY_HEAD.unpack_from(mv, 0)
        end = _ARRAY_HEAD.size + 8 * ndim + dlen
        if (magic != _core.BOARD_NDARRAY_MAGIC or ndim > _core.NDARRAY_MAX_DIMS or end > meta
                or end > len(mv) or (total is not None and meta + nbytes != total)):
            raise _corrupt(f"board {self.name!r}: array value head is inconsistent")
        shape = struct.unpack_from(f"={ndim}Q", mv, _ARRAY_HEAD.size)
        dtype = dtype_from_descr(bytes(mv[_ARRAY_HEAD.size + 8 * ndim:end]))
        if math.prod(shape) * dtype.itemsize != nbytes:
            raise _corrupt(f"board {self.name!r}: array value of shape {shape} and dtype "
                           f"{dtype} claims {nbytes} bytes")
        return shape, dtype

    def _decode_pickle(self, mv: memoryview, meta: int) -> Any:
        n = len(mv)
        if n < _PICKLE_HEAD.size:
            raise _corrupt(f"board {self.name!r}: pickled value without a head")
        magic, nb, poff, plen = _PICKLE_HEAD.unpack_from(mv, 0)
        table_end = _PICKLE_HEAD.size + _PICKLE_ENTRY.size * nb
        if magic != _core.BOARD_PICKLE_MAGIC or poff != meta or poff < table_end or poff + plen > n:
            raise _corrupt(f"board {self.name!r}: pickled value head is inconsistent")
        buffers = []
        for i in range(nb):
            off, ln = _PICKLE_ENTRY.unpack_from(mv, _PICKLE_HEAD.size + _PICKLE_ENTRY.size * i)
            if off < poff + plen or off + ln > n:
                raise _corrupt(f"board {self.name!r}: out-of-band buffer {i} lies outside the "
                               "value")
            buffers.append(mv[off:off + ln])
        return pickle.loads(mv[poff:poff + plen], buffers=buffers)

    # -- statistics, lifecycle ---------------------------------------------------------------
    def statistics(self) -> BoardStats:
        s = self._live().stats()
        return BoardStats(
            name=self.name, version=s["version"], max_bytes=s["capacity"], buffers=s["buffers"],
            zero_copy_readers=s["readers"], zero_copy_readers_in_use=s["readers_in_use"],
            waiters=s["waiters"], writer_pid=s["writer_pid"], writer_alive=s["writer_alive"],
            last_publish_ns=s["last_publish_ns"], pinned_skips=s["pinned_skips"],
            takeovers=s["takeovers"], reclaimed=s["reclaimed"], is_writer=s["is_writer"],
            copies=s["copies"], retries=s["retries"], fallbacks=s["fallbacks"], pins=s["pins"],
            waits=s["waits"], sleeps=s["sleeps"], spin_hits=s["spin_hits"],
            spin_budget_ns=s["spin_budget_ns"])

    def close(self) -> None:
        """Detach this handle: gives up the writer role and any pin.  Values handed out
        stay readable (the mapping lives while they do) but are no longer protected."""
        if self._closed:
            return
        self._closed = True
        self._cb.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # by name: a spawned child attaches to the same board (as a reader)
        return (_attach, (type(self), self.zone, self.name))

    def __repr__(self) -> str:
        if self._closed:
            return f"<shmkit.Board {self.name!r} closed>"
        return (f"<shmkit.Board {self.name!r} version={self._version()} "
                f"max_bytes={self._cb.capacity} buffers={self._cb.buffers}"
                f"{' writer' if self._cb.is_writer else ''}>")


def _attach(cls: type[Board], zone: Zone, name: str) -> Board:
    return cls(name, None, zone=zone)

