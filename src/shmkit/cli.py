"""The ``shmkit`` command (also ``python -m shmkit``): see and clean shared memory.

    shmkit ls [PATTERN] [--shmkit] [--all] [--posix | --sysv] [--json]
    shmkit info NAME | --key KEY | --id SHMID | --path FILE [--json]
    shmkit check ZONE | --key KEY | --path FILE [--json]
    shmkit rm NAME... [--key KEY]... [--id SHMID]... [--force]
    shmkit gc [PATTERN] [--dry-run] [--json]
    shmkit dump NAME | --key KEY | --id SHMID | --path FILE [--offset N] [--length N] [--raw]
    shmkit doctor [--json]
    shmkit bench ...        the benchmark suite (benchmarks/, installed as shmkit._bench)
    shmkit demo ...         a live demonstration across several processes

Exit codes (scripts may rely on them):

    0  success
    1  problems found (check: inconsistencies or corruption; doctor: something is wrong)
    2  usage error (bad arguments)
    3  not found (no such segment, key or id; not a zone; optional component missing)
    4  permission denied
    5  refused: the segment was not created by shmkit, or is still attached (see --force)
    6  another failure (a system call failed; the message says which)
    130 interrupted (Ctrl-C)

Adding a subcommand: write ``_args_x(parser)`` and ``_cmd_x(args) -> int`` and add one
row to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .inventory import SegmentInfo
    from .segment import Segment, SegmentStat
    from .zone import Zone

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_PERMISSION = 4
EXIT_REFUSED = 5
EXIT_ERROR = 6
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure with a message for the user and an exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


# -- helpers -------------------------------------------------------------------------------

def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=_json_default)
    sys.stdout.write("\n")


def _json_default(o: object) -> object:
    if isinstance(o, bytes):
        return o.decode("utf-8", "backslashreplace")
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not serialisable: {type(o).__name__}")


def _int(text: str) -> int:
    """Decimal, 0x hex or 0o octal; for --key, --id, --offset, --length."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _nonneg(text: str) -> int:
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return v


