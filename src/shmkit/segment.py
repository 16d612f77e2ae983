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

Lifecycles (``lifecycle=``, chosen by the creator, recorded with the segment):

========================  ==========================================================
``persist`` (default)     lives until unlinked, like the OS's own objects
``unlink_on_last_close``  the name goes when the last handle closes (Qt's semantics)
``unlink_on_creator_exit``  the name goes when the creating handle is closed or its
                          process exits
========================  ==========================================================

Both non-persist lifecycles hold when processes are SIGKILLed: every handle holds an
OFD read lock on its own open file description, the creator an OFD write lock, and the
kernel drops them when a process dies; a small reaper process started by the creator
blocks on those locks and removes the name when the lifecycle says so.  Unlinking
removes the name only: processes that have the segment mapped keep using it.
See docs/segments.md.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _core, _lifecycle
from ._checks import check_int, check_posix_name
from ._errors import (ClosedError, InvalidArgumentError, InvalidNameError, SegmentExistsError,
                      SegmentNotFoundError, ShmkitError)
from ._surface import ClosingHandle

if TYPE_CHECKING:
    from ._lifecycle import FdOrPath, Record
    from ._types import Buffer, StrPath

__all__ = ["Segment", "SegmentStat", "ftok", "send_fd", "recv_fd", "BACKENDS", "MODES",
           "LIFECYCLES"]

BACKENDS = ("posix", "sysv", "file", "memfd", "anonymous")
_F_WRLCK = 1  # fcntl.F_WRLCK on Linux
LIFECYCLES = _lifecycle.LIFECYCLES

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


def ftok(path: StrPath, proj_id: int) -> int:
    """SysV IPC key from an existing path and a project id, exactly as C's ftok(3) (which
    uses the low 8 bits of proj_id; they must not be zero)."""
    check_int("proj_id", proj_id, -(1 << 31))
    if proj_id >= (1 << 31):
        raise ValueError(f"proj_id {proj_id} does not fit in a C int")
    return _core.ftok(os.fspath(path), proj_id)


def _check_key(key: object) -> int:
    """A SysV key as the kernel stores it (a signed 32-bit key_t)."""
    if not isinstance(key, int) or isinstance(key, bool):
        raise TypeError(f"sysv key must be an int, not {type(key).__name__}")
    if not -(1 << 31) <= key < (1 << 32):
        raise ValueError(f"sysv key {key} does not fit in 32 bits")
    return key - (1 << 32) if key >= (1 << 31) else key


@dataclass(frozen=True)
class SegmentStat:
    """What ``Segment.stat()`` returns: the attributes of a segment.

    SysV fields come from IPC_STAT (what ``ipcs -m`` shows).  For posix, file and memfd
    segments the kernel keeps less: size, owner, mode and change time come from fstat,
    and shmkit adds what it records (``user.shmkit`` xattrs or its registry, see
    docs/segments.md).  Times are seconds since the epoch; None means unknown or never.
    """

    backend: str
    name: str | None          #: posix name, file path or memfd name (None for sysv)
    key: int | None           #: sysv key (0 = IPC_PRIVATE, also after removal)
    shmid: int | None         #: sysv id
    size: int                 #: bytes in the object
    uid: int                  #: owner
    gid: int
    mode: int                 #: permission bits, e.g. 0o600
    creator_pid: int | None   #: process that created it (SysV shm_cpid, else shmkit's record)
    last_pid: int | None      #: process that attached or detached last (SysV shm_lpid)
    attach_count: int         #: SysV shm_nattch; else processes that have it mapped
    handles: int              #: open shmkit handles (holding the attach lock)
    attach_time: float | None #: last attach
    detach_time: float | None #: last detach
    change_time: float | None #: SysV creation or IPC_SET; else st_ctime
    created_time: float | None  #: when shmkit created it (None if not shmkit's)
    lifecycle: str | None     #: recorded lifecycle; None if shmkit did not create it
    shmkit: bool              #: created by shmkit (it keeps a record of it)
    creator_alive: bool | None  #: the creating handle is still open (None: unknown)
    removed: bool             #: the name is gone (SysV: IPC_RMID/ipcrm; posix: unlinked)


# live handles, for the fork handler and the exit hook
_live: "weakref.WeakSet[Segment]" = weakref.WeakSet()


class Segment(ClosingHandle):
    """A mapping of shared memory.

    ``Segment(name, mode="c", size=0, *, backend=None, lifecycle=None, ...)`` opens or
    creates one (see the module docstring for modes, backends and lifecycles).
    ``Segment.create(...)`` and ``Segment.open(...)`` are the explicit spellings.

    Parameters
    ----------
    name : str, optional
        POSIX name (``/dev/shm/NAME``; a leading '/' is accepted), or the file path, or
        the sysv key, or a memfd's label.
    mode : {"c", "x", "w", "r"} or PHP's {"c", "n", "w", "a"}
    size : int
        Bytes, needed to create.  Opening checks the existing object is at least this big.
    backend : {"posix", "sysv", "file", "memfd", "anonymous"}, optional
        Inferred when omitted: ``key=``/``shmid=`` mean sysv, ``path=`` file, ``fd=``
        memfd, otherwise posix.
    key, shmid : int
        SysV key (``ftok()``), or the id of an existing segment.
    path : path-like
        File backend: the file (created 0600; never through a symlink).
    fd : int
        memfd backend: map this fd (duplicated; yours to close).
    perm : int
        Permission bits of a created segment (0o600 by default).
    seals : iterable of "seal", "shrink", "grow", "write"
        memfd seals applied after creation.
    reserve : int
        Address space to reserve so the mapping can grow in place (zones use it).
    allow_other_owner : bool
        Attach to a segment owned by another user (refused by default).
    lifecycle : {"persist", "unlink_on_last_close", "unlink_on_creator_exit"}, optional
        Chosen by the creator (default "persist").  When opening, None accepts whatever
        was recorded; a different explicit value raises ValueError.

    The mapping is ``.buf`` (a memoryview); ``.read()``/``.write()`` copy bytes in and
    out.  ``close()`` detaches this process only; ``unlink()`` removes the name (for
    SysV: IPC_RMID, destroyed when the last process detaches).
    """

    # class-level defaults make close() safe on a half-built object
    _seg: _core.Segment | None = None
    _buf: memoryview | None = None
    _closed = True
    _creator = False        # this handle created the object and holds the creator lock
    _record: Record | None = None  # the creator's record if shmkit made it
    _record_fd: int | None = None  # sysv: the registry record's fd (it carries the locks)
    _record_writable = False
    _reaper_pid = 0
    _fstat: os.stat_result | None = None  # identity (st_dev, st_ino) of the object, fd backends
    _ctime: int | None = None  # sysv: creation time (with shmid, the segment's identity)
    _observer = False
    _shrunk_from = 0        # the size this handle had mapped before another process shrank it
    _abspath: str
    name: str | None
    key: int | None
    path: str | None

    def __init__(self, name: str | int | None = None, mode: str = "c", size: int = 0, *,
                 backend: str | None = None, key: int | None = None, shmid: int | None = None,
                 path: StrPath | bytes | None = None, fd: int | None = None, perm: int = 0o600,
                 seals: str | int | Iterable[str | int] = (), reserve: int = 0,
                 allow_other_owner: bool = False, lifecycle: str | None = None,
                 _allow_empty: bool = False, _observer: bool = False, _zone: bool = False):
        if backend is None:
            backend = ("sysv" if key is not None or shmid is not None else
                       "file" if path is not None else "memfd" if fd is not None else "posix")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if not isinstance(mode, str) or mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of 'c', 'x', 'w', 'r' "
                             f"(or PHP shmop's 'c', 'n', 'w', 'a')")
        check_int("size", size)
        check_int("reserve", reserve)
        check_int("perm", perm)
        if perm > 0o777:
            raise ValueError(f"perm must be permission bits (at most 0o777), not {oct(perm)}")
        if lifecycle is not None and lifecycle not in LIFECYCLES:
            raise ValueError(f"unknown lifecycle {lifecycle!r}; expected one of "
                             f"{', '.join(LIFECYCLES)}")
        flags, readonly = MODES[mode]
        creating = bool(flags & _core.O_CREATE)
        if creating and size == 0 and not _allow_empty and mode in ("x", "n") \
                and backend not in ("memfd", "anonymous"):
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
        self._observer = _observer
        self._lock = threading.Lock()
        if backend == "posix":
            if name is None:
                raise TypeError("a posix segment needs a name")
            pname = self.name = check_posix_name(name)
            if creating and size == 0 and not _allow_empty:
                flags &= ~_core.O_CREATE  # "c" without a size: open only
            self._open_named(lambda f: _core.Segment.posix(pname, f, perm, size, reserve),
                             flags, perm, lifecycle, os.path.join(_lifecycle.SHM_DIR, pname))
        elif backend == "file":
            target = path if path is not None else name
            if target is None:
                raise TypeError("a file segment needs a path")
            fspath = os.fspath(target)  # type: ignore[arg-type]  # an int: TypeError here
            fpath = self.path = fspath if isinstance(fspath, str) else os.fsdecode(fspath)
            if not fpath:
                raise InvalidNameError("file segment path is empty")
            if "\0" in fpath:
                raise InvalidNameError("file segment path contains a NUL byte")
            if creating and size == 0 and not _allow_empty:
                flags &= ~_core.O_CREATE
            self._abspath = os.path.abspath(fpath)
            self._open_named(lambda f: _core.Segment.file(fpath, f, perm, size, reserve),
                             flags, perm, lifecycle, self._abspath)
        elif backend == "sysv":
            if shmid is None:
                if key is None:
                    key = name  # type: ignore[assignment]  # checked by _check_key below
                if key is None:
                    raise TypeError("a sysv segment needs a key (int) or a shmid")
                key = _check_key(key)
                if key == 0 and not creating:
                    raise ValueError("key 0 is IPC_PRIVATE: it names no segment to open; "
                                     "open a private segment by its shmid")
            else:
                check_int("shmid", shmid)
            if creating and size == 0:
                flags &= ~_core.O_CREATE
            self.key = key
            self._open_sysv(key, shmid, flags, perm, size, lifecycle, _zone)
        elif backend == "memfd":
            if lifecycle not in (None, "unlink_on_last_close"):
                raise ValueError("a memfd segment has no name: it is freed when the last "
                                 "process closes it (lifecycle 'unlink_on_last_close'); "
                                 f"{lifecycle!r} cannot apply")
            if fd is not None:
                check_int("fd", fd)
                self._seg = _core.Segment.from_fd(fd, flags & _core.O_RDONLY, reserve)
                self._own_ofd()
                self.name = _memfd_label(self._seg.fd)
                self._fstat = os.fstat(self._seg.fd)
                self._record = _lifecycle.read_xattr_record(self._seg.fd)
            else:
                if size <= 0:
                    raise ValueError("size must be > 0 to create a memfd segment")
                if name is not None and not isinstance(name, str):
                    raise TypeError(f"memfd name must be a str, not {type(name).__name__}")
                self.name = name or "shmkit"
                if "\0" in self.name:
                    raise InvalidNameError("memfd name contains a NUL byte")
                try:
                    self.name.encode()
                except UnicodeError:
                    raise InvalidNameError(f"memfd name {self.name!r} is not valid UTF-8 "
                                           "text (it holds a lone surrogate)") from None
                self._seg = _core.Segment.memfd(self.name, size, _seal_bits(seals), reserve)
                self._creator = True
                self._fstat = os.fstat(self._seg.fd)
                try:
                    _lifecycle.hold_creator(self._seg.fd)
                    rec = _lifecycle.make_record("unlink_on_last_close", "memfd", name=self.name)
                    _lifecycle.write_xattr_record(self._seg.fd, rec)
                    self._record = rec
                except BaseException:
                    self._seg.close()
                    raise
            try:
                _lifecycle.hold_attach(self._seg.fd, wait=False)
            except OSError:
                pass
            if not self._observer:
                _lifecycle.note_event(self._seg.fd, "attach")
        else:  # anonymous
            if lifecycle not in (None, "unlink_on_last_close"):
                raise ValueError("an anonymous segment has no name: it is freed when the "
                                 "last process unmaps it; lifecycle "
                                 f"{lifecycle!r} cannot apply")
            if size <= 0:
                raise ValueError("size must be > 0 to create an anonymous segment")
            self._seg = _core.Segment.anon(size)
            self._creator = True
            self._record = _lifecycle.make_record("unlink_on_last_close", "anonymous")
        self._closed = False
        _live.add(self)

    # -- opening, with the lifecycle protocol ------------------------------------------------
    def _open_named(self, core_open: Callable[[int], _core.Segment], flags: int, perm: int,
                    lifecycle: str | None, path: str) -> None:
        """posix and file: open or create, then take part in the lock protocol.

        A new object has no name until it is complete: the core makes it unnamed
        (O_TMPFILE), sized, reserved and locked; here its record is written; then it is
        published (linkat).  An opener can therefore never see it half-made (empty, or
        without its record).  If another process published the name first, this one is
        dropped and theirs opened ("c"), or SegmentExistsError ("x")."""
        creating = bool(flags & _core.O_CREATE)
        if creating:
            flags |= _core.O_PUBLISH_LATER
        for _ in range(100):
            seg = core_open(flags)
            try:
                st = os.fstat(seg.fd)
                if seg.created:
                    self._seg, self._fstat = seg, st
                    if self._become_creator(lifecycle or "persist", perm, path):
                        return
                    # the name was taken while ours was being made: drop ours
                    self._seg, self._fstat, self._record = None, None, None
                    self._creator = False
                    seg.close()
                    if flags & _core.O_EXCL:
                        raise SegmentExistsError(
                            errno.EEXIST, f"{self._what()} already exists (another process "
                            "created it first)")
                    continue
                # blocks only while a closer, a reaper or gc holds the write lock to
                # remove this very object (microseconds); then the name check fails
                _lifecycle.hold_attach(seg.fd, wait=True)
                if not _lifecycle.same_file(path, st):
                    seg.close()
                    if creating:
                        continue  # it was removed under us: create a fresh one
                    raise SegmentNotFoundError(
                        errno.ENOENT, f"{self._what()} was removed while it was being opened")
                self._seg, self._fstat = seg, st
                self._record = self._wait_record(_lifecycle.read_fd_record(seg.fd, self.backend, st),
                                                 lifecycle)
                self._check_lifecycle(lifecycle)
                if self._record is not None and not self._observer:
                    _lifecycle.note_event(seg.fd, "attach")
                return
            except BaseException:
                self._seg = None
                seg.close()
                raise
        raise ShmkitError(f"{self._what()}: lost every race to open it (it kept being "
                          "removed and re-created)")

    def _become_creator(self, lifecycle: str, perm: int, path: str) -> bool:
        """Locks first, record second, name third: whoever sees the name sees the record,
        and whoever sees the record sees the locks.  False if another process published
        the name first (nothing of ours is left then)."""
        seg, st = self._seg, self._fstat
        assert seg is not None and st is not None  # set by _open_named
        self._creator = True
        ident = self.name if self.backend == "posix" else path  # what removal is given
        rname = None
        try:
            if not _lifecycle.hold_creator(seg.fd) and lifecycle != "persist":
                raise ShmkitError(f"{self._what()}: its file system has no OFD locks "
                                  f"(fcntl F_OFD_SETLK): lifecycle {lifecycle!r} cannot be "
                                  "enforced; use 'persist'")
            _lifecycle.hold_attach(seg.fd, wait=False)
            names = {"name": self.name} if self.backend == "posix" else {"path": path}
            rec: Record | None = _lifecycle.make_record(lifecycle, self.backend, **names)
            assert rec is not None
            if not _lifecycle.write_xattr_record(seg.fd, rec):
                # no user xattrs here (tmpfs before Linux 6.6): a registry record instead
                rname = _lifecycle.file_record_name(self.backend, st.st_dev, st.st_ino)
                try:
                    os.close(_lifecycle.create_record(rname, rec, perm))
                except OSError as e:
                    rname = None
                    if lifecycle != "persist":
                        raise ShmkitError(f"{self._what()}: cannot record its lifecycle: the "
                                          f"file system refuses user xattrs and the registry "
                                          f"is not usable ({e})") from e
                    rec = None  # a persist segment without a record
            try:
                seg.publish()
            except FileExistsError:
                if rname is not None:
                    _lifecycle.remove_record(rname)
                return False
            self._record = rec
            if rec is not None and not self._observer:
                _lifecycle.note_event(seg.fd, "attach")
            if lifecycle != "persist":
                self._reaper_pid = _lifecycle.spawn_reaper(
                    seg.fd, {"when": lifecycle, "backend": self.backend, "ident": ident})
            return True
        except BaseException:
            _lifecycle.remove_if_same(self.backend, ident, self._fstat)
            raise

    def _open_sysv(self, key: int | None, shmid: int | None, flags: int, perm: int, size: int,
                   lifecycle: str | None, zone: bool = False) -> None:
        creating = bool(flags & _core.O_CREATE)
        readonly = bool(flags & _core.O_RDONLY)
        for _ in range(100):
            seg = _core.Segment.sysv(key if key is not None else 0,
                                     -1 if shmid is None else shmid, flags, perm, size)
            try:
                kst = seg.stat()
                self._seg, self._ctime = seg, kst["ctime"]
                rname = _lifecycle.sysv_record_name(seg.shmid, kst["ctime"])
                if seg.created:
                    self._creator = True
                    want = lifecycle or "persist"
                    # a zone says so in its record: `shmkit info` may then show its zone
                    # without attaching to find out (which would change its shm_lpid)
                    rec: Record | None = _lifecycle.make_record(
                        want, "sysv", key=key, shmid=seg.shmid, ctime=kst["ctime"],
                        zone=1 if zone else None)
                    try:
                        assert rec is not None
                        self._record_fd = _lifecycle.create_record(rname, rec, perm, lock=True)
                        self._record_writable = True
                        self._record = rec
                    except OSError as e:
                        if want != "persist":
                            raise ShmkitError(f"{self._what()}: cannot record its lifecycle in "
                                              f"the registry {_lifecycle.registry_path()} ({e})") from e
                    if want != "persist":
                        assert self._record_fd is not None  # or create_record raised
                        self._reaper_pid = _lifecycle.spawn_reaper(
                            self._record_fd, {"when": want, "backend": "sysv",
                                              "shmid": seg.shmid, "ctime": kst["ctime"]})
                    return
                fd, rec = _lifecycle.open_record(rname, kst["cuid"], writable=not readonly)
                if fd is None and time.time() - kst["ctime"] < 2 and _pid_alive(kst["cpid"]):
                    # created a moment ago by a live process: if that is shmkit, its record
                    # (written right after shmget) and with it the lock that counts us as
                    # attached are coming: give it a moment (an opener that went on
                    # without was not counted, and an unlink_on_last_close segment was
                    # removed under it)
                    deadline = time.monotonic() + 0.5
                    while fd is None and time.monotonic() < deadline:
                        time.sleep(0.001)
                        fd, rec = _lifecycle.open_record(rname, kst["cuid"],
                                                         writable=not readonly)
                        if fd is None and _sysv_gone(seg.shmid, kst["ctime"]):
                            break
                if fd is not None:
                    self._record_fd, self._record = fd, rec
                    self._record_writable = (os.O_ACCMODE & _fcntl_getfl(fd)) == os.O_RDWR
                    _lifecycle.hold_attach(fd, wait=True)
                if _sysv_gone(seg.shmid, kst["ctime"]):
                    # removed before we held the lock that counts us: not ours to use
                    self._drop_record_fd()
                    seg.close()
                    self._seg = None
                    if creating and key:
                        continue
                    raise SegmentNotFoundError(
                        errno.ENOENT, f"{self._what()} was removed while it was being opened")
                self._check_lifecycle(lifecycle)
                return
            except BaseException:
                if self._creator and seg.created:
                    try:
                        _core.rmid(seg.shmid)
                    except OSError:
                        pass
                    if self._record_fd is not None:
                        _lifecycle.remove_record(
                            _lifecycle.sysv_record_name(seg.shmid, self._ctime), self._record_fd)
                    self._creator = False
                self._drop_record_fd()
                self._seg = None
                seg.close()
                raise
        raise ShmkitError(f"{self._what()}: lost every race to open it")

    def _wait_record(self, rec: Record | None, lifecycle: str | None) -> Record | None:
        """An opener racing the creator may arrive between the creator's locks and its
        record (microseconds): if a lifecycle was asked for, give the record a moment."""
        if rec is not None or lifecycle in (None, "persist"):
            return rec
        seg, st = self._seg, self._fstat
        assert seg is not None and st is not None  # set by _open_named
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            if not _core.ofd_probe(seg.fd, _core.LOCKBYTE_CREATOR, _F_WRLCK):
                break  # no creator at work: there is no record coming
            time.sleep(0.001)
            rec = _lifecycle.read_fd_record(seg.fd, self.backend, st)
            if rec is not None:
                break
        return rec

    def _check_lifecycle(self, lifecycle: str | None) -> None:
        if lifecycle is None:
            return
        have = self._record["lifecycle"] if self._record else None
        if have == lifecycle or (have is None and lifecycle == "persist"):
            return
        what = (f"lifecycle {have!r}" if have else
                "no shmkit lifecycle (it was not created by shmkit; it persists until unlinked)")
        raise ValueError(f"{self._what()} exists with {what}; it was opened asking for "
                         f"{lifecycle!r}.  The creator chooses the lifecycle: open it with "
                         f"lifecycle=None to accept it")

    def _own_ofd(self) -> None:
        """Give this handle an open file description of its own for the same object (an
        fd received over a socket or inherited over fork shares the sender's, and with it
        the sender's locks)."""
        fd = self._lock_fd()
        if fd is None or fd < 0:
            return
        acc = os.O_ACCMODE & _fcntl_getfl(fd)
        try:
            new = os.open(f"/proc/self/fd/{fd}", acc | os.O_CLOEXEC)
        except OSError:
            return  # keep sharing it: we then count as the same handle
        try:
            os.dup2(new, fd, inheritable=False)
        finally:
            os.close(new)
        if self.backend != "sysv" and self._seg is not None:
            # the mapping still references the old description (and its locks)
            try:
                self._seg.remap()
            except OSError:
                pass

    def _lock_fd(self) -> int | None:
        if self.backend == "sysv":
            return self._record_fd
        if self._seg is None or self.backend == "anonymous":
            return None
        return self._seg.fd

    def _drop_record_fd(self) -> None:
        fd, self._record_fd = self._record_fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    # -- explicit constructors ---------------------------------------------------------
    @classmethod
    def create(cls, name: str | int | None = None, size: int = 0, *, exclusive: bool = True,
               **kw: Any) -> Segment:
        """Create a segment (exclusively unless exclusive=False)."""
        check_int("size", size)
        if size <= 0:
            raise ValueError(f"size must be > 0 to create a segment, not {size}")
        return cls(name, "x" if exclusive else "c", size, **kw)

    @classmethod
    def open(cls, name: str | int | None = None, *, readonly: bool = False, **kw: Any) -> Segment:
        """Open an existing segment (read-only if asked)."""
        return cls(name, "r" if readonly else "w", **kw)

    # -- data ----------------------------------------------------------------------------
    def _live(self) -> _core.Segment:
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
        """Bytes in this mapping.  Follows growth made by other processes (within the
        reservation) and shrinking: the pages another process cut off read zeros through
        views taken before, instead of killing this process with SIGBUS."""
        seg = self._live()
        if seg.kind in (_core.KIND_POSIX, _core.KIND_FILE, _core.KIND_MEMFD):
            before = seg.size
            now = seg.refresh()
            if now < before:
                self._shrunk_from = max(self._shrunk_from, before)
            return now
        return seg.size

    def _outside(self, what: str, end: int, size: int) -> IndexError:
        if self._shrunk_from and end <= self._shrunk_from:
            return IndexError(f"{what} is outside {self._what()}: it was shrunk to {size} "
                              f"bytes by another process (this handle mapped "
                              f"{self._shrunk_from})")
        return IndexError(f"{what} is outside the segment ({size} bytes)")

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
        """SysV id (-1 for other backends)."""
        if self._seg is None:
            raise ClosedError(f"{self!r} is closed")
        return self._seg.shmid

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def lifecycle(self) -> str | None:
        """The lifecycle its creator recorded; None if shmkit did not create it (then it
        persists until unlinked, as the OS does).  memfd and anonymous segments are
        freed with their last user: "unlink_on_last_close"."""
        rec = self._record
        if rec is None and self._seg is not None and self.backend in ("posix", "file") \
                and not self._closed:
            assert self._fstat is not None  # posix and file handles have it
            rec = self._record = _lifecycle.read_fd_record(self._seg.fd, self.backend, self._fstat)
        return rec["lifecycle"] if rec else None

    @property
    def removed(self) -> bool:
        """True once the segment's name is gone: unlinked (posix, file; or the name now
        refers to another object), or IPC_RMID / ``ipcrm`` (sysv).  The mapping stays
        valid until closed."""
        if self.backend == "posix":
            assert self._fstat is not None and self.name is not None  # set when opened
            return not _lifecycle.same_file(os.path.join(_lifecycle.SHM_DIR, self.name),
                                            self._fstat)
        if self.backend == "file":
            assert self._fstat is not None  # set when opened
            return not _lifecycle.same_file(self._abspath, self._fstat)
        if self.backend == "sysv":
            try:
                st = _core.sysv_stat(self.shmid)
            except OSError:
                return True
            return bool(st["removed"] or st["ctime"] != self._ctime)
        return False

    def read(self, offset: int = 0, count: int | None = None) -> bytes:
        """Copy ``count`` bytes from ``offset`` (to the end when count is None)."""
        check_int("offset", offset, -(1 << 63))
        if count is not None:
            check_int("count", count, -(1 << 63))
        size = self.size
        if count is None:
            count = size - offset
        if not (0 <= offset <= size) or count < 0 or offset + count > size:
            raise self._outside(f"read({offset}, {count})", offset + max(count, 0), size)
        return bytes(self.buf[offset:offset + count])

    def write(self, data: Buffer, offset: int = 0) -> int:
        """Copy ``data`` (any bytes-like object) to ``offset``; returns the bytes written."""
        check_int("offset", offset, -(1 << 63))
        if self.readonly:
            raise PermissionError(f"{self._what()} is open read-only")
        mv = memoryview(data).cast("B")
        size = self.size
        if offset < 0 or offset + mv.nbytes > size:
            raise self._outside(f"write of {mv.nbytes} bytes at {offset}", offset + mv.nbytes,
                                size)
        self.buf[offset:offset + mv.nbytes] = mv
        return mv.nbytes

    def resize(self, size: int) -> None:
        """Change the size (posix, file, memfd).  Growing reserves the space first.

        Other processes follow: growth within their reservation, and shrinking (the
        pages cut off read zeros through their old views; read()/write() there raise
        IndexError saying so).  A segment that holds a zone is never shrunk: a zone's
        processes use all of it."""
        check_int("size", size)
        seg = self._live()
        if size == 0:
            raise ValueError("size must be > 0")
        if size >= 1 << 63:
            raise ValueError(f"size {size} is larger than any segment can be (2**63 - 1)")
        current = self.size
        if size < current and current >= 8 and \
                struct.unpack_from("=Q", self.buf, 0)[0] == _core.ZONE_MAGIC:
            raise InvalidArgumentError(
                errno.EINVAL, f"{self._what()} holds a shmkit zone of {current} bytes; it "
                f"cannot be shrunk to {size} (a zone never shrinks: its processes use all of "
                "it)")
        self._buf = None
        seg.resize(size)

    # -- attributes ----------------------------------------------------------------------
    def stat(self) -> SegmentStat:
        """The segment's attributes (see SegmentStat): IPC_STAT for SysV; fstat plus
        shmkit's records for the others."""
        seg = self._live()
        k = seg.stat()
        rec = self._record
        if self.backend == "sysv":
            handles, creator_alive = 0, None
            if self._record_fd is not None:
                entry = _lifecycle.lock_table().get(_fd_ident(self._record_fd), {})
                handles = entry.get("attach", 0)
                creator_alive = self._creator or entry.get("creator", False)
            return SegmentStat(
                backend="sysv", name=None, key=k["key"], shmid=seg.shmid, size=k["size"],
                uid=k["uid"], gid=k["gid"], mode=k["mode"] & 0o777, creator_pid=k["cpid"],
                last_pid=k["lpid"] or None, attach_count=k["nattch"], handles=handles,
                attach_time=k["atime"] or None, detach_time=k["dtime"] or None,
                change_time=k["ctime"] or None,
                created_time=rec["created_ns"] / 1e9 if rec else None,
                lifecycle=rec["lifecycle"] if rec else None, shmkit=rec is not None,
                creator_alive=creator_alive, removed=k["removed"])
        if self.backend == "anonymous":
            pid = rec["creator_pid"] if rec else None
            return SegmentStat(
                backend="anonymous", name=None, key=None, shmid=None, size=k["size"],
                uid=k["uid"], gid=k["gid"], mode=k["mode"], creator_pid=pid, last_pid=None,
                attach_count=0, handles=0, attach_time=None, detach_time=None,
                change_time=None, created_time=rec["created_ns"] / 1e9 if rec else None,
                lifecycle="unlink_on_last_close", shmkit=True, creator_alive=None,
                removed=False)
        fd = seg.fd
        if rec is None:
            assert self._fstat is not None  # fd backends have it
            rec = _lifecycle.read_fd_record(fd, self.backend, self._fstat)
        att, det = _lifecycle.read_event(fd, "attach"), _lifecycle.read_event(fd, "detach")
        last = max((e for e in (att, det) if e), key=lambda e: e[2], default=None)
        dev, ino = k["dev"], k["ino"]
        entry = _lifecycle.lock_table().get((dev, ino), {})
        mappers = _lifecycle.mapping_pids(dev, ino)
        lifecycle = rec["lifecycle"] if rec else None
        if self.backend == "memfd":
            lifecycle = "unlink_on_last_close"
        return SegmentStat(
            backend=self.backend, name=self.name if self.backend != "file" else self.path,
            key=None, shmid=None, size=k["size"], uid=k["uid"], gid=k["gid"],
            mode=k["mode"] & 0o777, creator_pid=rec["creator_pid"] if rec else None,
            last_pid=last[0] if last else None,
            attach_count=max(len(mappers), entry.get("attach", 0)),
            handles=entry.get("attach", 0),
            attach_time=att[2] / 1e9 if att else None, detach_time=det[2] / 1e9 if det else None,
            change_time=float(k["ctime"]) if k["ctime"] else None,
            created_time=rec["created_ns"] / 1e9 if rec else None,
            lifecycle=lifecycle, shmkit=rec is not None,
            creator_alive=(self._creator or entry.get("creator", False)) if rec else None,
            removed=self.removed)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Detach this process.  Views still alive keep the mapping until released.

        With lifecycle ``unlink_on_last_close`` the last handle to close removes the name;
        with ``unlink_on_creator_exit`` the creator's close does."""
        lock = self.__dict__.get("_lock")
        if lock is None:  # half-built
            self._closed = True
            return
        with lock:
            if self._closed:
                return
            self._closed = True
        self._buf = None
        _live.discard(self)
        seg = self._seg
        if seg is None:
            return
        if self.backend in ("posix", "file", "memfd"):
            try:
                self._close_fd_backend(seg)
            finally:
                seg.close()
        elif self.backend == "sysv":
            unmapped = seg.close()
            self._close_sysv(seg, unmapped)
        else:
            seg.close()
        _lifecycle.reap_children()

    def _close_fd_backend(self, seg: _core.Segment) -> None:
        if seg.closed:
            return
        fd = seg.fd
        rec = self._record
        if self.backend in ("posix", "file") and rec is None:
            assert self._fstat is not None  # posix and file handles have it
            rec = _lifecycle.read_fd_record(fd, self.backend, self._fstat)
        if rec is not None and not self._observer:
            _lifecycle.note_event(fd, "detach")
        if rec is None or self.backend == "memfd":
            return
        lifecycle = rec["lifecycle"]
        ident = self.name if self.backend == "posix" else self._abspath
        if lifecycle == "unlink_on_creator_exit" and self._creator:
            _lifecycle.remove_if_same(self.backend, ident, self._fstat)
            _lifecycle.stop_reaper(self._reaper_pid)  # we still hold the creator lock
        elif lifecycle == "unlink_on_last_close" and seg.exports == 0:
            # the last handle?  Then we hold the write lock: remove; an opener arriving
            # now waits, then retries.
            if _lifecycle.leave_attach(fd):
                _lifecycle.remove_if_same(self.backend, ident, self._fstat)
                if self._creator:
                    _lifecycle.stop_reaper(self._reaper_pid)
        # (views still alive: the kernel drops our locks when the last one goes and the
        # reaper then does what this close could not)

    def _close_sysv(self, seg: _core.Segment, unmapped: bool) -> None:
        fd = self._record_fd
        rec = self._record
        if fd is None or rec is None:
            self._drop_record_fd()
            return
        if self.removed:
            # removed behind our back (ipcrm, another IPC_RMID): its key is gone, and so
            # is the use of its record
            _lifecycle.remove_record(_lifecycle.sysv_record_name(seg.shmid, self._ctime), fd)
        lifecycle = rec["lifecycle"]
        if lifecycle == "unlink_on_creator_exit" and self._creator:
            _lifecycle.remove_if_same("sysv", seg.shmid, None, ctime=self._ctime, record_fd=fd)
            _lifecycle.stop_reaper(self._reaper_pid)
        elif lifecycle == "unlink_on_last_close" and unmapped and self._record_writable:
            if _lifecycle.leave_attach(fd):
                _lifecycle.remove_if_same("sysv", seg.shmid, None, ctime=self._ctime,
                                          record_fd=fd)
                if self._creator:
                    _lifecycle.stop_reaper(self._reaper_pid)
        if unmapped:
            self._drop_record_fd()
        else:
            # still mapped through views: we stay attached until the last view goes
            self._record_fd = None
            weakref.finalize(seg, _close_quietly, fd)

    def unlink(self) -> None:
        """Remove the segment's name (posix, file) or mark it for destruction (sysv).

        Processes that have it mapped keep using it.  SegmentNotFoundError if it was
        already removed (``shm_unlink``, ``rm``, ``ipcrm``, another process)."""
        if self.backend == "posix":
            if self._fstat is None:
                raise ClosedError(f"{self!r} was never opened")
            if not _lifecycle.remove_if_same("posix", self.name, self._fstat):
                raise SegmentNotFoundError(
                    errno.ENOENT, f"{self._what()} was already removed (or its name now "
                    "refers to another segment); this mapping stays valid until closed")
        elif self.backend == "file":
            if self._fstat is None:
                raise ClosedError(f"{self!r} was never opened")
            if not _lifecycle.remove_if_same("file", self._abspath, self._fstat):
                raise SegmentNotFoundError(
                    errno.ENOENT, f"{self._what()} was already removed (or the path now "
                    "refers to another file); this mapping stays valid until closed")
        elif self.backend == "sysv":
            shmid = self.shmid
            try:
                st = _core.sysv_stat(shmid)
                gone = st["removed"] or st["ctime"] != self._ctime
            except OSError:
                gone = True
            if gone:
                _lifecycle.remove_record(_lifecycle.sysv_record_name(shmid, self._ctime))
                raise SegmentNotFoundError(
                    errno.EIDRM, f"{self._what()} was already removed (by ipcrm, or IPC_RMID "
                    "from another process); this mapping stays valid until closed")
            _core.rmid(shmid)
            _lifecycle.remove_record(_lifecycle.sysv_record_name(shmid, self._ctime))
        else:
            raise ValueError(f"{self.backend} segments have no name to unlink")

    def __reduce__(self) -> tuple[Any, ...]:
        if self.backend == "posix":
            return (_reopen, ("posix", self.name, self.readonly))
        if self.backend == "sysv":
            return (_reopen, ("sysv", self.shmid, self.readonly))
        if self.backend == "file":
            return (_reopen, ("file", self._abspath, self.readonly))
        if self.backend == "memfd":
            import multiprocessing.context
            from multiprocessing import reduction
            if multiprocessing.context.get_spawning_popen() is None:
                raise TypeError("a memfd segment can only be pickled while spawning a child "
                                "process; use send_fd() to hand it to an unrelated process")
            return (_reopen_fd, (reduction.DupFd(self.fd), self.readonly))
        raise TypeError("an anonymous segment cannot be pickled; it is shared with fork "
                        "children only")

    def _what(self) -> str:
        if self.backend == "posix":
            return f"POSIX segment {self.name!r}"
        if self.backend == "file":
            return f"file segment {self.path!r}"
        if self.backend == "sysv":
            if self.key is not None:
                return f"SysV segment key 0x{self.key & 0xffffffff:08x}"
            return f"SysV segment id {self._seg.shmid if self._seg else '?'}"
        return f"{self.backend} segment"

    def __repr__(self) -> str:
        ident = {"posix": self.name, "sysv": self.key, "file": self.path,
                 "memfd": self.name}.get(self.backend)
        state = "closed" if self._closed or self._seg is None else f"size={self._seg.size}"
        return f"<shmkit.Segment {self.backend} {ident!r} {state}>"

    # -- fork ------------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        # the child shares our open file description, hence our locks: give it its own,
        # holding only the attach lock (it has the mapping; it did not create anything)
        self._creator = False
        self._reaper_pid = 0
        fd = self._lock_fd()
        if fd is None or fd < 0:
            return
        self._own_ofd()
        try:
            _lifecycle.hold_attach(fd, wait=True)
        except OSError:
            pass


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _sysv_gone(shmid: int, ctime: int) -> bool:
    """The SysV segment shmid (created at ctime) was removed (IPC_RMID) or replaced."""
    try:
        now = _core.sysv_stat(shmid)
    except OSError:
        return True
    return bool(now["removed"]) or now["ctime"] != ctime


