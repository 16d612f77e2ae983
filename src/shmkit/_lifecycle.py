"""Lifecycles, shmkit's records about its segments, and who is alive (private).

What the kernel does not record, shmkit does:

- For posix, file and memfd segments, a ``user.shmkit`` extended attribute on the
  object itself holds the creator's record (JSON: lifecycle, creator pid and start time,
  creation time), and ``user.shmkit.attach`` / ``user.shmkit.detach`` hold
  ``"pid start_time time_ns"`` of the last attach and detach.  Where the file system
  refuses user xattrs (tmpfs before Linux 6.6), the creator's record goes to a registry
  file instead (below) and the last attach/detach are simply unknown.
- For SysV segments, a registry file ``<registry>/sysv-<shmid>-<ctime>`` holds the
  creator's record, and its OFD locks play the part the segment fd plays for the others
  (a SysV segment has no fd to lock).  shmid + ctime names one segment: a reused shmid
  comes with another creation time.

The registry is ``/dev/shm/.shmkit/`` (``$SHMKIT_REGISTRY`` overrides it), mode 1777
like /tmp: everyone may add records, nobody may remove another user's.  A record is
trusted only when its owner is the segment's owner.

Liveness never rests on a bare pid.  Every attached handle holds a read lock on byte
LOCKBYTE_ATTACH of its own open file description, the creator a write lock on
LOCKBYTE_CREATOR; the kernel drops them when the holder closes or dies, SIGKILL included.
"Is anybody attached?" is "can I take a write lock on LOCKBYTE_ATTACH?"; "is the creator
alive?" is "can I take a write lock on LOCKBYTE_CREATOR?".  The records' pid + start
time are for display.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat as _stat
import sys
import time
from typing import Any, Union

from . import _core

#: a creator's record, as stored (JSON): lifecycle, backend, creator pid/start/uid, ...
Record = dict[str, Any]
#: what xattr calls take: an fd, or a path (never followed if a symlink)
FdOrPath = Union[int, str]

LIFECYCLES = ("persist", "unlink_on_last_close", "unlink_on_creator_exit")

SHM_DIR = "/dev/shm"  # where glibc's shm_open puts POSIX names on Linux
XATTR = "user.shmkit"
XATTR_ATTACH = "user.shmkit.attach"
XATTR_DETACH = "user.shmkit.detach"
XATTR_REMOVED = "user.shmkit.removed"
RECORD_VERSION = 1


def registry_path() -> str:
    return os.environ.get("SHMKIT_REGISTRY") or os.path.join(SHM_DIR, ".shmkit")


def xattrs_enabled() -> bool:
    """False when $SHMKIT_XATTR=0 forces the registry fallback (tests, odd file systems)."""
    return os.environ.get("SHMKIT_XATTR", "1") != "0"


# -- process identity ------------------------------------------------------------------

_self: tuple[int, int] | None = None  # (pid, start time), computed once per process (cleared in fork children)


def self_identity() -> tuple[int, int]:
    """(pid, start time) of this process."""
    global _self
    if _self is None:
        pid = os.getpid()
        _self = (pid, _core.proc_start_time(pid))
    return _self


def _forget_identity() -> None:
    global _self
    _self = None


os.register_at_fork(after_in_child=_forget_identity)


def proc_alive(pid: int | None, start: int | None) -> bool | None:
    """True/False for a (pid, start time) record, None when the record is incomplete."""
    if not pid or not start:
        return None
    return bool(_core.proc_alive(int(pid), int(start)))


# -- OFD locks ----------------------------------------------------------------------------

# file systems without OFD locks (some network and FUSE ones) answer with these: the
# segment still works, its lifecycle cannot be enforced (creators are told)
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)


def _lock_if_supported(fd: int, byte: int, kind: int, wait: bool) -> bool:
    """_core.ofd_lock; False also when the file system has no OFD locks."""
    try:
        return _core.ofd_lock(fd, byte, kind, wait)
    except OSError as e:
        if e.errno in _NO_LOCKS:
            return False
        raise


def hold_attach(fd: int, wait: bool = True) -> bool:
    """Take this handle's read lock on LOCKBYTE_ATTACH (blocks while someone holds the
    write lock to remove the segment; that lasts microseconds).  False if the file
    system has no OFD locks."""
    return _lock_if_supported(fd, _core.LOCKBYTE_ATTACH, fcntl.F_RDLCK, wait)


def hold_creator(fd: int) -> bool:
    """Take the creator's write lock; False if it cannot be had (no OFD locks here)."""
    return _lock_if_supported(fd, _core.LOCKBYTE_CREATOR, fcntl.F_WRLCK, False)


