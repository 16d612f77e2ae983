"""RedisBoard and RedisConfig: the latest value, with a version, on Redis.

The board is one hash ``<base>:board`` {version, kind, value, writer, ...}.  A publish is
one script that bumps the version, stores the value and wakes every waiting reader; a
read is one script that returns version and value together.  Both are atomic on the
server, so a reader never sees a torn value or a value with another version's number,
whatever its size (tens of MB are fine; Redis takes up to 512 MB per value).

Differences from the local Board: values always reach a reader as a private copy
(``copy=False`` is accepted and gives a copy; ``intact()`` is therefore always True,
``release()`` has nothing to give back); ``buffers`` and ``spin_us`` are accepted and
ignored; the writer role is a lease like a lock's, renewed while the writer lives.
"""

from __future__ import annotations

import errno
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._dtypes import is_ndarray, numpy_or_hint
from .._errors import (NotOwnerError, ObjectMismatchError, ObjectNotFoundError, ShmkitOSError,
                       ShmkitTimeoutError, TooLargeError)
from ..config import ConfigBase
from . import _protocol as P
from ._base import RedisObject, wait_timeout
from ._zone import RedisZone, Wait, process_identity

if TYPE_CHECKING:
    from numpy.typing import DTypeLike
    from typing_extensions import Self

    from .._types import Buffer, Timeout
    from ._aio import AioBoard, AioConfig

__all__ = ["RedisBoard", "RedisBoardStats", "RedisConfig"]

KIND_BYTES = 1
KIND_STR = 2
KIND_NDARRAY = 3
KIND_PICKLE = 4
KIND_USER = 1000


@dataclass(frozen=True)
class RedisBoardStats:
    name: str
    version: int            #: latest version (0: nothing published yet)
    max_bytes: int
    value_bytes: int        #: size of the latest value as stored
    waiters: int            #: readers blocked in wait_newer (approximate)
    writer: str             #: "<host>:<pid>:<random>" of the writer, "" if none
    writer_alive: bool      #: its lease has not run out
    last_publish_ns: int    #: the server's clock at the latest publication (0: never)
    takeovers: int          #: writers that replaced one whose lease had run out
    is_writer: bool         #: this handle's process is the writer


