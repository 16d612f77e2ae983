"""Segments: one mapping of shared memory, from any backend Linux offers.

==========  ====================================  ==========================
backend     identified by                         resizable
==========  ====================================  ==========================
posix       ``name`` (shm_open, /dev/shm/NAME)    yes
sysv        ``key`` (int, see ftok) or ``shmid``  no
file        ``path`` (never follows symlinks)     yes
memfd       ``fd`` passed around (send_fd)        yes, unless sealed
anonymous   nothing: shared with fork children    no
==========  ====================================  ==========================

Open modes (``mode=``), with PHP shmop's letters accepted too:

====  =====  ================================================================
mode  shmop  meaning
====  =====  ================================================================
"c"   "c"    create if missing, else open read-write (the default)
"x"   "n"    create; fail with SegmentExistsError if it exists
"w"   "w"    open an existing one read-write; SegmentNotFoundError if missing
"r"   "a"    open an existing one read-only
====  =====  ================================================================
"""

from __future__ import annotations

import os
import threading

from . import _core
from ._errors import ClosedError, InvalidNameError

__all__ = ["Segment", "ftok", "BACKENDS", "MODES"]

BACKENDS = ("posix", "sysv", "file", "memfd", "anonymous")

#: mode letter -> (core flags, readonly)
MODES = {
    "c": (_core.O_CREATE, False),
    "x": (_core.O_CREATE | _core.O_EXCL, False),
    "w": (0, False),
    "r": (_core.O_RDONLY, True),
    # PHP shmop's letters
    "n": (_core.O_CREATE | _core.O_EXCL, False),
    "a": (_core.O_RDONLY, True),
}

_KIND_NAMES = {
    _core.KIND_POSIX: "posix",
    _core.KIND_SYSV: "sysv",
    _core.KIND_FILE: "file",
    _core.KIND_MEMFD: "memfd",
    _core.KIND_ANON: "anonymous",
}


def ftok(path: str | os.PathLike, proj_id: int) -> int:
    """SysV IPC key from an existing path and a project id, exactly as C's ftok(3)."""
    return _core.ftok(os.fspath(path), proj_id)


def _check_posix_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"segment name must be a str, not {type(name).__name__}")
    if name.startswith("/"):
        name = name[1:]
    if not name:
        raise InvalidNameError("segment name is empty")
    if "/" in name:
        raise InvalidNameError(f"segment name {name!r} contains '/'")
    if "\0" in name:
        raise InvalidNameError(f"segment name {name!r} contains a NUL byte")
    if len(name.encode()) > 250:
        raise InvalidNameError(f"segment name is {len(name.encode())} bytes long; at most 250 are allowed")
    if name in (".", ".."):
        raise InvalidNameError(f"segment name {name!r} is reserved")
    return name