def try_exclusive(fd: int, byte: int) -> bool:
    """Try the write lock on ``byte``: True means no other open file description holds
    any lock there (nobody attached / the creator is gone), and we now hold it."""
    try:
        return _core.ofd_lock(fd, byte, fcntl.F_WRLCK, False)
    except OSError as e:
        if e.errno == errno.EBADF:  # fd open read-only: cannot write-lock
            return False
        raise


def leave_attach(fd: int) -> bool:
    """Let go of this handle's read lock on LOCKBYTE_ATTACH, taking the write lock instead
    if nobody else holds a lock there: True means we were the last handle, and we now hold
    the write lock (remove the name, then close).  The read lock becomes the write lock in
    one fcntl (a conversion: if it is refused, the read lock stays, and only then is it
    dropped).  Dropping it first and trying after would leave a moment in which the reaper,
    blocked on that write lock, is granted it: the name would then go a little after our
    close returned, not before (Qt's "freed at the last detach" would be false for a few
    milliseconds, and a reopen in that window would find the old segment)."""
    if try_exclusive(fd, _core.LOCKBYTE_ATTACH):
        return True
    unlock(fd, _core.LOCKBYTE_ATTACH)
    return False


def unlock(fd: int, byte: int) -> None:
    try:
        _core.ofd_lock(fd, byte, fcntl.F_UNLCK, False)
    except OSError:
        pass


def lock_table() -> dict[tuple[int, int], dict[str, Any]]:
    """{(dev, ino): {"attach": n, "creator": bool, "init": bool}} for every file carrying
    shmkit's lock bytes, from /proc/locks (held locks only; waiters are skipped)."""
    table: dict[tuple[int, int], dict[str, Any]] = {}
    wanted = {_core.LOCKBYTE_ATTACH: "attach", _core.LOCKBYTE_CREATOR: "creator",
              _core.LOCKBYTE_INIT: "init"}
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return table
    for line in lines:
        parts = line.split()
        if len(parts) < 8 or parts[1] == "->":
            continue
        try:
            start = int(parts[6])
            what = wanted.get(start)
            if what is None:
                continue
            major, minor, ino = parts[5].split(":")
            key = (os.makedev(int(major, 16), int(minor, 16)), int(ino))
        except ValueError:
            continue
        entry = table.setdefault(key, {"attach": 0, "creator": False, "init": False})
        if what == "attach":
            entry["attach"] += 1
        else:
            entry[what] = True
    return table


def mapping_table() -> dict[tuple[int, int], set[int]]:
    """{(dev, ino): set of pids} of every shared file mapping visible in /proc/*/maps
    (the honest "attach count" of a POSIX segment: processes that have it mapped,
    shmkit or not).  Processes we may not inspect are skipped."""
    table: dict[tuple[int, int], set[int]] = {}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return table
    for p in pids:
        try:
            with open(f"/proc/{p}/maps", "rb") as f:
                data = f.read()
        except OSError:
            continue
        pid = int(p)
        for line in data.splitlines():
            parts = line.split(None, 5)
            if len(parts) < 6 or parts[4] == b"0":
                continue
            key = mapped_file(parts)
            if key is not None:
                table.setdefault(key, set()).add(pid)
    return table