class RedisBoard(RedisObject):
    """A latest-value board on Redis: one writer, any number of readers anywhere.

    ``zone.board(name, max_bytes=None, *, writer=False, create=True, lease=None)``:
    ``max_bytes`` bounds a value (None attaches to an existing board).  ``publish(value)``
    -> version; ``read()`` -> ``(value, version)`` (``(None, 0)`` before the first);
    ``read_if_newer(version)``; ``wait_newer(version, timeout)`` blocks server-side until
    a newer version exists; ``follow()``; ``wait()``; ``read_into()``; ``loan()``.
    Values as shmkit.Board's: bytes-like -> bytes, str -> str, NumPy arrays -> read-only
    arrays, anything else pickled.
    """

    _kind = "board"

    def __init__(self, name: str, max_bytes: int | None = None, *, zone: RedisZone,
                 buffers: int | None = None, writer: bool = False, create: bool = True,
                 spin_us: float = 20.0, lease: float | None = None,
                 _kind: str = "board") -> None:
        if max_bytes is not None and (not isinstance(max_bytes, int)
                                      or isinstance(max_bytes, bool) or max_bytes <= 0):
            raise ValueError(f"max_bytes must be an int > 0 (or None to attach), not {max_bytes!r}")
        self._kind = _kind
        self._setup(zone, name, create=create and max_bytes is not None, lease=lease)
        self._keys = (f"{self._base}:board", f"{self._base}:waiters")
        have: int
        if max_bytes is None:
            raw = zone.execute("HGET", self._keys[0], "max_bytes")
            if raw is None:
                raise ObjectNotFoundError(f"board {name!r} has not been initialised yet")
            have = int(raw)
        else:
            have = int(zone.run(P.BOARD_INIT, self._keys, [self._base, max_bytes]))
            if have != max_bytes:
                raise ObjectMismatchError(f"board {name!r} exists with max_bytes={have}, not "
                                          f"{max_bytes}")
        self._max_bytes = have
        self._cache: tuple[Any, int] = (None, 0)
        self._writer_as: str | None = None
        if writer:
            self.take_writer()

    @classmethod
    def _reopen(cls, zone: RedisZone, name: str, kw: dict[str, Any]) -> Self:
        return cls(name, None, zone=zone, **kw)

    def _reduce_kwargs(self) -> dict[str, Any]:
        return {"_kind": self._kind} if self._kind != "board" else {}

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def version(self) -> int:
        """The latest published version (0: nothing yet).  One round trip."""
        return int(self._live().execute("HGET", self._keys[0], "version") or 0)

    # -- the writer role ---------------------------------------------------------------------
    @property
    def is_writer(self) -> bool:
        return not self._closed and self._writer_as == process_identity()

    def take_writer(self) -> None:
        """Become the writer.  ShmkitOSError (EBUSY) naming the writer when another
        process holds the role and its lease has not run out."""
        zone = self._live()
        me = process_identity()
        r = zone.run(P.BOARD_CLAIM, self._keys, [self._base, me, self._lease_ms])
        if r != 1:
            raise ShmkitOSError(errno.EBUSY, f"board {self._name!r} has a live writer "
                                f"({r[1].decode('utf-8', 'replace')})")
        self._writer_as = me
        zone._renew_later(self)

    def release_writer(self) -> None:
        if self._writer_as is not None and not self._closed:
            self._zone.run(P.BOARD_RELEASE, self._keys, [self._base, self._writer_as])
        self._writer_as = None

    def _renew(self) -> None:
        owner = self._writer_as
        if owner is None or self._closed or owner != process_identity():
            return
        if not self._zone.run(P.BOARD_RENEW, self._keys, [self._base, owner, self._lease_ms]):
            self._writer_as = None

    # -- publishing ----------------------------------------------------------------------------
    def _encode(self, value: object) -> tuple[int, bytes]:
        if isinstance(value, (bytes, bytearray)):
            return KIND_BYTES, bytes(value)
        if isinstance(value, memoryview):
            return KIND_BYTES, value.tobytes()
        if isinstance(value, str):
            return KIND_STR, value.encode("utf-8", "surrogatepass")
        if is_ndarray(value) and not value.dtype.hasobject:
            return KIND_NDARRAY, pickle.dumps(value, protocol=5)
        return KIND_PICKLE, pickle.dumps(value, protocol=5)

    def publish(self, value: object) -> int:
        """Publish ``value`` as the newest one; returns its version.  The first publish of
        a process claims the writer role if nobody holds it (NotOwnerError if another live
        process does).  TooLargeError if the encoded value exceeds max_bytes."""
        kind, data = self._encode(value)
        return self._publish(kind, data)

    def publish_bytes(self, data: Buffer, kind: int = KIND_BYTES, meta: int = 0) -> int:
        """Publish raw bytes with an application-defined ``kind`` (>= 1000: readers get the
        bytes back).  ``meta`` is accepted for shmkit.Board's signature."""
        if not isinstance(kind, int) or kind <= 0:
            raise ValueError(f"kind must be an int > 0, not {kind!r}")
        return self._publish(kind, bytes(memoryview(data)))

    def _publish(self, kind: int, data: bytes) -> int:
        zone = self._live()
        if len(data) > self._max_bytes:
            raise TooLargeError(f"board {self._name!r}: the encoded value takes {len(data)} "
                                f"bytes, more than max_bytes={self._max_bytes}")
        me = process_identity()
        r = zone.run(P.BOARD_PUBLISH, self._keys, [self._base, me, self._lease_ms, kind, data])
        if isinstance(r, list):
            raise NotOwnerError(f"board {self._name!r}: another process is the writer "
                                f"({r[1].decode('utf-8', 'replace')}); only the writer may "
                                "publish")
        if self._writer_as != me:
            self._writer_as = me
            zone._renew_later(self)
        return int(r)

    @contextmanager
    def loan(self, shape: int | tuple[int, ...] | None = None, dtype: DTypeLike = "uint8", *,
             nbytes: int | None = None) -> Iterator[Any]:
        """Build the next value in a buffer, published when the block ends (an exception
        publishes nothing).  On Redis the buffer is local memory, sent at the end."""
        if (shape is None) == (nbytes is None):
            raise TypeError("loan() takes either shape (an array) or nbytes (bytes)")
        if nbytes is not None:
            if not isinstance(nbytes, int) or nbytes < 0:
                raise ValueError(f"nbytes must be an int >= 0, not {nbytes!r}")
            if nbytes > self._max_bytes:
                raise TooLargeError(f"board {self._name!r}: {nbytes} bytes do not fit "
                                    f"max_bytes={self._max_bytes}")
            buf = bytearray(nbytes)
            yield memoryview(buf)
            self._publish(KIND_BYTES, bytes(buf))
            return
        np = numpy_or_hint("Board.loan(shape=...)")
        arr = np.zeros(shape, dtype)
        yield arr
        self.publish(arr)

    # -- reading -------------------------------------------------------------------------------
    def _decode(self, kind: int, payload: bytes) -> Any:
        if kind == KIND_BYTES or kind >= KIND_USER:
            return payload
        if kind == KIND_STR:
            return payload.decode("utf-8", "surrogatepass")
        value = pickle.loads(payload)
        if kind == KIND_NDARRAY and is_ndarray(value):
            value.flags.writeable = False
        return value

    def _look(self, known: int, prev: str = "", wid: str = "",
              ms: int = 0) -> tuple[Any, int] | None:
        # reply: [version, kind, value]; version 0: nothing newer than ``known``
        r = self._live().run(P.BOARD_READ, self._keys, [self._base, known, prev, wid, ms])
        return self._newest(r) if P.newer(r) else None

    def _newest(self, r: P.Reply) -> tuple[Any, int]:
        """A reply of BOARD_READ that found a newer version: ``(value, version)``, cached."""
        result = (self._decode(int(r[1]), r[2]), int(r[0]))
        self._cache = result
        return result

    def read(self, *, copy: bool = True) -> tuple[Any, int]:
        """``(value, version)`` of the newest value; ``(None, 0)`` before the first.  While
        the version is unchanged it returns the same tuple again (one round trip that
        carries no value)."""
        r = self._look(self._cache[1])
        return r if r is not None else self._cache

    def read_if_newer(self, version: int, *, copy: bool = True) -> tuple[Any, int] | None:
        """``(value, version)`` if a version newer than ``version`` exists, else None."""
        if version < self._cache[1]:
            r = self._look(self._cache[1])
            return r if r is not None else self._cache
        return self._look(version)

    def wait_newer(self, version: int = 0, timeout: Timeout = None, *,
                   copy: bool = True) -> tuple[Any, int]:
        """Block until a version newer than ``version`` exists and return ``(value,
        version)`` of the newest; ShmkitTimeoutError after ``timeout`` seconds.  Waits
        server-side, woken by the publish."""
        zone = self._live()

        def attempt(wid: str, prev: str, ms: int) -> P.Reply:
            return self._live().run(P.BOARD_READ, self._keys,
                                    [self._base, version, prev, wid, ms])

        found, r = Wait(zone, self._base, wait_timeout(timeout)).until(attempt, P.newer)
        if not found:
            raise self._wait_timeout(version, timeout)
        return self._newest(r)

    def _wait_timeout(self, version: int, timeout: Timeout) -> ShmkitTimeoutError:
        return ShmkitTimeoutError(f"board {self._name!r}: no version newer than {version} "
                                  f"within {timeout} s")

    @property
    def aio(self) -> AioBoard:
        """Awaitable twins: ``await board.aio.wait_newer(version, timeout)``,
        ``await board.aio.wait(version, timeout)``."""
        from ._aio import AioBoard
        return AioBoard(self)

    def wait(self, version: int = 0, timeout: Timeout = None) -> int:
        """Block until a version newer than ``version`` exists; returns the newest version."""
        return self.wait_newer(version, timeout)[1]

    def follow(self, timeout: Timeout = None, *, copy: bool = True,
               version: int = 0) -> Iterator[tuple[Any, int]]:
        """Iterate over ``(value, version)`` as values are published."""
        while True:
            value, version = self.wait_newer(version, timeout, copy=copy)
            yield value, version

    def read_into(self, out: Buffer, *, after: int = 0) -> int | None:
        """Copy the newest value into ``out`` (an array of its shape and dtype, or a
        writable buffer of its length); returns its version, None if nothing newer than
        ``after``."""
        r = self.read_if_newer(after)
        if r is None:
            return None
        value, version = r
        if is_ndarray(value):
            np = sys.modules["numpy"]
            if not is_ndarray(out) or out.shape != value.shape or out.dtype != value.dtype:
                raise ValueError(f"board {self._name!r}: the value is an array of shape "
                                 f"{value.shape} and dtype {value.dtype}; out is not")
            np.copyto(out, value)
        elif isinstance(value, (bytes, str)):
            data = value.encode() if isinstance(value, str) else value
            mv = memoryview(out).cast("B")
            if len(mv) != len(data):
                raise ValueError(f"board {self._name!r}: the value has {len(data)} bytes, out "
                                 f"{len(mv)}")
            mv[:] = data
        else:
            raise ValueError(f"board {self._name!r}: read_into() takes bytes and array values; "
                             "this one is a pickled object (use read())")
        return version

    def intact(self, version: int) -> bool:
        """Values from Redis are private copies: always True."""
        return True

    def release(self) -> None:
        """Nothing to give back on Redis (values are copies)."""

    # -- statistics, lifecycle -------------------------------------------------------------------
    def statistics(self) -> RedisBoardStats:
        s = self._live().run(P.BOARD_STATE, self._keys, [self._base])
        writer = s[2].decode("utf-8", "replace") if s[2] else ""
        return RedisBoardStats(self._name, int(s[0]), int(s[1]), int(s[7]), int(s[6]), writer,
                               bool(s[3]), int(s[4]) * 1_000_000, int(s[5]),
                               bool(writer) and writer == process_identity())

    def close(self) -> None:
        """Detach this handle; gives the writer role up."""
        if self._closed:
            return
        try:
            self.release_writer()
        except Exception:
            pass
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repr_state(self) -> str:
        return f"max_bytes={self._max_bytes}"


