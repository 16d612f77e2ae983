"""What lives in /dev/shm and in SysV IPC, whose it is, and what may go.

The ``shmkit`` command's ``ls``, ``rm`` and ``gc`` are built on this module; it is
public so that programs can do the same::

    for info in shmkit.inventory.list_segments(shmkit_only=True):
        print(info.display_name, info.size, info.lifecycle, info.status)

Nothing here attaches to a segment: listing reads /dev/shm, /proc/sysvipc/shm,
/proc/locks, /proc/*/maps, shmkit's xattrs and its registry, and the first 8 bytes of
POSIX segments (a zone starts with its magic).
"""

from __future__ import annotations

import errno
import fnmatch
import os
import pwd
import grp
import stat as _stat
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from . import _core, _lifecycle
from ._errors import SegmentNotFoundError, SegmentPermissionError

__all__ = ["SegmentInfo", "GcAction", "list_segments", "vanished_segments", "find_segment",
           "remove_segment", "collect_garbage", "sysv_limits"]


@dataclass(frozen=True)
class SegmentInfo:
    """One segment as ``shmkit ls`` sees it (the columns of ``ipcs -m``, and more)."""

    backend: str                 #: "posix" or "sysv"
    name: str | None             #: posix name
    key: int | None              #: sysv key (0 = IPC_PRIVATE, also once removed)
    shmid: int | None            #: sysv id
    owner: str                   #: user name (or uid)
    uid: int
    gid: int
    mode: int                    #: permission bits
    size: int
    nattch: int                  #: SysV: shm_nattch; posix: processes that have it mapped
    handles: int                 #: open shmkit handles (holding the attach lock)
    cpid: int | None             #: creator pid
    lpid: int | None             #: pid of the last attach/detach
    kind: str | None             #: "zone" or "segment" if shmkit made it, else None
    lifecycle: str | None        #: recorded lifecycle (None: not shmkit's)
    creator_alive: bool | None   #: the creating handle is still open
    status: tuple[str, ...] = field(default=())
    #: "in-use" (mapped or held), "stale" (its lifecycle says it should be gone and its
    #: owners are dead: ``gc`` removes it once nobody uses it), "dest" (SysV: removed,
    #: destroyed at last detach), "locked" (SysV: SHM_LOCK), "vanished" (POSIX, shmkit's:
    #: its name was removed by something other than shmkit; see ``vanished_segments``)
    created_time: float | None = None
    attach_time: float | None = None
    detach_time: float | None = None
    change_time: float | None = None
    #: False when this user may not read shmkit's records of it (another user's segment,
    #: mode 0600): kind, lifecycle and creator are then unknown, not "not shmkit's"
    known: bool = True
    ident: tuple[int, int] | tuple[()] = field(default=(), repr=False, compare=False)  # (dev, ino) or (shmid, ctime)

    @property
    def display_name(self) -> str:
        if self.backend == "posix":
            return self.name or ""
        return f"0x{(self.key or 0) & 0xffffffff:08x}"

    @property
    def in_use(self) -> bool:
        return "in-use" in self.status

    @property
    def stale(self) -> bool:
        return "stale" in self.status

    @property
    def vanished(self) -> bool:
        return "vanished" in self.status

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("ident", None)
        d["status"] = list(self.status)
        d["perms"] = f"{self.mode:o}"
        d["display_name"] = self.display_name
        return d


@dataclass(frozen=True)
class GcAction:
    """One thing ``collect_garbage`` did (or would do, with ``dry_run``)."""

    what: str      #: "segment" or "record" (a registry record whose segment is gone)
    target: str    #: name, key or record file
    action: str    #: "removed", "would remove", "kept"
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


_MAGIC = struct.pack("=Q", _core.ZONE_MAGIC)
_Event = tuple[int, int, int]   # (pid, start time, time_ns) of an attach or detach
_Locks = dict[tuple[int, int], dict[str, Any]]