def mapped_file(parts: list[bytes]) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file a line of /proc/<pid>/maps maps (the line split in
    six: address, perms, offset, dev, inode, path); None when the line does not say."""
    try:
        major, minor = parts[3].split(b":")
        return os.makedev(int(major, 16), int(minor, 16)), int(parts[4])
    except ValueError:
        return None


def mapping_pids(dev: int, ino: int) -> set[int]:
    return mapping_table().get((dev, ino), set())


# -- records: xattrs ----------------------------------------------------------------------

def make_record(lifecycle: str, backend: str, **ident: Any) -> Record:
    pid, start = self_identity()
    rec: Record = {"shmkit": RECORD_VERSION, "lifecycle": lifecycle, "backend": backend,
           "creator_pid": pid, "creator_start": start, "created_ns": time.time_ns(),
           "creator_uid": os.geteuid()}
    rec.update({k: v for k, v in ident.items() if v is not None})
    return rec


_decoded: dict[bytes, Record] = {}  # raw record -> decoded (records are written once, then only read)

# stored with short keys so that the xattr stays under 128 bytes (one getxattr call)
_SHORT = {"creator_pid": "pid", "creator_start": "start", "created_ns": "ns",
          "creator_uid": "uid"}
_LONG = {v: k for k, v in _SHORT.items()}


def _encode(rec: Record, *, drop: tuple[str, ...] = ()) -> bytes:
    out = {_SHORT.get(k, k): v for k, v in rec.items() if k not in drop}
    return json.dumps(out, separators=(",", ":")).encode()


def _decode(raw: bytes) -> Record | None:
    known = _decoded.get(raw)
    if known is not None:
        return known
    try:
        rec = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict) or rec.get("shmkit") != RECORD_VERSION:
        return None
    if rec.get("lifecycle") not in LIFECYCLES:
        return None
    decoded: Record = {str(_LONG.get(k, k)): v for k, v in rec.items()}
    if len(_decoded) > 256:
        _decoded.clear()
    _decoded[bytes(raw)] = decoded
    return decoded


def write_xattr_record(fd: int, rec: Record) -> bool:
    """True if stored on the object; False if the file system refuses user xattrs."""
    if not xattrs_enabled():
        return False
    try:
        # the object's name is known to whoever reads its xattrs: not repeated here
        os.setxattr(fd, XATTR, _encode(rec, drop=("backend", "name", "path")))
        return True
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES,
                       errno.ENOSPC, errno.E2BIG):
            return False
        raise


def read_xattr_record(target: FdOrPath) -> Record | None:
    """The creator's record from an fd or a path (None: none, or not readable)."""
    try:
        raw = os.getxattr(target, XATTR, follow_symlinks=False) if isinstance(target, str) \
            else os.getxattr(target, XATTR)
    except OSError:
        return None
    return _decode(raw)


def note_event(fd: int, which: str) -> None:
    """Record this process as the last to attach or detach (best effort, like shm_lpid)."""
    if not xattrs_enabled():
        return
    pid, start = self_identity()
    try:
        os.setxattr(fd, XATTR_ATTACH if which == "attach" else XATTR_DETACH,
                    b"%d %d %d" % (pid, start, time.time_ns()))
    except OSError:
        pass


def mark_removed(path: str) -> None:
    """Note on the object, just before shmkit removes its name, that shmkit did it
    (``"pid start_time time_ns"``, best effort).  Processes that still have it mapped keep
    the object, and with it this mark: a shmkit segment whose name is gone *without* the
    mark was removed by something else - on Python < 3.13 typically the resource tracker
    of a process that attached it with multiprocessing.shared_memory (see inventory's
    vanished segments)."""
    if not xattrs_enabled():
        return
    pid, start = self_identity()
    try:
        os.setxattr(path, XATTR_REMOVED, b"%d %d %d" % (pid, start, time.time_ns()),
                    follow_symlinks=False)
    except OSError:
        pass


def read_event(target: FdOrPath, which: str) -> tuple[int, int, int] | None:
    """(pid, start, time_ns) of the last attach or detach (``which`` "attach" or
    "detach"), or of shmkit's removal of the name ("removed"), or None."""
    name = {"attach": XATTR_ATTACH, "detach": XATTR_DETACH, "removed": XATTR_REMOVED}[which]
    try:
        raw = os.getxattr(target, name, follow_symlinks=False) if isinstance(target, str) \
            else os.getxattr(target, name)
        pid, start, ns = (int(x) for x in raw.split())
        return pid, start, ns
    except (OSError, ValueError):
        return None


# -- records: the registry -----------------------------------------------------------------