class RedisConfig(ConfigBase[RedisBoard]):
    """shmkit.SharedConfig's surface on a RedisBoard (object type "config"): one process
    loads the configuration, every process on every machine reads the same frozen
    snapshot.  ``zone.config(name, max_bytes=1 MiB, *, create=True, lease=None)``.

    Like every Redis object it is not a subclass of its local twin (its zone is a
    RedisZone, its statistics a RedisBoardStats); both share ``shmkit.config.ConfigBase``.
    """

    zone: RedisZone

    def __init__(self, name: str, max_bytes: int | None = 1 << 20, *, zone: RedisZone,
                 buffers: int | None = None, spin_us: float = 0.0, create: bool = True,
                 lease: float | None = None) -> None:
        self._board = RedisBoard(name, max_bytes, zone=zone, create=create, lease=lease,
                                 _kind="config")
        self.name = name
        self.zone = zone

    def statistics(self) -> RedisBoardStats:
        return self._board.statistics()

    @property
    def aio(self) -> AioConfig:
        """Awaitable twin: ``await cfg.aio.wait_for_change(version, timeout)``."""
        from ._aio import AioConfig
        return AioConfig(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_config, (self.zone, self.name))


def _reopen_config(zone: RedisZone, name: str) -> RedisConfig:
    return RedisConfig(name, None, zone=zone)