def _when(t: float | None) -> str:
    if not t:
        return "-"
    return datetime.datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [len(h) for h in header]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]
    _out("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for r in rows:
        _out("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _add_target(p: argparse.ArgumentParser, *, path: bool = True, shmid: bool = True) -> None:
    p.add_argument("name", nargs="?", help="POSIX segment name (as in /dev/shm)")
    p.add_argument("--key", type=_int, help="SysV key (decimal or 0x hex)")
    if shmid:
        p.add_argument("--id", dest="shmid", type=_nonneg, help="SysV shmid")
    if path:
        p.add_argument("--path", help="file-backed segment")


def _one_target(args: argparse.Namespace) -> dict[str, Any]:
    given = {k: getattr(args, k, None) for k in ("name", "key", "shmid", "path")}
    given = {k: v for k, v in given.items() if v is not None}
    if len(given) != 1:
        raise CliError("name exactly one segment: NAME, --key KEY, --id SHMID or --path FILE",
                       EXIT_USAGE)
    return given


def _open_segment(target: dict[str, Any], readonly: bool = True) -> Segment:
    from .segment import Segment
    mode = "r" if readonly else "w"
    if "name" in target:
        return Segment(target["name"], mode, backend="posix")
    if "path" in target:
        return Segment(None, mode, backend="file", path=target["path"])
    if "key" in target:
        return Segment(None, mode, backend="sysv", key=target["key"])
    return Segment(None, mode, backend="sysv", shmid=target["shmid"])


def _find(target: dict[str, Any]) -> SegmentInfo | None:
    from .inventory import find_segment
    if "path" in target:
        return None
    return find_segment(target.get("name"), key=target.get("key"), shmid=target.get("shmid"))


def _open_zone(target: dict[str, Any], info: SegmentInfo | None = None) -> Zone:
    from .zone import Zone
    if "name" in target:
        return Zone(target["name"], 0, create=False, timeout=5)
    if "path" in target:
        return Zone(None, 0, backend="file", path=target["path"], create=False, timeout=5)
    key = target.get("key")
    if key is None:
        key = info.key if info is not None else None
    if not key:
        raise CliError("a SysV zone is opened by its key; this segment has none (IPC_PRIVATE "
                       "or removed)", EXIT_NOT_FOUND)
    return Zone(None, 0, backend="sysv", key=key, create=False, timeout=5)


def _is_zone(target: dict[str, Any], info: SegmentInfo | None) -> bool:
    if info is not None and info.kind == "zone":
        return True
    if info is not None and info.backend == "posix":
        return False  # ls already peeked at the magic
    # sysv (ls does not attach) and file segments: look at the first 8 bytes
    import struct

    from . import _core
    try:
        seg = _open_segment(target, readonly=True)
    except OSError:
        return False
    try:
        return seg.size >= 8 and bool(struct.unpack("=Q", seg.read(0, 8))[0] == _core.ZONE_MAGIC)
    finally:
        seg.close()


# -- ls ----------------------------------------------------------------------------------------

def _args_ls(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", help="shell pattern on the name or key (0x%%08x)")
    p.add_argument("--shmkit", action="store_true", help="only what shmkit created")
    p.add_argument("--all", "-a", action="store_true",
                   help="also POSIX named semaphores (sem.* in /dev/shm)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--posix", action="store_true", help="only POSIX segments (/dev/shm)")
    g.add_argument("--sysv", action="store_true", help="only SysV segments")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _cmd_ls(args: argparse.Namespace) -> int:
    from .inventory import list_segments
    infos = list_segments(args.pattern, posix=not args.sysv, sysv=not args.posix,
                          shmkit_only=args.shmkit, semaphores=args.all)
    if args.json:
        _json([i.as_dict() for i in infos])
        return EXIT_OK
    rows = []
    for i in infos:
        rows.append([i.backend, i.display_name, "-" if i.shmid is None else str(i.shmid),
                     i.owner, f"{i.mode:o}", str(i.size), str(i.nattch),
                     str(i.cpid) if i.cpid else "-", str(i.lpid) if i.lpid else "-",
                     ",".join(i.status) or "-", i.lifecycle or "-", i.kind or "-"])
    _table(rows, ["TYPE", "KEY/NAME", "ID", "OWNER", "PERMS", "BYTES", "NATTCH", "CPID",
                  "LPID", "STATUS", "LIFECYCLE", "SHMKIT"])
    vanished = [i.name for i in infos if i.vanished]
    if vanished:
        _err(f"ls: {len(vanished)} shmkit segment(s) marked 'vanished' lost their name outside "
             "shmkit (" + ", ".join(map(repr, vanished)) + "): processes that open the name "
             "now find nothing.  Usual cause: multiprocessing.shared_memory's resource "
             "tracker at the exit of a process that attached it; use "
             "shmkit.attach_shared_memory(name) (docs/segments.md)")
    return EXIT_OK


# -- info --------------------------------------------------------------------------------------

def _args_info(p: argparse.ArgumentParser) -> None:
    _add_target(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _stat_of_file(target: dict[str, Any]) -> SegmentStat:
    seg = _open_segment(target)
    try:
        return seg.stat()
    finally:
        seg.close()


def _cmd_info(args: argparse.Namespace) -> int:
    import dataclasses
    target = _one_target(args)
    info = _find(target)
    if info is not None:
        attrs = info.as_dict()
    else:
        attrs = dataclasses.asdict(_stat_of_file(target))
        attrs["kind"] = None
    zone_part = None
    code = EXIT_OK
    if _is_zone(target, info):
        attrs["kind"] = "zone"
        try:
            zone_part = _zone_report(target, info)
        except CliError:
            raise
        except Exception as e:  # a broken zone is reported, not a crash
            zone_part = {"error": f"{type(e).__name__}: {e}"}
            code = EXIT_PROBLEMS
    if args.json:
        out = {"segment": attrs}
        if zone_part is not None:
            out["zone"] = zone_part
        _json(out)
        return code
    title = (f"POSIX segment {attrs.get('name')!r}" if attrs["backend"] == "posix" else
             f"SysV segment key 0x{(attrs.get('key') or 0) & 0xffffffff:08x} id {attrs.get('shmid')}"
             if attrs["backend"] == "sysv" else f"file segment {target['path']!r}")
    _out(title)
    perms = attrs["mode"]
    lines = [
        ("backend", attrs["backend"]),
        ("size", f"{attrs['size']} ({_bytes(attrs['size'])})"),
        ("owner", f"uid {attrs['uid']}, gid {attrs['gid']}" + (f" ({attrs['owner']})" if attrs.get("owner") else "")),
        ("perms", f"{perms:o}"),
        ("made by shmkit", attrs.get("kind") or ("yes" if attrs.get("shmkit") else "no")),
        ("lifecycle", attrs.get("lifecycle") or "- (not shmkit's: persists until removed)"),
        ("creator pid", _pid(attrs.get("cpid", attrs.get("creator_pid")), attrs.get("creator_alive"))),
        ("last pid", _pid(attrs.get("lpid", attrs.get("last_pid")), None)),
        ("attached", f"{attrs.get('nattch', attrs.get('attach_count'))} process(es), "
                     f"{attrs.get('handles', 0)} shmkit handle(s)"),
        ("created", _when(attrs.get("created_time"))),
        ("last attach", _when(attrs.get("attach_time"))),
        ("last detach", _when(attrs.get("detach_time"))),
        ("last change", _when(attrs.get("change_time"))),
        ("status", ",".join(attrs.get("status") or ()) or
         ("removed" if attrs.get("removed") else "-")),
    ]
    for k, v in lines:
        _out(f"  {k:<15} {v}")
    if zone_part is not None:
        _print_zone(zone_part)
    return code


def _pid(pid: int | None, alive: bool | None) -> str:
    if not pid:
        return "-"
    if alive is None:
        return str(pid)
    return f"{pid} ({'alive' if alive else 'gone'})"


def _zone_report(target: dict[str, Any], info: SegmentInfo | None) -> dict[str, Any]:
    import dataclasses

    from .zone import OBJECT_TYPES  # noqa: F401  (types are already names in objects())
    z = _open_zone(target, info)
    try:
        header = z.info()
        stats = z.statistics()
        objects = z.objects()
    finally:
        z.close()
    st = dataclasses.asdict(stats)
    return {"header": header, "stats": st, "objects": [dataclasses.asdict(o) for o in objects]}


_ZONE_STATES = {0: "uninitialised", 1: "initialising", 2: "ready", 3: "corrupt"}


def _print_zone(z: dict[str, Any]) -> None:
    if "error" in z:
        _out(f"zone: cannot read it: {z['error']}")
        return
    h, s = z["header"], z["stats"]
    _out("zone")
    tag = h.get("tag") or b""
    rows = [
        ("magic", f"0x{h['magic']:016x}"),
        ("format", f"0x{h['format']:016x}"),
        ("state", _ZONE_STATES.get(h.get("state"), str(h.get("state")))),
        ("size", f"{h['size']} (declared {h['declared_size']}, max {h['max_size']})"),
        ("tag", repr(tag.decode("utf-8", "backslashreplace") if isinstance(tag, bytes) else tag)),
        ("creator pid", str(h.get("creator_pid"))),
        ("created", _when(h.get("created_ns", 0) / 1e9)),
        ("generation", str(h.get("generation"))),
        ("recoveries", str(h.get("recoveries"))),
    ]
    for k, v in rows:
        _out(f"  {k:<15} {v}")
    _out("allocator")
    for k, v in [("pages", f"{s['free_pages']} free of {s['total_pages']}"),
                 ("free", f"{s['free_bytes']} bytes ({_bytes(s['free_bytes'])}), "
                          f"{s['slab_free_bytes']} of them in slab pages"),
                 ("largest free", f"{s['largest_free_bytes']} bytes"),
                 ("page runs", f"{s['page_reqs']} requests, {s['page_fails']} failed"),
                 ("extents", f"{s['extents']}, grown {s['grow_count']} time(s)")]:
        _out(f"  {k:<15} {v}")
    _table([["  " + str(c["size"]), str(c["total"]), str(c["used"]), str(c["reqs"]), str(c["fails"])]
            for c in s["classes"]], ["  CLASS", "TOTAL", "USED", "REQS", "FAILS"])
    objs = z["objects"]
    _out(f"objects ({len(objs)})")
    if objs:
        _table([["  " + o["name"], o["type"], str(o["size"]), str(o["offset"]),
                 str(o["creator_pid"]), _when(o["created_ns"] / 1e9)] for o in objs],
               ["  NAME", "TYPE", "SIZE", "OFFSET", "CPID", "CREATED"])


# -- check -----------------------------------------------------------------------------------

def _args_check(p: argparse.ArgumentParser) -> None:
    _add_target(p, shmid=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _cmd_check(args: argparse.Namespace) -> int:
    target = _one_target(args)
    info = _find(target)
    if not _is_zone(target, info):
        raise CliError(f"{_describe(target)} is not a shmkit zone (no zone magic)",
                       EXIT_PROBLEMS)
    from ._errors import CorruptedError, VersionMismatchError
    try:
        z = _open_zone(target, info)
    except (CorruptedError, VersionMismatchError) as e:
        problems = [f"{type(e).__name__}: {e}"]
    else:
        try:
            problems = z.check()
        finally:
            z.close()
    if args.json:
        _json({"target": _describe(target), "ok": not problems, "problems": problems})
    elif problems:
        _out(f"{_describe(target)}: {len(problems)} problem(s)")
        for p in problems:
            _out(f"  {p}")
    else:
        _out(f"{_describe(target)}: ok")
    return EXIT_PROBLEMS if problems else EXIT_OK


def _describe(target: dict[str, Any]) -> str:
    if "name" in target:
        return f"POSIX segment {target['name']!r}"
    if "path" in target:
        return f"file segment {target['path']!r}"
    if "key" in target:
        return f"SysV segment key 0x{target['key'] & 0xffffffff:08x}"
    return f"SysV segment id {target['shmid']}"


# -- rm -----------------------------------------------------------------------------------------

def _args_rm(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="POSIX segment name(s)")
    p.add_argument("--key", type=_int, action="append", default=[], help="SysV key (repeatable)")
    p.add_argument("--id", dest="shmid", type=_nonneg, action="append", default=[],
                   help="SysV shmid (repeatable)")
    p.add_argument("--force", "-f", action="store_true",
                   help="also remove segments not created by shmkit or still attached")


def _cmd_rm(args: argparse.Namespace) -> int:
    from .inventory import find_segment, remove_segment
    targets = ([{"name": n} for n in args.names] + [{"key": k} for k in args.key]
               + [{"shmid": i} for i in args.shmid])
    if not targets:
        raise CliError("rm: name at least one segment (NAME, --key KEY or --id SHMID)",
                       EXIT_USAGE)
    worst = EXIT_OK
    for t in targets:
        what = _describe(t)
        try:
            info = find_segment(t.get("name"), key=t.get("key"), shmid=t.get("shmid"))
            if not info.kind and not args.force:
                raise CliError(f"{what} was not created by shmkit; refusing to remove it "
                               "(use --force)", EXIT_REFUSED)
            if (info.nattch or info.handles) and not args.force:
                raise CliError(f"{what} is still attached by {max(info.nattch, info.handles)} "
                               "process(es); refusing to remove it (use --force: attached "
                               "processes keep their mapping)", EXIT_REFUSED)
            remove_segment(info)
            _out(f"removed {what}")
        except CliError as e:
            _err(f"rm: {e}")
            worst = max(worst, e.code)
        except Exception as e:
            code = _code_of(e)
            _err(f"rm: {_msg(e)}")
            worst = max(worst, code)
    return worst


# -- gc ------------------------------------------------------------------------------------------

def _args_gc(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", help="only names/keys matching this shell pattern")
    p.add_argument("--dry-run", "-n", action="store_true", help="say what would go; remove nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _cmd_gc(args: argparse.Namespace) -> int:
    from .inventory import collect_garbage
    actions = collect_garbage(args.pattern, dry_run=args.dry_run)
    if args.json:
        _json([a.as_dict() for a in actions])
        return EXIT_OK
    if not actions:
        _out("nothing to collect")
    for a in actions:
        _out(f"{a.action:<13} {a.what:<8} {a.target}: {a.reason}")
    return EXIT_OK


# -- dump ----------------------------------------------------------------------------------------

def _args_dump(p: argparse.ArgumentParser) -> None:
    _add_target(p)
    p.add_argument("--offset", "-s", type=_nonneg, default=0, help="first byte (default 0)")
    p.add_argument("--length", "-l", type=_nonneg, default=None, help="bytes (default: to the end)")
    p.add_argument("--raw", action="store_true", help="the bytes themselves, not hex")


def _cmd_dump(args: argparse.Namespace) -> int:
    target = _one_target(args)
    seg = _open_segment(target, readonly=True)
    try:
        size = seg.size
        if args.offset > size:
            raise CliError(f"offset {args.offset} is beyond the end of the segment ({size} "
                           "bytes)", EXIT_USAGE)
        length = size - args.offset if args.length is None else args.length
        if args.offset + length > size:
            raise CliError(f"{length} bytes at offset {args.offset} go beyond the end of the "
                           f"segment ({size} bytes)", EXIT_USAGE)
        data = seg.read(args.offset, length)
    finally:
        seg.close()
    if args.raw:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return EXIT_OK
    for line in hexdump(data, args.offset):
        _out(line)
    return EXIT_OK


def hexdump(data: bytes, base: int = 0) -> list[str]:
    """xxd's format: offset, 16 bytes in groups of two, then the printable ones."""
    out = []
    for i in range(0, len(data), 16):
        chunk = data[i:i + 16]
        hexpart = " ".join(chunk[j:j + 2].hex() for j in range(0, len(chunk), 2))
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        out.append(f"{base + i:08x}: {hexpart:<39}  {text}")
    return out


# -- doctor ----------------------------------------------------------------------------------------

def _args_doctor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _doctor_facts() -> tuple[dict[str, Any], list[str], list[str]]:
    import fcntl
    import multiprocessing
    import platform
    import tempfile

    from . import __version__, _core, _lifecycle
    from .inventory import sysv_limits
    facts: dict[str, Any] = {"shmkit": __version__, "python": platform.python_version(),
                   "kernel": platform.release(), "layout_version": _core.LAYOUT_VERSION,
                   "format_word": f"0x{_core.FORMAT_WORD:016x}"}
    problems: list[str] = []
    notes: list[str] = []

    lim: dict[str, Any] = sysv_limits()
    facts["sysv"] = lim
    if lim["shmmni"] and lim["segments"] >= 0.9 * lim["shmmni"]:
        problems.append(f"SysV: {lim['segments']} segments of kernel.shmmni = {lim['shmmni']} "
                        "are in use")
    if lim["shmall"] and lim["pages"] >= 0.9 * lim["shmall"]:
        problems.append(f"SysV: {lim['pages']} pages of kernel.shmall = {lim['shmall']} are "
                        "in use")

    shm: dict[str, Any] = {"path": _lifecycle.SHM_DIR, "mounted": False}
    mounts = _read("/proc/mounts") or ""
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == _lifecycle.SHM_DIR:
            shm.update(mounted=True, fstype=parts[2], options=parts[3])
    try:
        v = os.statvfs(_lifecycle.SHM_DIR)
        shm["size"] = v.f_blocks * v.f_frsize
        shm["free"] = v.f_bavail * v.f_frsize
        shm["used_percent"] = round(100 * (1 - v.f_bavail / v.f_blocks), 1) if v.f_blocks else None
    except OSError as e:
        problems.append(f"{_lifecycle.SHM_DIR}: {e.strerror}: POSIX segments cannot be created")
    facts["dev_shm"] = shm
    if shm.get("fstype") not in (None, "tmpfs"):
        problems.append(f"{_lifecycle.SHM_DIR} is {shm['fstype']}, not tmpfs")
    if shm.get("size") and shm.get("free") is not None and shm["free"] < 0.05 * shm["size"]:
        problems.append(f"{_lifecycle.SHM_DIR} is {shm['used_percent']}% full "
                        f"({_bytes(shm['free'])} free)")

    # user xattrs on /dev/shm (shmkit's records) and OFD locks (its liveness)
    xattr, ofd = False, False
    path = ""
    try:
        fd, path = tempfile.mkstemp(prefix=".shmkit-doctor-", dir=_lifecycle.SHM_DIR)
    except OSError:
        fd = None
    if fd is not None:
        try:
            try:
                os.setxattr(fd, "user.shmkit.doctor", b"1")
                xattr = True
            except OSError:
                pass
            try:
                ofd = bool(_core.ofd_lock(fd, _core.LOCKBYTE_ATTACH, fcntl.F_RDLCK))
            except OSError:
                pass
        finally:
            os.close(fd)
            os.unlink(path)
    facts["xattr"] = xattr
    facts["ofd_locks"] = ofd
    if not xattr:
        notes.append(f"{_lifecycle.SHM_DIR} refuses user xattrs (tmpfs before Linux 6.6): "
                     f"shmkit keeps its records in {_lifecycle.registry_path()} instead")
    if not ofd:
        problems.append("OFD locks (F_OFD_SETLK) are not available: lifecycles and liveness "
                        "checks cannot work")
    reg = _lifecycle.registry_dir(create=False)
    facts["registry"] = {"path": _lifecycle.registry_path(), "usable": reg is not None
                         or not os.path.exists(_lifecycle.registry_path())}
    if not facts["registry"]["usable"]:
        problems.append(f"the registry {_lifecycle.registry_path()} is not usable (not a "
                        "directory, or another user's and not sticky)")
    try:
        os.close(os.memfd_create("shmkit-doctor"))
        facts["memfd"] = True
    except (OSError, AttributeError):
        facts["memfd"] = False
        notes.append("memfd_create is not available: the memfd backend cannot be used")

    from . import _ksm
    facts["ksm"] = _ksm.report()

    # Python's own multiprocessing.shared_memory unlinks what it attached to at exit
    facts["stdlib_shared_memory"] = {
        "attach_unlinks_at_exit": True,   # the default on every version (resource tracker)
        "track_parameter": sys.version_info >= (3, 13),
        "safe_attach": "shmkit.attach_shared_memory(name)"}
    from .inventory import vanished_segments
    vanished = vanished_segments()
    facts["vanished"] = [v.as_dict() for v in vanished]
    for gone in vanished:
        users = (f" while {gone.nattch} process(es) still use it" if gone.nattch else
                 " (nobody uses it any more; its registry record remains)")
        problems.append(
            f"POSIX segment {gone.name!r} ({gone.kind}, lifecycle {gone.lifecycle}) lost its "
            f"name outside shmkit{users}: processes that open {gone.name!r} now find nothing (or "
            "create a new, empty one).  The usual cause is multiprocessing.shared_memory: "
            "SharedMemory(name) registers the segment with the resource tracker, which "
            "unlinks it when that process exits; attach with "
            "shmkit.attach_shared_memory(name) instead (see docs/segments.md)")
    facts["overcommit_memory"] = _read("/proc/sys/vm/overcommit_memory")
    facts["start_method"] = {
        "set": multiprocessing.get_start_method(allow_none=True),
        "available": multiprocessing.get_all_start_methods()}
    # (asking the default context fixes it for this process: ask after reading "set")
    facts["start_method"]["default"] = multiprocessing.get_context().get_start_method()
    facts["cpus"] = os.cpu_count()
    return facts, problems, notes


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ._ksm import FIGURES as KSM_FIGURES
    facts, problems, notes = _doctor_facts()
    if args.json:
        _json({"facts": facts, "problems": problems, "notes": notes})
        return EXIT_PROBLEMS if problems else EXIT_OK
    s, d, k = facts["sysv"], facts["dev_shm"], facts["ksm"]
    _out(f"shmkit {facts['shmkit']} (layout {facts['layout_version']}, format "
         f"{facts['format_word']}), Python {facts['python']}, Linux {facts['kernel']}, "
         f"{facts['cpus']} CPU(s)")
    _out("SysV limits")
    _out(f"  kernel.shmmax  {s['shmmax']} bytes per segment")
    _out(f"  kernel.shmall  {s['shmall']} pages in all ({s['pages']} in use, page = "
         f"{s['page_size']} bytes)")
    _out(f"  kernel.shmmni  {s['shmmni']} segments ({s['segments']} in use)")
    _out(f"{d['path']}")
    if d.get("mounted"):
        _out(f"  mounted        {d.get('fstype')} ({d.get('options')})")
    else:
        _out("  mounted        no (not a mount point of its own)")
    if "size" in d:
        _out(f"  size           {_bytes(d['size'])}, {_bytes(d['free'])} free "
             f"({d['used_percent']}% used)")
    _out(f"  user xattrs    {'yes' if facts['xattr'] else 'no'}")
    _out(f"  OFD locks      {'yes' if facts['ofd_locks'] else 'NO'}")
    _out(f"  registry       {facts['registry']['path']}"
         f"{'' if facts['registry']['usable'] else ' (NOT usable)'}")
    _out(f"memfd_create     {'yes' if facts['memfd'] else 'no'}")
    _out(f"KSM              {k['state']}" + (f" ({k['path']}/run = {k['run']})"
                                            if k['available'] else " (no KSM in this kernel)"))
    if k["available"]:
        figs = k["figures"]
        shown = [f"{n} {figs[n]}" for n in KSM_FIGURES if n in figs]
        _out(f"  figures        {', '.join(shown)}")
        _out(f"  saves now      {_bytes(k['saved_bytes'])} (pages_sharing x page size)")
    _out(f"  can            {k['can']}")
    _out(f"  cannot         {k['cannot']}")
    _out(f"  here           {k['here']}")
    _out(f"  instead        {k['instead']}")
    st = facts["stdlib_shared_memory"]
    _out("stdlib shm       multiprocessing.shared_memory.SharedMemory(name) unlinks what it "
         "attached to when its process exits (resource tracker); "
         + ("track=False or " if st["track_parameter"] else "no opt-out before Python 3.13: ")
         + f"use {st['safe_attach']}")
    _out(f"overcommit       vm.overcommit_memory = {facts['overcommit_memory']}")
    sm = facts["start_method"]
    _out(f"start method     {sm['default']} by default"
         f"{'' if sm['set'] is None else ', set to ' + sm['set']} "
         f"(available: {', '.join(sm['available'])})")
    for n in notes:
        _out(f"note: {n}")
    for p in problems:
        _out(f"PROBLEM: {p}")
    if not problems:
        _out("no problems found")
    return EXIT_PROBLEMS if problems else EXIT_OK


# -- commands of other modules, imported when used ------------------------------------------

def _args_passthrough(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the subcommand")


def _cmd_bench(args: argparse.Namespace) -> int:
    # benchmarks/ is installed as shmkit._bench (setup.py): importable wherever shmkit is
    # (type checkers look in src/ and do not see it: mypy skips it, see pyproject.toml)
    from ._bench.__main__ import main as bench_main  # pyright: ignore[reportMissingImports]
    return bench_main(args.args, prog="shmkit bench") or 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main
    return demo_main(args.args) or 0


#: name -> (one-line help, add_arguments(parser), run(args) -> exit code)
COMMANDS = {
    "ls": ("list POSIX and SysV segments, marking shmkit's own", _args_ls, _cmd_ls),
    "info": ("attributes of a segment; for a zone also its header, allocator and objects",
             _args_info, _cmd_info),
    "check": ("verify every invariant of a zone (exit 1 on problems)", _args_check, _cmd_check),
    "rm": ("remove segments (shmkit's and unattached ones unless --force)", _args_rm, _cmd_rm),
    "gc": ("remove what its lifecycle says should be gone and whose owners are dead",
           _args_gc, _cmd_gc),
    "dump": ("hex (or raw) bytes of a range of a segment, like shmop_read", _args_dump,
             _cmd_dump),
    "doctor": ("limits, /dev/shm, KSM, start method, xattrs: is this machine ready?",
               _args_doctor, _cmd_doctor),
    "bench": ("run the benchmark suite (benchmarks/)", _args_passthrough, _cmd_bench),
    "demo": ("a live demonstration across several processes", _args_passthrough, _cmd_demo),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="shmkit", description="See and clean shared memory: POSIX (/dev/shm) and SysV.",
        epilog="exit codes: 0 ok, 1 problems found, 2 usage, 3 not found, 4 permission "
               "denied, 5 refused (not shmkit's or attached; --force), 6 other failure, "
               "130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"shmkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add_args, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add_args(p)
    return parser


def _err(msg: str) -> None:
    sys.stderr.write(f"shmkit: {msg}\n")


def _msg(e: BaseException) -> str:
    """The message without OSError's "[Errno N]" prefix (the text names the cause)."""
    if isinstance(e, OSError) and e.strerror and len(e.args) >= 2:
        return e.strerror + (f": {e.filename!r}" if e.filename else "")
    return str(e)


def _code_of(e: BaseException) -> int:
    from ._errors import CorruptedError, ObjectNotFoundError, VersionMismatchError
    if isinstance(e, CliError):
        return e.code
    if isinstance(e, (FileNotFoundError, ObjectNotFoundError)):
        return EXIT_NOT_FOUND
    if isinstance(e, OSError) and e.errno in (errno.ENOENT, errno.EIDRM, errno.EINVAL) \
            and "no such" in str(e).lower():
        return EXIT_NOT_FOUND
    if isinstance(e, PermissionError):
        return EXIT_PERMISSION
    if isinstance(e, (CorruptedError, VersionMismatchError)):
        return EXIT_PROBLEMS
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["bench"], ["demo"]):
        # everything after the name is the subcommand's own: argparse's REMAINDER would
        # reject a leading option ("shmkit bench --quick": unrecognized arguments)
        args = argparse.Namespace(command=argv[0], args=argv[1:])
    else:
        args = parser.parse_args(argv)  # exits with 2 on bad usage
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    run = COMMANDS[args.command][2]
    try:
        return run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (shmkit dump | head): not our failure
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    except Exception as e:
        _err(f"{args.command}: {_msg(e)}")
        return _code_of(e)


if __name__ == "__main__":
    sys.exit(main())
