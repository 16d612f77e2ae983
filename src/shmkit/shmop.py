"""PHP's shmop functions, for people porting PHP code (SysV segments underneath).

=================================================  =========================================
PHP                                                shmkit.shmop
=================================================  =========================================
``$shm = shmop_open($key, "c", 0644, 100);``       ``shm = shmop_open(key, "c", 0o644, 100)``
``shmop_read($shm, $offset, $size)``               ``shmop_read(shm, offset, size)`` -> bytes
``shmop_write($shm, $data, $offset)``              ``shmop_write(shm, data, offset)`` -> int
``shmop_size($shm)``                               ``shmop_size(shm)``
``shmop_delete($shm)``                             ``shmop_delete(shm)`` -> True
``shmop_close($shm)``                              ``shmop_close(shm)`` (detaches)
=================================================  =========================================

Modes as in PHP: "a" read-only access, "c" create (or open an existing one read-write),
"w" read-write access to an existing one, "n" create a new one (fail if it exists).
``perms`` and ``size`` matter only when creating; pass 0 otherwise, as in PHP.

Behaviour kept from PHP: ``shmop_read`` with size 0 reads to the end of the segment;
``shmop_write`` writes what fits and returns the number of bytes written (it truncates
at the end of the segment rather than failing); reading or writing at an offset outside
the segment raises ValueError (PHP 8's ValueError).  Where PHP 8 emits a warning and
returns false (no such key, permission denied), Python raises the matching shmkit
exception (SegmentNotFoundError, SegmentPermissionError, SegmentExistsError, ...).

The segments are ordinary SysV segments: PHP, C programs and ``ipcs`` see the same
bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._checks import check_int
from ._errors import ClosedError
from .segment import Segment

if TYPE_CHECKING:
    from ._types import Buffer

__all__ = ["Shmop", "shmop_open", "shmop_read", "shmop_write", "shmop_size", "shmop_delete",
           "shmop_close"]


class Shmop:
    """The handle shmop_open() returns (PHP 8's Shmop object).  ``.segment`` is the
    underlying shmkit.Segment."""

    __slots__ = ("segment",)

    def __init__(self, segment: Segment):
        self.segment = segment

    @property
    def key(self) -> int:
        return self.segment.key or 0

    @property
    def shmid(self) -> int:
        return self.segment.shmid

    def __repr__(self) -> str:
        state = "closed" if self.segment.closed else f"size={self.segment.size}"
        return f"<shmkit.shmop.Shmop key=0x{(self.segment.key or 0) & 0xffffffff:08x} {state}>"


def _live(shmop: Shmop) -> Segment:
    if not isinstance(shmop, Shmop):
        raise TypeError(f"expected a Shmop (from shmop_open), not {type(shmop).__name__}")
    if shmop.segment.closed:
        raise ClosedError("the Shmop handle was closed")
    return shmop.segment


def shmop_open(key: int, mode: str, permissions: int, size: int) -> Shmop:
    """Create or open a SysV segment, as PHP's shmop_open()."""
    check_int("key", key, -(1 << 31))
    check_int("permissions", permissions)
    check_int("size", size)
    if not isinstance(mode, str) or len(mode) != 1 or mode not in "acwn":
        raise ValueError(f"shmop_open(): mode must be a valid access mode ('a', 'c', 'w' or "
                         f"'n'), not {mode!r}")
    if mode in "cn" and size < 1:
        raise ValueError("shmop_open(): size must be greater than 0 for the \"c\" and \"n\" "
                         "access modes")
    seg = Segment(None, mode, size if mode in "cn" else 0, backend="sysv", key=key,
                  perm=permissions if mode in "cn" else 0o600)
    return Shmop(seg)


def shmop_read(shmop: Shmop, offset: int, size: int) -> bytes:
    """``size`` bytes from ``offset`` (to the end when size is 0), as PHP's shmop_read()."""
    seg = _live(shmop)
    check_int("offset", offset, -(1 << 63))
    check_int("size", size, -(1 << 63))
    total = seg.size
    if offset < 0 or offset > total:
        raise ValueError("shmop_read(): offset must be between 0 and the segment size "
                         f"({total})")
    if size < 0 or offset + size > total:
        raise ValueError(f"shmop_read(): size is out of range ({size} bytes at offset {offset} "
                         f"in a segment of {total})")
    return seg.read(offset, size if size else total - offset)


def shmop_write(shmop: Shmop, data: str | Buffer, offset: int) -> int:
    """Write ``data`` at ``offset``; returns the bytes written (what fits), as PHP."""
    seg = _live(shmop)
    check_int("offset", offset, -(1 << 63))
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")  # PHP strings are bytes
    mv = memoryview(data).cast("B")
    if seg.readonly:
        raise PermissionError("shmop_write(): read-only segment cannot be written (opened "
                              "with mode \"a\")")
    total = seg.size
    if offset < 0 or offset > total:
        raise ValueError("shmop_write(): offset is out of range (must be between 0 and the "
                         f"segment size, {total})")
    n = min(mv.nbytes, total - offset)
    return seg.write(mv[:n], offset)


def shmop_size(shmop: Shmop) -> int:
    """The segment's size in bytes."""
    return _live(shmop).size


def shmop_delete(shmop: Shmop) -> bool:
    """Mark the segment for deletion (IPC_RMID): it is destroyed when the last process
    detaches.  Returns True."""
    _live(shmop).unlink()
    return True


def shmop_close(shmop: Shmop) -> None:
    """Detach (PHP 8 deprecates it and detaches when the object goes; here it detaches
    at once, and closing twice is harmless)."""
    if not isinstance(shmop, Shmop):
        raise TypeError(f"expected a Shmop (from shmop_open), not {type(shmop).__name__}")
    shmop.segment.close()