def _pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fcntl_getfl(fd: int) -> int:
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def _fd_ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _memfd_label(fd: int) -> str | None:
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    if link.startswith("/memfd:"):
        return link[len("/memfd:"):].removesuffix(" (deleted)")
    return link.removesuffix(" (deleted)")


def _seal_bits(seals: str | int | Iterable[str | int]) -> int:
    import fcntl
    names = {"seal": fcntl.F_SEAL_SEAL, "shrink": fcntl.F_SEAL_SHRINK,
             "grow": fcntl.F_SEAL_GROW, "write": fcntl.F_SEAL_WRITE}
    if isinstance(seals, (str, int)):
        seals = (seals,)
    bits = 0
    for s in seals:
        if isinstance(s, int) and not isinstance(s, bool):
            bits |= s
        elif s in names:
            bits |= names[s]
        else:
            raise ValueError(f"unknown seal {s!r}; expected one of {', '.join(names)}")
    return bits


def _reopen(backend: str, ident: Any, readonly: bool) -> Segment:
    mode = "r" if readonly else "w"
    if backend == "sysv":
        return Segment(None, mode, backend="sysv", shmid=ident)
    return Segment(ident, mode, backend=backend)


def _reopen_fd(dupfd: Any, readonly: bool) -> Segment:  # a multiprocessing DupFd
    fd = dupfd.detach()
    try:
        return Segment(None, "r" if readonly else "w", backend="memfd", fd=fd)
    finally:
        os.close(fd)