def registry_dir(create: bool = False) -> str | None:
    """The registry directory if it is usable (created when asked), else None
    (``registry_problem()`` says why).

    A usable registry is a real directory (not a symlink), either sticky (1777, shared by
    every user like /tmp) or owned by us (or root)."""
    path = registry_path()
    for _ in range(2):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not create:
                return None
            try:
                # made 0700 first, then opened up: nobody can put anything in it before
                # it is sticky (umask must not narrow it: every user records here)
                os.mkdir(path, 0o700)
                os.chmod(path, 0o1777)
            except FileExistsError:
                pass  # a racing creator (or someone else): judged below like any other
            except OSError:
                return None
            continue
        except OSError:
            return None
        if _registry_problem(path, st) is not None:
            return None
        return path
    return None


def _registry_problem(path: str, st: os.stat_result) -> str | None:
    if not _stat.S_ISDIR(st.st_mode):
        kind = "a symbolic link" if _stat.S_ISLNK(st.st_mode) else "not a directory"
        return f"{path} is {kind}"
    if st.st_uid not in (0, os.geteuid()) and not (st.st_mode & _stat.S_ISVTX):
        try:
            import pwd
            owner = f"uid {st.st_uid} ({pwd.getpwuid(st.st_uid).pw_name})"
        except (KeyError, ImportError):
            owner = f"uid {st.st_uid}"
        return (f"{path} belongs to {owner} and is not sticky (mode "
                f"{_stat.S_IMODE(st.st_mode):04o}): that user could remove or replace every "
                "other user's records, so shmkit keeps none there")
    return None


def registry_problem() -> str | None:
    """Why the registry cannot be used (None if it can, or does not exist yet), with what
    to do about it."""
    path = registry_path()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{path}: {e.strerror}"
    why = _registry_problem(path, st)
    if why is None:
        return None
    return (f"{why}.  Remove it if nothing of yours is in it (shmkit makes it again, sticky "
            "1777, like /tmp), or set SHMKIT_REGISTRY to a directory of your own")


def sysv_record_name(shmid: int, ctime: int | None) -> str:
    return f"sysv-{shmid}-{ctime}"


def file_record_name(backend: str, dev: int, ino: int) -> str:
    return f"{backend}-{dev}-{ino}"


def create_record(name: str, rec: Record, perm: int, *, lock: bool = False) -> int:
    """Create registry record ``name`` for a segment just created; returns its fd
    (O_RDWR, close-on-exec).  A record left under that name by a segment that no longer
    exists is replaced.  With ``lock`` (SysV: the record carries the locks), the creator
    and attach locks are taken before the record is written, so that whoever reads the
    record also sees them."""
    d = registry_dir(create=True)
    if d is None:
        raise OSError(errno.EACCES, f"the shmkit registry is not usable: "
                      f"{registry_problem() or registry_path() + ' cannot be created'}")
    path = os.path.join(d, name)
    data = _encode(rec)
    mode = 0o600 | (perm & 0o044)  # readable by whoever may read the segment
    for attempt in range(2):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode)
        except FileExistsError:
            if attempt:
                raise
            # the identity (shmid + ctime, or dev + ino) is fresh: whatever is there is
            # stale; we may only remove our own (sticky directory)
            os.unlink(path)
            continue
        try:
            os.fchmod(fd, mode)
            if lock:
                hold_creator(fd)
                hold_attach(fd, wait=False)
            os.write(fd, data)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise AssertionError("unreachable")


def open_record(name: str, owner_uid: int,
                writable: bool = True) -> tuple[int, Record] | tuple[None, None]:
    """(fd, record) of an existing trusted record, or (None, None)."""
    d = registry_dir()
    if d is None:
        return None, None
    path = os.path.join(d, name)
    fd: int | None = None
    for flags in ((os.O_RDWR,) if writable else ()) + (os.O_RDONLY,):
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
            break
        except (PermissionError, IsADirectoryError):
            continue
        except OSError:
            return None, None
    if fd is None:
        return None, None
    try:
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode) or st.st_uid not in (owner_uid, 0):
            os.close(fd)
            return None, None
        rec = _decode(os.pread(fd, 65536, 0))
    except OSError:
        os.close(fd)
        return None, None
    if rec is None:
        os.close(fd)
        return None, None
    return fd, rec


def read_record(name: str, owner_uid: int) -> Record | None:
    fd, rec = open_record(name, owner_uid, writable=False)
    if fd is not None:
        os.close(fd)
    return rec