class Segment:
    """A mapping of shared memory.

    ``Segment(name, mode="c", size=0, *, backend="posix", ...)`` opens or creates one
    (see the module docstring for modes and backends).  ``Segment.create(...)`` and
    ``Segment.open(...)`` are the explicit spellings.

    The mapping is ``.buf`` (a memoryview); ``.read()``/``.write()`` copy bytes in and
    out.  ``close()`` detaches this process only; ``unlink()`` removes the name (for
    SysV: IPC_RMID, destroyed when the last process detaches).
    """

    # class-level defaults make close() safe on a half-built object
    _seg = None
    _buf = None
    _closed = True

    def __init__(self, name=None, mode: str = "c", size: int = 0, *, backend: str = "posix",
                 key: int | None = None, shmid: int | None = None, path=None, fd: int | None = None,
                 perm: int = 0o600, seals=(), reserve: int = 0, allow_other_owner: bool = False,
                 _allow_empty: bool = False):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of 'c', 'x', 'w', 'r' "
                             f"(or PHP shmop's 'c', 'n', 'w', 'a')")
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        if size < 0:
            raise ValueError(f"size must be >= 0, not {size}")
        flags, readonly = MODES[mode]
        creating = bool(flags & _core.O_CREATE)
        if creating and size == 0 and not _allow_empty and backend not in ("memfd",) and fd is None:
            if mode in ("x", "n"):
                raise ValueError("size must be > 0 to create a segment")
        if allow_other_owner:
            flags |= _core.O_ANYOWNER
        if _allow_empty:
            flags |= _core.O_ALLOWEMPTY
        self.backend = backend
        self.mode = mode
        self.name = None
        self.key = None
        self.path = None
        if backend == "posix":
            if name is None:
                raise TypeError("a posix segment needs a name")
            self.name = _check_posix_name(name)
            if creating and size == 0 and not _allow_empty:
                flags &= ~_core.O_CREATE  # "c" without a size: open only
            self._seg = _core.Segment.posix(self.name, flags, perm, size, reserve)
        elif backend == "sysv":
            if shmid is None:
                if key is None:
                    key = name
                if key is None:
                    raise TypeError("a sysv segment needs a key (int) or a shmid")
                if not isinstance(key, int) or isinstance(key, bool):
                    raise TypeError(f"sysv key must be an int, not {type(key).__name__}")
            if creating and size == 0:
                flags &= ~_core.O_CREATE
            self.key = key
            self._seg = _core.Segment.sysv(key if key is not None else 0,
                                           -1 if shmid is None else shmid, flags, perm, size)
        elif backend == "file":
            path = path if path is not None else name
            if path is None:
                raise TypeError("a file segment needs a path")
            self.path = os.fspath(path)
            if creating and size == 0 and not _allow_empty:
                flags &= ~_core.O_CREATE
            self._seg = _core.Segment.file(self.path, flags, perm, size, reserve)
        elif backend == "memfd":
            if fd is not None:
                self._seg = _core.Segment.from_fd(fd, flags & _core.O_RDONLY, reserve)
            else:
                if size <= 0:
                    raise ValueError("size must be > 0 to create a memfd segment")
                self.name = name or "shmkit"
                self._seg = _core.Segment.memfd(self.name, size, _seal_bits(seals), reserve)
        else:  # anonymous
            if size <= 0:
                raise ValueError("size must be > 0 to create an anonymous segment")
            self._seg = _core.Segment.anon(size)
        self._closed = False
        self._lock = threading.Lock()

    # -- explicit constructors ---------------------------------------------------------
    @classmethod
    def create(cls, name=None, size: int = 0, *, exclusive: bool = True, **kw) -> "Segment":
        """Create a segment (exclusively unless exclusive=False)."""
        if size <= 0:
            raise ValueError(f"size must be > 0 to create a segment, not {size}")
        return cls(name, "x" if exclusive else "c", size, **kw)

    @classmethod
    def open(cls, name=None, *, readonly: bool = False, **kw) -> "Segment":
        """Open an existing segment (read-only if asked)."""
        return cls(name, "r" if readonly else "w", **kw)

    # -- data ----------------------------------------------------------------------------
    def _live(self):
        if self._closed or self._seg is None or self._seg.closed:
            raise ClosedError(f"{self!r} is closed")
        return self._seg

    @property
    def buf(self) -> memoryview:
        """The whole mapping as a memoryview (read-only if opened read-only)."""
        seg = self._live()
        if self._buf is None or self._buf.nbytes != seg.size:
            self._buf = memoryview(seg)
        return self._buf

    @property
    def size(self) -> int:
        """Bytes in this mapping (follows growth made by other processes)."""
        seg = self._live()
        if seg.kind in (_core.KIND_POSIX, _core.KIND_FILE, _core.KIND_MEMFD):
            return seg.refresh()
        return seg.size

    @property
    def readonly(self) -> bool:
        return self._live().readonly

    @property
    def created(self) -> bool:
        """True if this handle created the segment."""
        return bool(self._seg is not None and self._seg.created)

    @property
    def fd(self) -> int:
        """File descriptor of the mapping (-1 for sysv and anonymous)."""
        return self._live().fd

    @property
    def shmid(self) -> int:
        return self._live().shmid

    @property
    def closed(self) -> bool:
        return self._closed

    def read(self, offset: int = 0, count: int | None = None) -> bytes:
        """Copy ``count`` bytes from ``offset`` (to the end when count is None)."""
        size = self.size
        if count is None:
            count = size - offset
        if not (0 <= offset <= size) or count < 0 or offset + count > size:
            raise IndexError(f"read({offset}, {count}) is outside the segment ({size} bytes)")
        return bytes(self.buf[offset:offset + count])

    def write(self, data, offset: int = 0) -> int:
        """Copy ``data`` (any bytes-like object) to ``offset``; returns the bytes written."""
        if self.readonly:
            raise PermissionError("segment is open read-only")
        mv = memoryview(data).cast("B")
        size = self.size
        if offset < 0 or offset + mv.nbytes > size:
            raise IndexError(f"write of {mv.nbytes} bytes at {offset} is outside the segment "
                             f"({size} bytes)")
        self.buf[offset:offset + mv.nbytes] = mv
        return mv.nbytes

    def resize(self, size: int) -> None:
        """Change the size (posix, file, memfd).  Growing reserves the space first."""
        seg = self._live()
        self._buf = None
        seg.resize(size)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Detach this process.  Views still alive keep the mapping until released."""
        if self._closed:
            return
        self._closed = True
        self._buf = None
        if self._seg is not None:
            self._seg.close()

    def unlink(self) -> None:
        """Remove the segment's name (posix, file) or mark it for destruction (sysv)."""
        if self.backend == "posix":
            _core.unlink_posix(self.name)
        elif self.backend == "file":
            os.unlink(self.path)
        elif self.backend == "sysv":
            _core.rmid(self._seg.shmid)
        else:
            raise ValueError(f"{self.backend} segments have no name to unlink")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __reduce__(self):
        if self.backend == "posix":
            return (_reopen, ("posix", self.name, self.readonly))
        if self.backend == "sysv":
            return (_reopen, ("sysv", self._seg.shmid, self.readonly))
        if self.backend == "file":
            return (_reopen, ("file", self.path, self.readonly))
        if self.backend == "memfd":
            from multiprocessing import context, reduction
            if context.get_spawning_popen() is None:
                raise TypeError("a memfd segment can only be pickled while spawning a child "
                                "process; use send_fd() to hand it to an unrelated process")
            return (_reopen_fd, (reduction.DupFd(self.fd), self.readonly))
        raise TypeError("an anonymous segment cannot be pickled; it is shared with fork "
                        "children only")

    def __repr__(self):
        ident = {"posix": self.name, "sysv": self.key, "file": self.path}.get(self.backend)
        state = "closed" if self._closed else f"size={self._seg.size}"
        return f"<shmkit.Segment {self.backend} {ident!r} {state}>"


def _seal_bits(seals) -> int:
    import fcntl
    names = {"seal": fcntl.F_SEAL_SEAL, "shrink": fcntl.F_SEAL_SHRINK,
             "grow": fcntl.F_SEAL_GROW, "write": fcntl.F_SEAL_WRITE}
    bits = 0
    for s in seals:
        if isinstance(s, int):
            bits |= s
        elif s in names:
            bits |= names[s]
        else:
            raise ValueError(f"unknown seal {s!r}; expected one of {', '.join(names)}")
    return bits


def _reopen(backend, ident, readonly):
    mode = "r" if readonly else "w"
    if backend == "sysv":
        return Segment(None, mode, backend="sysv", shmid=ident)
    return Segment(ident, mode, backend=backend)


def _reopen_fd(dupfd, readonly):
    fd = dupfd.detach()
    try:
        return Segment(None, "r" if readonly else "w", backend="memfd", fd=fd)
    finally:
        os.close(fd)