# -- handing a segment to an unrelated process -----------------------------------------

_FD_MAGIC = "shmkit-fd"


def send_fd(sock: socket.socket, segment: Segment) -> None:
    """Send ``segment``'s file descriptor over a connected Unix socket (SCM_RIGHTS), so
    that an unrelated process can map it with ``recv_fd(sock)``.

    Meant for memfd segments (no name anywhere: the fd is the only way in), and works for
    posix and file segments too.  The segment stays open here; the receiver gets its own
    handle to the same memory."""
    if not isinstance(segment, Segment):
        raise TypeError(f"send_fd() needs a shmkit.Segment, not {type(segment).__name__}")
    if segment.backend not in ("memfd", "posix", "file"):
        raise TypeError(f"a {segment.backend} segment has no file descriptor to send")
    if sock.family != socket.AF_UNIX:
        raise ValueError("file descriptors travel only over Unix sockets (AF_UNIX)")
    header = json.dumps({"magic": _FD_MAGIC, "backend": segment.backend, "size": segment.size,
                         "readonly": segment.readonly, "name": segment.name}).encode()
    socket.send_fds(sock, [header], [segment.fd])


def recv_fd(sock: socket.socket, *, readonly: bool = False) -> Segment:
    """Receive a segment sent with ``send_fd()`` and map it (read-only if asked, or if the
    sender's segment is read-only or write-sealed).  Blocks like ``sock.recv``."""
    if sock.family != socket.AF_UNIX:
        raise ValueError("file descriptors travel only over Unix sockets (AF_UNIX)")
    msg, fds, flags, _ = socket.recv_fds(sock, 4096, 4)
    try:
        if flags & socket.MSG_CTRUNC:
            raise ShmkitError("recv_fd: the file descriptor was truncated away (the receiver "
                              "is out of file descriptors?)")
        if not fds:
            if not msg:
                raise ConnectionError("recv_fd: the peer closed the connection")
            raise ShmkitError("recv_fd: a message arrived without a file descriptor")
        try:
            header = json.loads(msg)
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("magic") != _FD_MAGIC:
            raise ShmkitError("recv_fd: the message was not sent by shmkit.send_fd()")
        seg = Segment(None, "r" if readonly or header.get("readonly") else "w",
                      backend="memfd", fd=fds[0])
        return seg
    finally:
        for fd in fds:
            os.close(fd)


# -- process events ------------------------------------------------------------------------

def _after_fork_in_child() -> None:
    _lifecycle.forget_reapers_after_fork()
    for seg in list(_live):
        try:
            seg._after_fork_in_child()
        except Exception:
            pass


def _at_exit() -> None:
    # close the handles whose lifecycle acts on close, so that a normal exit removes what
    # it should at once (a SIGKILL leaves it to the reaper, a few ms later)
    for seg in list(_live):
        try:
            if seg._record and seg._record.get("lifecycle") != "persist":
                seg.close()
        except Exception:
            pass
    _lifecycle.reap_children()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