def remove_record(name: str, fd: int | None = None) -> None:
    """Remove registry record ``name`` (only if it is still the file ``fd`` refers to)."""
    d = registry_dir()
    if d is None:
        return
    path = os.path.join(d, name)
    try:
        if fd is not None:
            a, b = os.lstat(path), os.fstat(fd)
            if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
                return
        os.unlink(path)
    except OSError:
        pass


def list_records() -> list[tuple[str, os.stat_result, Record | None]]:
    """Every file in the registry: (name, its lstat, its record or None)."""
    d = registry_dir()
    out: list[tuple[str, os.stat_result, Record | None]] = []
    if d is None:
        return out
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for n in names:
        p = os.path.join(d, n)
        try:
            st = os.lstat(p)
            rec = None
            if _stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    rec = _decode(f.read(65536))
        except OSError:
            continue
        out.append((n, st, rec))
    return out


# -- the creator's record of a posix/file/memfd segment, wherever it is -----------------

def read_fd_record(fd_or_path: FdOrPath, backend: str, st: os.stat_result) -> Record | None:
    rec = read_xattr_record(fd_or_path)
    if rec is None and backend in ("posix", "file"):
        rec = read_record(file_record_name(backend, st.st_dev, st.st_ino), st.st_uid)
    return rec


# -- reapers -------------------------------------------------------------------------------

# pids of reapers this process started and has not reaped yet (safe to signal: a child's
# pid cannot be reused before its parent reaps it)
_reapers: set[int] = set()

_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from shmkit._reaper import main; main(sys.argv[2:])")


def spawn_reaper(fd: int, spec: Record) -> int:
    """Start ``python -m shmkit._reaper``-equivalent in its own session, handing it the
    segment's (or record's) fd.  It blocks on an OFD lock (no polling) and removes the
    segment when its lifecycle says so, even if every process using it was SIGKILLed."""
    reap_children()
    target = 3 if fd != 3 else 4
    spec = dict(spec, fd=target)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [sys.executable, "-I", "-S", "-c", _BOOT, pkg_parent,
            json.dumps(spec, separators=(",", ":"))]
    actions = [(os.POSIX_SPAWN_DUP2, fd, target),
               (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
               (os.POSIX_SPAWN_OPEN, 2, os.environ.get("SHMKIT_REAPER_LOG") or os.devnull,
                os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    pid = os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsid=True)
    _reapers.add(pid)
    return pid


def reap_children() -> None:
    """Collect reapers that have finished (no zombies left behind)."""
    for pid in list(_reapers):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _reapers.discard(pid)


def stop_reaper(pid: int) -> None:
    """Stop a reaper whose work this process has just done itself.  Only called while we
    hold the lock the reaper waits for, so it cannot be half-way through a removal."""
    if pid not in _reapers:
        return
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    _reapers.discard(pid)


def forget_reapers_after_fork() -> None:
    _reapers.clear()


# -- removal, with the lock held --------------------------------------------------------------

def same_file(path: str, st: os.stat_result) -> bool:
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def remove_if_same(backend: str, ident: Any, st: os.stat_result | None, *,
                   ctime: int | None = None, record_fd: int | None = None) -> bool:
    """Remove the segment named ``ident`` if the name still refers to the object we hold
    (never someone else's segment created under the same name since).  True if removed.
    For SysV, ``ident`` is the shmid and ``ctime`` its creation time."""
    if backend in ("posix", "file"):
        assert st is not None  # posix and file segments are removed by identity
        path = os.path.join(SHM_DIR, ident) if backend == "posix" else ident
        if not same_file(path, st):
            return False
        mark_removed(path)
        try:
            if backend == "posix":
                _core.unlink_posix(ident)
            else:
                os.unlink(ident)
        except FileNotFoundError:
            return False
        remove_record(file_record_name(backend, st.st_dev, st.st_ino))
        return True
    if backend == "sysv":
        removed = False
        try:
            now = _core.sysv_stat(ident)
            if now["ctime"] == ctime and not now["removed"]:
                _core.rmid(ident)
                removed = True
        except OSError:
            pass
        remove_record(sysv_record_name(ident, ctime), record_fd)
        return removed
    return False