def _peek_magic(path: str) -> bool | None:
    """True if the file starts with a zone's magic; None if we may not read it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.pread(fd, 8, 0) == _MAGIC
    except OSError:
        return None
    finally:
        os.close(fd)


def _readable(path: str) -> bool:
    try:
        return os.access(path, os.R_OK, effective_ids=os.access in os.supports_effective_ids)
    except OSError:
        return False


def _latest_event(path: str) -> tuple[_Event | None, _Event | None, _Event | None]:
    att = _lifecycle.read_event(path, "attach")
    det = _lifecycle.read_event(path, "detach")
    last = max((e for e in (att, det) if e), key=lambda e: e[2], default=None)
    return att, det, last


def _posix_info(entry_name: str, st: os.stat_result, locks: _Locks,
                maps: dict[tuple[int, int], set[int]]) -> SegmentInfo:
    path = os.path.join(_lifecycle.SHM_DIR, entry_name)
    rec = _lifecycle.read_xattr_record(path)
    if rec is None:
        rec = _lifecycle.read_record(_lifecycle.file_record_name("posix", st.st_dev, st.st_ino),
                                     st.st_uid)
    # reading its xattrs (and bytes) needs read permission: without it, absence of a
    # record says nothing
    known = rec is not None or _readable(path)
    lk = locks.get((st.st_dev, st.st_ino), {})
    mappers = maps.get((st.st_dev, st.st_ino), set())
    handles = lk.get("attach", 0)
    is_zone = _peek_magic(path) if st.st_size >= 8 else False
    kind = "zone" if is_zone else ("segment" if rec else None)
    att, det, last = _latest_event(path)
    creator_alive = None
    status: list[str] = []
    if mappers or handles:
        status.append("in-use")
    if rec is not None:
        creator_alive = bool(lk.get("creator")) or bool(
            _lifecycle.proc_alive(rec.get("creator_pid"), rec.get("creator_start")))
        if _should_be_gone(rec["lifecycle"], creator_alive, handles):
            status.append("stale")
    return SegmentInfo(
        backend="posix", name=entry_name, key=None, shmid=None, owner=_user(st.st_uid),
        uid=st.st_uid, gid=st.st_gid, mode=st.st_mode & 0o777, size=st.st_size,
        nattch=max(len(mappers), handles), handles=handles,
        cpid=rec.get("creator_pid") if rec else None, lpid=last[0] if last else None,
        kind=kind, lifecycle=rec["lifecycle"] if rec else None, creator_alive=creator_alive,
        status=tuple(status), created_time=rec["created_ns"] / 1e9 if rec else None,
        attach_time=att[2] / 1e9 if att else None, detach_time=det[2] / 1e9 if det else None,
        change_time=float(st.st_ctime), known=known, ident=(st.st_dev, st.st_ino))


def _should_be_gone(lifecycle: str, creator_alive: bool, handles: int) -> bool:
    if lifecycle == "unlink_on_creator_exit":
        return not creator_alive
    if lifecycle == "unlink_on_last_close":
        return handles == 0
    return False


def _sysv_rows() -> list[dict[str, str]]:
    rows = []
    try:
        with open("/proc/sysvipc/shm") as f:
            header = f.readline().split()
            for line in f:
                vals = line.split()
                if len(vals) < len(header):
                    continue
                rows.append(dict(zip(header, vals)))
    except OSError:
        pass
    return rows


def _sysv_info(row: dict[str, str], locks: _Locks) -> SegmentInfo:
    key, shmid = int(row["key"]), int(row["shmid"])
    perms = int(row["perms"], 8)
    uid, gid, cuid = int(row["uid"]), int(row["gid"]), int(row["cuid"])
    ctime = int(row["ctime"])
    nattch = int(row["nattch"])
    rname = _lifecycle.sysv_record_name(shmid, ctime)
    rec = _lifecycle.read_record(rname, cuid)
    known = True
    if rec is None:
        d = _lifecycle.registry_dir()
        path = os.path.join(d, rname) if d else None
        known = path is None or not os.path.lexists(path) or _readable(path)
    handles, creator_alive = 0, None
    status: list[str] = []
    if nattch:
        status.append("in-use")
    if rec is not None:
        d = _lifecycle.registry_dir()
        lk: dict[str, Any] = {}
        try:
            rst = os.lstat(os.path.join(d, rname))  # type: ignore[arg-type]  # None: TypeError
            lk = locks.get((rst.st_dev, rst.st_ino), {})
        except (OSError, TypeError):
            pass
        handles = lk.get("attach", 0)
        creator_alive = bool(lk.get("creator")) or bool(
            _lifecycle.proc_alive(rec.get("creator_pid"), rec.get("creator_start")))
        if handles and "in-use" not in status:
            status.append("in-use")
        if _should_be_gone(rec["lifecycle"], creator_alive, handles):
            status.append("stale")
    if perms & _core.SHM_DEST:
        status.append("dest")
    if perms & _core.SHM_LOCKED:
        status.append("locked")
    return SegmentInfo(
        backend="sysv", name=None, key=key, shmid=shmid, owner=_user(uid), uid=uid, gid=gid,
        mode=perms & 0o777, size=int(row["size"]), nattch=nattch, handles=handles,
        cpid=int(row["cpid"]) or None, lpid=int(row["lpid"]) or None,
        kind=(("zone" if rec.get("zone") else "segment") if rec else None),
        lifecycle=rec["lifecycle"] if rec else None,
        creator_alive=creator_alive, status=tuple(status),
        created_time=rec["created_ns"] / 1e9 if rec else None,
        attach_time=float(row["atime"]) or None, detach_time=float(row["dtime"]) or None,
        change_time=float(ctime), known=known, ident=(shmid, ctime))


def list_segments(pattern: str | None = None, *, posix: bool = True, sysv: bool = True,
                  shmkit_only: bool = False, semaphores: bool = False) -> list[SegmentInfo]:
    """Every POSIX segment in /dev/shm and every SysV segment, POSIX first, by name/key.

    ``pattern`` is a shell pattern matched against the POSIX name or the SysV key
    (as 0x%08x, or decimal); ``shmkit_only`` keeps what shmkit created.  POSIX named
    semaphores (``sem.*`` files, e.g. multiprocessing's locks) are left out unless
    ``semaphores`` is true."""
    locks = _lifecycle.lock_table()
    out: list[SegmentInfo] = []
    if posix:
        maps = _lifecycle.mapping_table()
        try:
            entries = sorted(os.scandir(_lifecycle.SHM_DIR), key=lambda e: e.name)
        except OSError:
            entries = []
        for e in entries:
            if pattern and not fnmatch.fnmatchcase(e.name, pattern):
                continue
            if e.name.startswith("sem.") and not semaphores:
                continue  # sem_open's semaphores live here too: not segments
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if not _stat.S_ISREG(st.st_mode):
                continue  # the registry directory, sem.* are files too but fine
            out.append(_posix_info(e.name, st, locks, maps))
        out.extend(vanished_segments(pattern, _locks=locks))
    if sysv:
        for row in sorted(_sysv_rows(), key=lambda r: int(r["shmid"])):
            key = int(row["key"])
            if pattern and not (fnmatch.fnmatchcase(f"0x{key & 0xffffffff:08x}", pattern)
                                or fnmatch.fnmatchcase(str(key), pattern)
                                or fnmatch.fnmatchcase(row["shmid"], pattern)):
                continue
            out.append(_sysv_info(row, locks))
    if shmkit_only:
        out = [i for i in out if i.kind]
    return out


_DELETED = " (deleted)"


def _deleted_shm_objects() -> dict[tuple[int, int], dict[str, Any]]:
    """{(dev, ino): {"name", "pids", "access"}} of the objects that were in /dev/shm and
    lost their name while some process still has them open or mapped - what /proc shows
    as ``/dev/shm/NAME (deleted)``.  ``access`` is a /proc path that reaches the object
    (an open fd, else a mapping's map_files entry, which needs privileges)."""
    prefix = _lifecycle.SHM_DIR + "/"
    out: dict[tuple[int, int], dict[str, Any]] = {}
    named: dict[tuple[int, int], str] | None = None

    def add(key: tuple[int, int], target: str, pid: int, access: str) -> None:
        nonlocal named
        name = target[len(prefix):-len(_DELETED)]
        if not name or "/" in name:
            return  # not a POSIX segment (the registry's files live in a subdirectory)
        if name.startswith("#"):
            # made without a name (O_TMPFILE) and named when complete: /proc keeps calling
            # the first fd and what is mapped through it "#INO (deleted)"; it vanished
            # only if no name in /dev/shm leads to it now
            if named is None:
                named = _shm_inodes()
            if key in named:
                return
        e = out.setdefault(key, {"name": name, "pids": set(), "access": []})
        if e["name"].startswith("#") and not name.startswith("#"):
            e["name"] = name  # a mapping through the name tells the name
        e["pids"].add(pid)
        e["access"].append(access)

    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    for p in pids:
        pid = int(p)
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            fds = []
        for n in fds:
            link = f"/proc/{p}/fd/{n}"
            try:
                target = os.readlink(link)
                if not (target.startswith(prefix) and target.endswith(_DELETED)):
                    continue
                st = os.stat(link)
            except OSError:
                continue
            add((st.st_dev, st.st_ino), target, pid, link)
        try:
            with open(f"/proc/{p}/maps", "rb") as f:
                data = f.read()
        except OSError:
            continue
        for line in data.splitlines():
            parts = line.split(None, 5)
            if len(parts) < 6 or not parts[5].endswith(b" (deleted)"):
                continue
            target = os.fsdecode(parts[5])
            if not target.startswith(prefix):
                continue
            key = _lifecycle.mapped_file(parts)
            if key is not None:
                add(key, target, pid, f"/proc/{p}/map_files/{parts[0].decode()}")
    return out


def _shm_inodes() -> dict[tuple[int, int], str]:
    """{(dev, ino): name} of what /dev/shm holds now."""
    out: dict[tuple[int, int], str] = {}
    try:
        with os.scandir(_lifecycle.SHM_DIR) as it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                out[(st.st_dev, st.st_ino)] = e.name
    except OSError:
        pass
    return out


def _open_deleted(entry: dict[str, Any]) -> int | None:
    for access in entry["access"]:
        try:
            return os.open(access, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
    return None


def vanished_segments(pattern: str | None = None, *,
                      _locks: _Locks | None = None) -> list[SegmentInfo]:
    """shmkit's POSIX segments whose name was removed by something other than shmkit.

    Removing a name never takes the memory from the processes that have it mapped, so
    such a segment lives on for them while every process that opens the name from now
    on finds nothing (or, with mode "c", creates a new, empty segment).  The usual
    culprit is Python's ``multiprocessing.shared_memory``: ``SharedMemory(name)``
    registers what it attaches to with the resource tracker, which unlinks it when that
    process exits (``track=False`` on 3.13+; ``shmkit.attach_shared_memory`` on every
    version).  shmkit marks what it removes itself (``user.shmkit.removed``), so its own
    ``unlink()``, ``shmkit rm`` and lifecycles are not reported.

    What can be known: a segment that some process still has open or mapped (found in
    /proc; other users' processes only as root); and, where shmkit's records live in its
    registry rather than in xattrs, also one nobody uses any more (its record outlives
    it; ``shmkit gc`` removes such records).  A segment nobody uses whose record was an
    xattr leaves no trace.  Status: ``("vanished", "in-use")`` or ``("vanished",)``."""
    locks = _lifecycle.lock_table() if _locks is None else _locks
    deleted = _deleted_shm_objects()
    out: list[SegmentInfo] = []
    for (dev, ino), entry in deleted.items():
        name = entry["name"]
        if pattern and not fnmatch.fnmatchcase(name, pattern):
            continue
        fd = _open_deleted(entry)
        if fd is None:
            continue  # another user's, and we are not root: nothing to read
        try:
            st = os.fstat(fd)
            rec = _lifecycle.read_xattr_record(fd)
            if rec is None:
                rec = _lifecycle.read_record(_lifecycle.file_record_name("posix", dev, ino),
                                             st.st_uid)
            if rec is None or _lifecycle.read_event(fd, "removed") is not None:
                continue  # not shmkit's, or shmkit removed the name itself
            try:
                is_zone = st.st_size >= 8 and os.pread(fd, 8, 0) == _MAGIC
            except OSError:
                is_zone = False
            att, det = _lifecycle.read_event(fd, "attach"), _lifecycle.read_event(fd, "detach")
        finally:
            os.close(fd)
        last = max((e for e in (att, det) if e), key=lambda e: e[2], default=None)
        lk = locks.get((dev, ino), {})
        handles = lk.get("attach", 0)
        creator_alive = bool(lk.get("creator")) or bool(
            _lifecycle.proc_alive(rec.get("creator_pid"), rec.get("creator_start")))
        out.append(SegmentInfo(
            backend="posix", name=name, key=None, shmid=None, owner=_user(st.st_uid),
            uid=st.st_uid, gid=st.st_gid, mode=st.st_mode & 0o777, size=st.st_size,
            nattch=max(len(entry["pids"]), handles), handles=handles,
            cpid=rec.get("creator_pid"), lpid=last[0] if last else None,
            kind="zone" if is_zone else "segment", lifecycle=rec["lifecycle"],
            creator_alive=creator_alive, status=("vanished", "in-use"),
            created_time=rec["created_ns"] / 1e9,
            attach_time=att[2] / 1e9 if att else None,
            detach_time=det[2] / 1e9 if det else None,
            change_time=float(st.st_ctime), ident=(dev, ino)))
    # registry records (no xattrs here) outlive a name removed behind shmkit's back
    for rname, rst, rec in _lifecycle.list_records():
        parts = rname.split("-")
        if rec is None or parts[0] != "posix" or len(parts) != 3:
            continue
        try:
            dev, ino = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        name = rec.get("name") or ""
        if (dev, ino) in deleted or not name or (pattern and
                                                 not fnmatch.fnmatchcase(name, pattern)):
            continue
        if rst.st_uid not in (rec.get("creator_uid"), 0):
            continue  # a record is trusted only from its segment's owner
        try:
            now = os.lstat(os.path.join(_lifecycle.SHM_DIR, name))
            if (now.st_dev, now.st_ino) == (dev, ino):
                continue  # still there
        except OSError:
            pass
        out.append(SegmentInfo(
            backend="posix", name=name, key=None, shmid=None, owner=_user(rst.st_uid),
            uid=rst.st_uid, gid=rst.st_gid, mode=0, size=0, nattch=0, handles=0,
            cpid=rec.get("creator_pid"), lpid=None, kind="segment",
            lifecycle=rec["lifecycle"], creator_alive=bool(_lifecycle.proc_alive(
                rec.get("creator_pid"), rec.get("creator_start"))),
            status=("vanished",), created_time=rec["created_ns"] / 1e9,
            ident=(dev, ino)))
    out.sort(key=lambda i: i.name or "")
    return out


def find_segment(name: str | None = None, *, key: int | None = None,
                 shmid: int | None = None) -> SegmentInfo:
    """The one segment named ``name`` (posix), with ``key`` or ``shmid`` (sysv).
    SegmentNotFoundError if there is none."""
    if sum(x is not None for x in (name, key, shmid)) != 1:
        raise TypeError("find_segment() needs exactly one of name, key, shmid")
    if name is not None:
        from ._errors import InvalidNameError
        from ._checks import check_posix_name
        try:
            name = check_posix_name(name)
        except InvalidNameError as e:  # no segment can have it (too long, '/', NUL...)
            raise SegmentNotFoundError(errno.ENOENT, f"no POSIX segment can be named "
                                       f"{name!r}: {e}") from None
        path = os.path.join(_lifecycle.SHM_DIR, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise SegmentNotFoundError(errno.ENOENT, f"no POSIX segment named {name!r} "
                                       f"(in {_lifecycle.SHM_DIR})") from None
        if not _stat.S_ISREG(st.st_mode):
            raise SegmentNotFoundError(errno.ENOENT, f"{path} is not a segment")
        return _posix_info(name, st, _lifecycle.lock_table(),
                           {(st.st_dev, st.st_ino): _lifecycle.mapping_pids(st.st_dev, st.st_ino)})
    locks = _lifecycle.lock_table()
    if key is not None:
        if not -(1 << 31) <= key < (1 << 32):
            raise ValueError(f"SysV key {key} does not fit in 32 bits (a key_t)")
        k = key - (1 << 32) if key >= (1 << 31) else key
        if k == 0:
            raise SegmentNotFoundError(errno.ENOENT, "key 0 is IPC_PRIVATE: name the segment "
                                       "by its id (--id)")
        for row in _sysv_rows():
            if int(row["key"]) == k:
                return _sysv_info(row, locks)
        raise SegmentNotFoundError(errno.ENOENT, f"no SysV segment with key "
                                   f"0x{key & 0xffffffff:08x} (removed ones lose their key)")
    for row in _sysv_rows():
        if int(row["shmid"]) == shmid:
            return _sysv_info(row, locks)
    raise SegmentNotFoundError(errno.ENOENT, f"no SysV segment with id {shmid}")


def remove_segment(info: SegmentInfo) -> None:
    """Remove the segment ``info`` describes (posix: unlink the name; sysv: IPC_RMID,
    destroyed at last detach) and shmkit's record of it.  No policy here: callers decide
    whether foreign or attached segments may go (``shmkit rm`` refuses without --force).
    SegmentNotFoundError if it is already gone or the name now refers to another one."""
    if info.backend == "posix":
        name = info.name
        assert name is not None  # every posix SegmentInfo has one
        path = os.path.join(_lifecycle.SHM_DIR, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise SegmentNotFoundError(errno.ENOENT, f"POSIX segment {name!r} is already "
                                       "gone") from None
        if info.ident and (st.st_dev, st.st_ino) != info.ident:
            raise SegmentNotFoundError(errno.ENOENT, f"POSIX segment {name!r} was replaced "
                                       "by another one since it was listed")
        _lifecycle.mark_removed(path)
        _core.unlink_posix(name)
        _lifecycle.remove_record(_lifecycle.file_record_name("posix", st.st_dev, st.st_ino))
        return
    ident = info.ident
    assert len(ident) == 2  # every sysv SegmentInfo has (shmid, ctime)
    shmid, ctime = ident
    try:
        now: dict[str, Any] | None = _core.sysv_stat(shmid)
    except PermissionError:
        raise SegmentPermissionError(
            errno.EACCES, f"SysV segment id {shmid}: permission denied (it belongs to uid "
            f"{info.uid}, mode {info.mode:o})") from None
    except OSError:
        now = None
    if now is None or now["ctime"] != ctime:
        raise SegmentNotFoundError(errno.ENOENT, f"SysV segment id {shmid} is already gone")
    if now["removed"]:
        raise SegmentNotFoundError(errno.EIDRM, f"SysV segment id {shmid} was already removed "
                                   f"(it is destroyed when its {now['nattch']} attached "
                                   "process(es) detach)")
    _core.rmid(shmid)
    _lifecycle.remove_record(_lifecycle.sysv_record_name(shmid, ctime))


def _gc_posix(info: SegmentInfo, dry_run: bool) -> GcAction:
    """Remove with the lifecycle's locks held, so that nobody attaches meanwhile."""
    name = info.name
    assert name is not None  # every posix SegmentInfo has one
    path = os.path.join(_lifecycle.SHM_DIR, name)
    try:
        # O_NONBLOCK: a FIFO planted under the name since it was listed cannot block us
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        return GcAction("segment", name, "kept", f"cannot open it: {e.strerror}")
    try:
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != info.ident:
            return GcAction("segment", name, "kept", "replaced since it was listed")
        if not _lifecycle.try_exclusive(fd, _core.LOCKBYTE_ATTACH):
            return GcAction("segment", name, "kept", "a shmkit handle is open on it")
        if info.lifecycle == "unlink_on_creator_exit" and \
                not _lifecycle.try_exclusive(fd, _core.LOCKBYTE_CREATOR):
            return GcAction("segment", name, "kept", "its creator is alive")
        if _lifecycle.mapping_pids(st.st_dev, st.st_ino):
            return GcAction("segment", name, "kept", "a process has it mapped")
        if dry_run:
            return GcAction("segment", name, "would remove", _why(info))
        if _lifecycle.remove_if_same("posix", name, st):
            return GcAction("segment", name, "removed", _why(info))
        return GcAction("segment", name, "kept", "already gone")
    finally:
        os.close(fd)


def _gc_sysv(info: SegmentInfo, dry_run: bool) -> GcAction:
    ident = info.ident
    assert len(ident) == 2  # every sysv SegmentInfo has (shmid, ctime)
    shmid, ctime = ident
    target = f"{info.display_name} (id {shmid})"
    rname = _lifecycle.sysv_record_name(shmid, ctime)
    fd, rec = _lifecycle.open_record(rname, info.uid, writable=True)
    if fd is None:
        return GcAction("segment", target, "kept", "its registry record cannot be opened")
    try:
        if not _lifecycle.try_exclusive(fd, _core.LOCKBYTE_ATTACH):
            return GcAction("segment", target, "kept", "a shmkit handle is open on it")
        if info.lifecycle == "unlink_on_creator_exit" and \
                not _lifecycle.try_exclusive(fd, _core.LOCKBYTE_CREATOR):
            return GcAction("segment", target, "kept", "its creator is alive")
        try:
            now: dict[str, Any] | None = _core.sysv_stat(shmid)
        except OSError:
            now = None
        if now is None or now["ctime"] != ctime:
            return GcAction("segment", target, "kept", "already gone")
        if now["nattch"]:
            return GcAction("segment", target, "kept",
                            f"{now['nattch']} process(es) have it attached")
        if dry_run:
            return GcAction("segment", target, "would remove", _why(info))
        if _lifecycle.remove_if_same("sysv", shmid, None, ctime=ctime, record_fd=fd):
            return GcAction("segment", target, "removed", _why(info))
        return GcAction("segment", target, "kept", "already gone")
    finally:
        os.close(fd)


def _why(info: SegmentInfo) -> str:
    if info.lifecycle == "unlink_on_creator_exit":
        return f"lifecycle unlink_on_creator_exit and its creator (pid {info.cpid}) is gone"
    return "lifecycle unlink_on_last_close and no handle is open"


def _stale_records(dry_run: bool) -> list[GcAction]:
    """Registry records whose segment no longer exists."""
    out = []
    live_sysv = {(int(r["shmid"]), int(r["ctime"])) for r in _sysv_rows()}
    for rname, st, rec in _lifecycle.list_records():
        if st.st_uid != os.geteuid() and os.geteuid() != 0:
            continue  # not ours to judge (and the sticky directory would refuse)
        gone = False
        parts = rname.split("-")
        try:
            if parts[0] == "sysv" and len(parts) == 3:
                gone = (int(parts[1]), int(parts[2])) not in live_sysv
            elif parts[0] in ("posix", "file") and len(parts) == 3 and rec is not None:
                target = (os.path.join(_lifecycle.SHM_DIR, rec.get("name", ""))
                          if parts[0] == "posix" else rec.get("path", ""))
                try:
                    now = os.lstat(target)
                    gone = (now.st_dev, now.st_ino) != (int(parts[1]), int(parts[2]))
                except OSError:
                    gone = True
        except ValueError:
            continue
        if not gone:
            continue
        if dry_run:
            out.append(GcAction("record", rname, "would remove", "its segment no longer exists"))
            continue
        try:
            os.unlink(os.path.join(_lifecycle.registry_path(), rname))
            out.append(GcAction("record", rname, "removed", "its segment no longer exists"))
        except OSError as e:
            out.append(GcAction("record", rname, "kept", e.strerror or str(e)))
    return out


def collect_garbage(pattern: str | None = None, *, dry_run: bool = False) -> list[GcAction]:
    """Remove what its lifecycle says should be gone and whose owners are dead.

    Only segments shmkit created with lifecycle ``unlink_on_last_close`` (no handle
    open) or ``unlink_on_creator_exit`` (creator gone) - normally their reaper has done
    it already; this is the backstop (reaper killed, machine rebooted with a file-backed
    one...).  Never anything foreign, ``persist``, still mapped or attached by any
    process, or whose locks are held.  Also removes registry records whose segment is
    gone.  ``pattern`` restricts it to matching names/keys."""
    actions = []
    for info in list_segments(pattern):
        if not info.kind or info.lifecycle in (None, "persist") or not info.stale \
                or info.vanished:
            continue
        if "dest" in info.status:
            continue
        actions.append(_gc_posix(info, dry_run) if info.backend == "posix"
                       else _gc_sysv(info, dry_run))
    if pattern is None:
        actions.extend(_stale_records(dry_run))
    return actions


def sysv_limits() -> dict[str, int | None]:
    """kernel.shmmax (bytes per segment), kernel.shmall (pages in all), kernel.shmmni
    (segments), with what is in use now."""
    def read(name: str) -> int | None:
        try:
            with open(f"/proc/sys/kernel/{name}") as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
    rows = _sysv_rows()
    page = os.sysconf("SC_PAGESIZE")
    used_bytes = sum(int(r["size"]) for r in rows)
    return {"shmmax": read("shmmax"), "shmall": read("shmall"), "shmmni": read("shmmni"),
            "segments": len(rows), "bytes": used_bytes,
            "pages": (used_bytes + page - 1) // page, "page_size": page}
