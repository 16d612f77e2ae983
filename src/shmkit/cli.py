"""The ``shmkit`` command (also ``python -m shmkit``): see and clean shared memory.

    shmkit ls [PATTERN] [--shmkit] [--all] [--posix | --sysv] [--json] [--bytes]
    shmkit ls ZONE [--json] [--bytes]              the objects of a zone
    shmkit info NAME | --key KEY | --id SHMID | --path FILE [--json] [--bytes]
    shmkit info ZONE/OBJECT [--json] [--bytes]     one object's statistics
    shmkit ls --url redis://HOST[:PORT][/DB] [ZONE | --zone ZONE] [--json]
    shmkit info --url redis://... ZONE/OBJECT | --zone ZONE OBJECT [--json]
    shmkit check ZONE | --key KEY | --path FILE [--json]
    shmkit rm NAME... [--key KEY]... [--id SHMID]... [--force]
    shmkit rm ZONE/OBJECT... [--force]             remove objects from a zone
    shmkit gc [PATTERN] [--dry-run] [--json]
    shmkit dump NAME | --key KEY | --id SHMID | --path FILE [--offset N] [--length N] [--raw]
    shmkit doctor [--json]
    shmkit serve [ZONE...] [--host H] [--port P] ...   the status page (docs/serve.md)
    shmkit cgi [ZONE...] ...                            the same as a CGI program
    shmkit bench ...        the benchmark suite (benchmarks/, installed as shmkit._bench)
    shmkit demo ...         a live demonstration across several processes

Exit codes (scripts may rely on them):

    0  success
    1  problems found (check: inconsistencies or corruption; doctor: something is wrong)
    2  usage error (bad arguments)
    3  not found (no such segment, key or id; not a zone; optional component missing)
    4  permission denied
    5  refused: the segment was not created by shmkit, or is still attached; the object
       is still used by a live process (see --force)
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

# the exit codes and CliError are shared with the Redis backend's command-line part
from ._cliutil import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_OK, EXIT_PERMISSION,
                       EXIT_PROBLEMS, EXIT_REFUSED, EXIT_USAGE, CliError, human_bytes)

if TYPE_CHECKING:
    from .dashboard.collect import ZoneSpec
    from .inventory import SegmentInfo
    from .segment import Segment, SegmentStat
    from .zone import ObjectInfo, Zone

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


def _key(text: str) -> int:
    """A SysV key: 32 bits (a key_t), signed or not; never truncated to fit."""
    v = _int(text)
    if not -(1 << 31) <= v < (1 << 32):
        raise argparse.ArgumentTypeError(f"SysV key {text} does not fit in 32 bits (a key_t "
                                         "is -2**31 .. 2**32-1)")
    return v


def _nonneg(text: str) -> int:
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return v


def _when(t: float | None) -> str:
    if not t:
        return "-"
    return datetime.datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [len(h) for h in header]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]
    _out("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for r in rows:
        _out("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _add_target(p: argparse.ArgumentParser, *, path: bool = True, shmid: bool = True) -> None:
    p.add_argument("name", nargs="?", help="POSIX segment name (as in /dev/shm)")
    p.add_argument("--key", type=_key, help="SysV key (decimal or 0x hex)")
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


def _is_zone(target: dict[str, Any], info: SegmentInfo | None, *,
             attach: bool = False) -> bool:
    """Whether the target holds a zone.  SysV segments are attached to look only when
    ``attach`` (check, which attaches anyway): info reports their last-attach pid and time
    and must not change them; shmkit's SysV zones say so in their record."""
    if info is not None and info.kind == "zone":
        return True
    if info is not None and not info.known:
        return attach  # unknown to this user: check opens it (and says why it cannot)
    if info is not None and (info.backend == "posix" or not attach):
        return False  # posix: ls already peeked at the magic (a read, not a mapping)
    # file segments (and SysV ones for check): look at the first 8 bytes
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
    p.add_argument("pattern", nargs="?", metavar="PATTERN | ZONE",
                   help="shell pattern on the name or key (0x%%08x); the exact name of a "
                        "zone lists the zone's objects instead")
    p.add_argument("--shmkit", action="store_true", help="only what shmkit created")
    p.add_argument("--all", "-a", action="store_true",
                   help="also POSIX named semaphores (sem.* in /dev/shm)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--posix", action="store_true", help="only POSIX segments (/dev/shm)")
    g.add_argument("--sysv", action="store_true", help="only SysV segments")
    _add_output(p)
    _add_redis_target(p)


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--bytes", action="store_true",
                   help="sizes in bytes (default: human-readable, like 1.5 MiB)")


def _size(n: int | None, args: argparse.Namespace | None) -> str:
    """A size as the user asked for it: bytes with --bytes, else human-readable."""
    if n is None:
        return "-"
    return str(n) if getattr(args, "bytes", False) else human_bytes(n)


_GLOB = set("*?[")


def _names_a_zone(text: str | None) -> bool:
    """An exact POSIX name (no wildcard) of a segment that starts with a zone's magic."""
    if not text or _GLOB & set(text) or "/" in text.lstrip("/"):
        return False
    from .inventory import find_segment
    try:
        return find_segment(text).kind == "zone"
    except (OSError, ValueError):
        return False


def _add_redis_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="a Redis server or cluster (redis://host:port/db): the "
                                 "objects of a RedisZone instead of segments")
    p.add_argument("--zone", help="with --url: the RedisZone (or ?zone=NAME in the URL)")


def _cmd_ls(args: argparse.Namespace) -> int:
    if args.url:
        try:
            from .redis._cli import cmd_ls
        except ImportError as e:        # redis-py missing: the message names the extra
            raise CliError(str(e), EXIT_NOT_FOUND) from None
        return cmd_ls(args, _out, _table, _json)
    from .inventory import list_segments
    if _names_a_zone(args.pattern) and not (args.shmkit or args.all or args.sysv or args.posix):
        return _ls_zone(args, args.pattern.lstrip("/"))
    infos = list_segments(args.pattern, posix=not args.sysv, sysv=not args.posix,
                          shmkit_only=args.shmkit, semaphores=args.all)
    if args.json:
        _json([i.as_dict() for i in infos])
        return EXIT_OK
    rows = []
    for i in infos:
        none = "-" if i.known else "?"  # ?: another user's, whose records we may not read
        rows.append([i.backend, i.display_name, "-" if i.shmid is None else str(i.shmid),
                     i.owner, f"{i.mode:o}", _size(i.size, args), str(i.nattch),
                     str(i.cpid) if i.cpid else none, str(i.lpid) if i.lpid else none,
                     ",".join(i.status) or "-", i.lifecycle or none, i.kind or none])
    _table(rows, ["TYPE", "KEY/NAME", "ID", "OWNER", "PERMS", "BYTES" if args.bytes else "SIZE",
                  "NATTCH", "CPID", "LPID", "STATUS", "LIFECYCLE", "SHMKIT"])
    vanished = [i.name for i in infos if i.vanished]
    if vanished:
        _err(f"ls: {len(vanished)} shmkit segment(s) marked 'vanished' lost their name outside "
             "shmkit (" + ", ".join(map(repr, vanished)) + "): processes that open the name "
             "now find nothing.  Usual cause: multiprocessing.shared_memory's resource "
             "tracker at the exit of a process that attached it; use "
             "shmkit.attach_shared_memory(name) (docs/segments.md)")
    return EXIT_OK


def _ls_zone(args: argparse.Namespace, name: str) -> int:
    """``shmkit ls ZONE``: the zone's objects, each with the figures that matter."""
    from .dashboard.collect import collect_zone, parse_zone_spec
    z = collect_zone(parse_zone_spec(name), listed=True)
    if args.json:
        _json(z["objects"] if z["state"] == "ready" else z)
        return EXIT_OK if z["state"] == "ready" else EXIT_PROBLEMS
    if z["state"] != "ready":
        _err(f"ls: zone {name!r} is {z['state']}: {z['error']}")
        for p in z["problems"]:
            _err(f"  {p}")
        return EXIT_PROBLEMS
    rows = [[o["name"], o["type"], _size(o["size"], args), str(o["creator_pid"]),
             _when(o["created"]), _object_summary(o, args)] for o in z["objects"]]
    a = z["allocator"]
    _out(f"zone {name!r}: {_size(z['header']['size'], args)}, {a['used_percent']}% used, "
         f"{len(rows)} object(s)")
    if rows:
        _table(rows, ["NAME", "TYPE", "BYTES" if args.bytes else "SIZE", "CPID", "CREATED",
                      "NOW"])
    return EXIT_OK


def _object_summary(o: dict[str, Any], args: argparse.Namespace | None = None) -> str:
    """One line of what matters about an object (from its status-document entry)."""
    if o.get("error"):
        return f"cannot read it: {o['error']}"
    s = o.get("statistics")
    if s is None:
        return "-"
    t = o["type"]
    if t == "queue":
        return (f"depth {s['depth']}, {_size(s['bytes_used'], args)} of "
                f"{_size(s['capacity'], args)}, {s['puts']} put, {s['gets']} got, "
                f"{s['waits']} waits, {s['drops']} dropped, {s['members']} handle(s)"
                + (", closed" if s["closed"] else ""))
    if t == "dict":
        looks = s["hits"] + s["misses"]
        ratio = f"{100 * s['hits'] / looks:.1f}%" if looks else "-"
        return (f"{s['items']} item(s), hit ratio {ratio}, {s['evictions']} evicted, "
                f"{s['expirations']} expired, {_size(s['free_space'], args)} free of "
                f"{_size(s['capacity'], args)}")
    if t in ("lock", "rlock"):
        holder = "free" if not s["owner_pid"] else (
            f"held by pid {s['owner_pid']}" + (" (DEAD)" if s["owner_alive"] is False else ""))
        return (f"{holder}, {s['waiters']} waiting, {s['acquisitions']} acquired, "
                f"{s['contentions']} contended, {s['owner_deaths']} owner deaths")
    if t == "rwlock":
        who = f"writer pid {s['writer_pid']}" if s["writer_pid"] else f"{s['readers']} reader(s)"
        return f"{who}, {s['waiters']} waiting, {s['owner_deaths']} writer deaths"
    if t == "semaphore":
        return f"value {s['value']} of {s['initial']}, {s['waiters']} waiting"
    if t == "event":
        return f"{'set' if s['is_set'] else 'clear'}, {s['waiters']} waiting"
    if t == "condition":
        return f"{s['waiters']} waiting, {s['notifies']} notifies"
    if t == "counter":
        return f"value {s['value']}"
    if t in ("board", "config"):
        writer = ("no writer" if not s["writer_pid"] else
                  f"writer pid {s['writer_pid']}" + ("" if s["writer_alive"] else " (dead)"))
        last = _when(s["last_publish_ns"] / 1e9) if s["last_publish_ns"] else "never"
        return f"version {s['version']}, last published {last}, {writer}"
    if t == "ndarray":
        return f"{s['dtype']} {tuple(s['shape'])}"
    return "-"


# -- info --------------------------------------------------------------------------------------

def _args_info(p: argparse.ArgumentParser) -> None:
    _add_target(p)
    p.add_argument("--object", "-o", metavar="OBJECT",
                   help="one object of the zone (same as ZONE/OBJECT)")
    _add_output(p)
    _add_redis_target(p)


def _split_object(args: argparse.Namespace) -> str | None:
    """``ZONE/OBJECT`` (POSIX names cannot contain '/') -> args.name = ZONE; returns
    OBJECT (or --object), None for the segment itself."""
    obj = getattr(args, "object", None)
    name = getattr(args, "name", None)
    if name and "/" in name.lstrip("/"):
        zone, _, inner = name.lstrip("/").partition("/")
        if obj is not None:
            raise CliError("name the object once: ZONE/OBJECT or --object OBJECT", EXIT_USAGE)
        if not zone or not inner:
            raise CliError(f"{name!r}: expected ZONE/OBJECT", EXIT_USAGE)
        args.name, obj = zone, inner
    return obj


def _zone_spec(target: dict[str, Any], info: SegmentInfo | None = None) -> ZoneSpec:
    from .dashboard.collect import ZoneSpec
    if "name" in target:
        return ZoneSpec("posix", name=target["name"].lstrip("/"))
    if "path" in target:
        return ZoneSpec("file", path=os.path.abspath(target["path"]))
    key = target.get("key")
    if key is None and info is not None:
        key = info.key
    if not key:
        raise CliError("a SysV zone is opened by its key; this segment has none (IPC_PRIVATE "
                       "or removed)", EXIT_NOT_FOUND)
    return ZoneSpec("sysv", key=key)


def _find_object(z: Zone, obj_name: str, where: str) -> ObjectInfo:
    """``obj_name``'s entry in the directory of ``z``; CliError (not found) naming
    ``where`` the zone is."""
    try:
        return z.find(obj_name)
    except LookupError:
        raise CliError(f"no object named {obj_name!r} in {where}", EXIT_NOT_FOUND) from None


def _info_object(args: argparse.Namespace, target: dict[str, Any], obj_name: str) -> int:
    """``shmkit info ZONE/OBJECT``: one object's directory entry and statistics."""
    from .dashboard.collect import collect_object
    z = _open_zone(target, _find(target))
    try:
        entry = collect_object(z, _find_object(z, obj_name, _describe(target)))
    finally:
        z.close()
    entry["zone"] = _zone_spec(target).label
    if args.json:
        _json(entry)
        return EXIT_PROBLEMS if entry["error"] else EXIT_OK
    _out(f"{entry['type']} {obj_name!r} in zone {entry['zone']!r}")
    for k, v in [("size", _size(entry["size"], args)), ("offset", str(entry["offset"])),
                 ("creator pid", str(entry["creator_pid"])), ("created", _when(entry["created"])),
                 ("now", _object_summary(entry, args))]:
        _out(f"  {k:<15} {v}")
    st = entry["statistics"]
    if st:
        _out("statistics")
        for k, v in st.items():
            if k == "name":
                continue
            if isinstance(v, int) and not isinstance(v, bool) and (
                    k in _SIZE_FIELDS or k.endswith("_bytes")):
                v = f"{v} ({human_bytes(v)})" if not args.bytes else str(v)
            elif k.endswith("_ns") and isinstance(v, int) and v > 10 ** 17:
                v = _when(v / 1e9)
            _out(f"  {k:<24} {v}")
    return EXIT_PROBLEMS if entry["error"] else EXIT_OK


#: statistics() fields that are sizes in bytes
_SIZE_FIELDS = {"bytes_used", "capacity", "memory", "free_space", "max_item_size", "max_bytes",
                "nbytes"}


def _stat_of_file(target: dict[str, Any]) -> SegmentStat:
    seg = _open_segment(target)
    try:
        return seg.stat()
    finally:
        seg.close()


def _cmd_info(args: argparse.Namespace) -> int:
    import dataclasses
    if args.url:
        try:
            from .redis._cli import cmd_info
        except ImportError as e:        # redis-py missing: the message names the extra
            raise CliError(str(e), EXIT_NOT_FOUND) from None
        return cmd_info(args, _out, _json)
    obj_name = _split_object(args)
    target = _one_target(args)
    if obj_name is not None:
        return _info_object(args, target, obj_name)
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
        ("size", _size(attrs["size"], args)),
        ("owner", f"uid {attrs['uid']}, gid {attrs['gid']}" + (f" ({attrs['owner']})" if attrs.get("owner") else "")),
        ("perms", f"{perms:o}"),
        ("made by shmkit", attrs.get("kind") or ("yes" if attrs.get("shmkit") else
                                                  "no" if attrs.get("known", True) else
                                                  "unknown (its records are not readable by "
                                                  "this user)")),
        ("lifecycle", attrs.get("lifecycle") or ("- (not shmkit's: persists until removed)"
                                                 if attrs.get("known", True) else "unknown")),
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
        _print_zone(zone_part, args)
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


def _print_zone(z: dict[str, Any], args: argparse.Namespace | None = None) -> None:
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
        ("size", f"{_size(h['size'], args)} (declared {_size(h['declared_size'], args)}, "
                 f"max {_size(h['max_size'], args)})"),
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
                 ("free", f"{_size(s['free_bytes'], args)}, "
                          f"{_size(s['slab_free_bytes'], args)} of it in slab pages"),
                 ("largest free", _size(s["largest_free_bytes"], args)),
                 ("page runs", f"{s['page_reqs']} requests, {s['page_fails']} failed"),
                 ("extents", f"{s['extents']}, grown {s['grow_count']} time(s)")]:
        _out(f"  {k:<15} {v}")
    _table([["  " + _size(c["size"], args), str(c["total"]), str(c["used"]), str(c["reqs"]),
             str(c["fails"])] for c in s["classes"]], ["  CLASS", "TOTAL", "USED", "REQS", "FAILS"])
    objs = z["objects"]
    _out(f"objects ({len(objs)})")
    if objs:
        _table([["  " + o["name"], o["type"], _size(o["size"], args), str(o["offset"]),
                 str(o["creator_pid"]), _when(o["created_ns"] / 1e9)] for o in objs],
               ["  NAME", "TYPE", "SIZE", "OFFSET", "CPID", "CREATED"])


# -- check -----------------------------------------------------------------------------------

def _args_check(p: argparse.ArgumentParser) -> None:
    _add_target(p, shmid=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _cmd_check(args: argparse.Namespace) -> int:
    target = _one_target(args)
    info = _find(target)
    if not _is_zone(target, info, attach=True):
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
    p.add_argument("names", nargs="*", metavar="NAME | ZONE/OBJECT",
                   help="POSIX segment name(s), or objects of a zone")
    p.add_argument("--key", type=_key, action="append", default=[], help="SysV key (repeatable)")
    p.add_argument("--id", dest="shmid", type=_nonneg, action="append", default=[],
                   help="SysV shmid (repeatable)")
    p.add_argument("--force", "-f", action="store_true",
                   help="also remove segments not created by shmkit or still attached, and "
                        "objects a live process may still use")


def _cmd_rm(args: argparse.Namespace) -> int:
    from .inventory import find_segment, remove_segment
    objects = [n for n in args.names if "/" in n.lstrip("/")]
    targets = ([{"name": n} for n in args.names if n not in objects]
               + [{"key": k} for k in args.key] + [{"shmid": i} for i in args.shmid])
    worst = EXIT_OK
    for n in objects:
        try:
            _rm_object(n, args.force)
        except CliError as e:
            _err(f"rm: {e}")
            worst = max(worst, e.code)
        except Exception as e:
            _err(f"rm: {_msg(e)}")
            worst = max(worst, _code_of(e))
    if objects and not targets:
        return worst
    if not targets:
        raise CliError("rm: name at least one segment (NAME, --key KEY or --id SHMID)",
                       EXIT_USAGE)
    for t in targets:
        what = _describe(t)
        try:
            info = find_segment(t.get("name"), key=t.get("key"), shmid=t.get("shmid"))
            if not info.known and not args.force:
                raise CliError(f"{what}: permission denied: it belongs to {info.owner} (mode "
                               f"{info.mode:o}) and its records are not readable by this "
                               "user, so whether shmkit created it cannot be told",
                               EXIT_PERMISSION)
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


def _object_users(entry: dict[str, Any]) -> list[str]:
    """Why a live process may still be using this object (from its statistics)."""
    s = entry.get("statistics") or {}
    t = entry["type"]
    out = []
    if t == "queue" and s.get("members"):
        out.append(f"{s['members']} queue handle(s) are open")
    if t in ("lock", "rlock") and s.get("owner_pid") and s.get("owner_alive"):
        out.append(f"it is held by pid {s['owner_pid']}, which is alive")
    if t == "rwlock" and (s.get("writer_pid") or s.get("readers")):
        out.append("it is held")
    if t in ("board", "config") and s.get("writer_pid") and s.get("writer_alive"):
        out.append(f"its writer pid {s['writer_pid']} is alive")
    if s.get("waiters"):
        out.append(f"{s['waiters']} process(es) are waiting on it")
    return out


def _rm_object(text: str, force: bool) -> None:
    """``shmkit rm ZONE/OBJECT``: refused while a live process may use it.  shmkit cannot
    see every handle (a dict or a lock handle is not registered anywhere), so any other
    process that has the zone attached counts as a possible user."""
    from .dashboard.collect import collect_object
    from .inventory import find_segment
    zone_name, _, obj_name = text.lstrip("/").partition("/")
    if not zone_name or not obj_name:
        raise CliError(f"{text!r}: expected ZONE/OBJECT", EXIT_USAGE)
    target = {"name": zone_name}
    seg = find_segment(zone_name)  # before we attach: everyone counted is someone else
    if seg.kind != "zone":
        raise CliError(f"{_describe(target)} is not a shmkit zone", EXIT_NOT_FOUND)
    others = max(seg.nattch, seg.handles)
    z = _open_zone(target, seg)
    try:
        info = _find_object(z, obj_name, f"zone {zone_name!r}")
        reasons = _object_users(collect_object(z, info))
        if others:
            reasons.append(f"zone {zone_name!r} is attached by {others} other process(es), "
                           "which may hold handles on it")
        if reasons and not force:
            raise CliError(f"{info.type} {obj_name!r} may still be in use: "
                           + "; ".join(reasons) + " (use --force: their handles would "
                           "point at freed memory)", EXIT_REFUSED)
        z.destroy(obj_name)
    finally:
        z.close()
    _out(f"removed {info.type} {obj_name!r} from zone {zone_name!r}")


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


def _doctor_facts() -> tuple[dict[str, Any], list[str], list[str]]:
    import fcntl
    import multiprocessing
    import platform
    import tempfile

    from . import __version__, _core, _lifecycle
    from ._ksm import read_text
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
    mounts = read_text("/proc/mounts") or ""
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
                        f"({human_bytes(shm['free'])} free)")

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
        problems.append(f"the registry is not usable: {_lifecycle.registry_problem()}")
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
    facts["overcommit_memory"] = read_text("/proc/sys/vm/overcommit_memory")
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
        _out(f"  size           {human_bytes(d['size'])}, {human_bytes(d['free'])} free "
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
        _out(f"  saves now      {human_bytes(k['saved_bytes'])} (pages_sharing x page size)")
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


# -- serve and cgi: the status page ------------------------------------------------------------

def _args_page_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("zones", nargs="*", metavar="ZONE",
                   help="zones to show: NAME, sysv:KEY or file:PATH (default: every zone "
                        "in /dev/shm)")
    p.add_argument("--match", metavar="PATTERN",
                   help="only segments (and zones) whose name matches this shell pattern")
    p.add_argument("--refresh", type=float, default=1.0, metavar="SECONDS",
                   help="how often the page reads status.json (default 1)")
    p.add_argument("--allow-actions", action="store_true",
                   help="accept actions (remove a segment, gc) from requests carrying the "
                        "token; without it the page is read-only")
    p.add_argument("--token-file", metavar="FILE",
                   help="file holding the token for actions (else $SHMKIT_TOKEN)")


def _args_serve(p: argparse.ArgumentParser) -> None:
    _args_page_common(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_nonneg, default=8765, help="port (default 8765; 0: any free)")
    p.add_argument("--allow-host", action="append", default=[], metavar="HOST[:PORT]",
                   help="also accept this Host header on a loopback address (a proxy's name)")
    p.add_argument("--min-interval", type=float, default=0.1, metavar="SECONDS",
                   help="requests this close together share one reading (default 0.1)")
    p.add_argument("--scan-interval", type=float, default=2.0, metavar="SECONDS",
                   help="how often the segment list (/dev/shm, SysV, /proc) is rescanned "
                        "(default 2); zones and objects are read on every request")
    p.add_argument("--quiet", "-q", action="store_true", help="no request log on stderr")


def _page_options(args: argparse.Namespace) -> tuple[list[ZoneSpec] | None, str | None]:
    from .dashboard.collect import parse_zone_spec
    try:
        zones = [parse_zone_spec(z) for z in args.zones] or None
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    if not 0.1 <= args.refresh <= 3600:
        raise CliError("--refresh must be between 0.1 and 3600 seconds", EXIT_USAGE)
    token = None
    if args.allow_actions:
        token = os.environ.get("SHMKIT_TOKEN")
        if args.token_file:
            try:
                with open(args.token_file) as f:
                    token = f.read().strip()
            except OSError as e:
                raise CliError(f"--token-file: {e.strerror}: {args.token_file}",
                               EXIT_USAGE) from None
        if token is not None and len(token) < 16:
            raise CliError("the token must be at least 16 characters", EXIT_USAGE)
    elif args.token_file:
        raise CliError("--token-file without --allow-actions: actions stay off", EXIT_USAGE)
    return zones, token


def _cmd_serve(args: argparse.Namespace) -> int:
    import secrets
    import signal

    from .dashboard.app import App
    from .dashboard.collect import Collector
    from .dashboard.server import make_server
    zones, token = _page_options(args)
    if args.allow_actions and token is None:
        token = secrets.token_urlsafe(24)
    if args.min_interval < 0 or args.scan_interval < 0:
        raise CliError("intervals must be >= 0", EXIT_USAGE)
    collector = Collector(zones, match=args.match, min_interval=args.min_interval,
                          scan_interval=args.scan_interval)
    app = App(collector, refresh_ms=int(args.refresh * 1000), token=token)
    try:
        srv = make_server(app, args.host, args.port, quiet=args.quiet,
                          allow_hosts=tuple(args.allow_host))
    except OSError as e:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {e.strerror}",
                       EXIT_ERROR) from None
    address: Any = srv.server_address
    host, port = str(address[0]), int(address[1])
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    try:
        import prometheus_client  # noqa: F401
        metrics = "metrics at /metrics"
    except ImportError:
        metrics = "no /metrics (pip install shmkit[metrics])"
    mode = "actions ON" if token else "read-only"
    _out(f"shmkit serve: {url} ({mode}; {metrics}; Ctrl-C stops)")
    if token and not args.token_file and not os.environ.get("SHMKIT_TOKEN"):
        _out(f"actions token: open {url}#token={token}")
    sys.stdout.flush()
    if host not in ("127.0.0.1", "::1", "localhost"):
        _err(f"serve: listening on {host}: anyone who reaches this address sees the page")

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return EXIT_OK


def _args_cgi(p: argparse.ArgumentParser) -> None:
    _args_page_common(p)


def _cmd_cgi(args: argparse.Namespace) -> int:
    from .dashboard.cgi import run_cgi
    zones, token = _page_options(args)
    if args.allow_actions and token is None:
        raise CliError("cgi --allow-actions needs a token: --token-file FILE or $SHMKIT_TOKEN",
                       EXIT_USAGE)
    return run_cgi(zones=zones, match=args.match, token=token,
                   refresh_ms=int(args.refresh * 1000))


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


def _args_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cflags", action="store_true", help="compiler flags (-I...)")
    p.add_argument("--libs", action="store_true", help="linker flags (-L... -Wl,-rpath,... -lshmkit)")
    p.add_argument("--includedir", action="store_true", help="the directory of shmkit.h")
    p.add_argument("--libdir", action="store_true", help="the directory of libshmkit.so")
    p.add_argument("--pkgconfigdir", action="store_true",
                   help="the directory of shmkit.pc (for PKG_CONFIG_PATH)")


def _cmd_config(args: argparse.Namespace) -> int:
    from ._capi import config_main
    return config_main(args)


#: name -> (one-line help, add_arguments(parser), run(args) -> exit code)
COMMANDS = {
    "ls": ("list POSIX and SysV segments, marking shmkit's own; or a zone's objects",
           _args_ls, _cmd_ls),
    "info": ("attributes of a segment; for a zone also its header, allocator and objects; "
             "ZONE/OBJECT: one object's statistics", _args_info, _cmd_info),
    "check": ("verify every invariant of a zone (exit 1 on problems)", _args_check, _cmd_check),
    "rm": ("remove segments (shmkit's and unattached ones unless --force), or ZONE/OBJECT",
           _args_rm, _cmd_rm),
    "gc": ("remove what its lifecycle says should be gone and whose owners are dead",
           _args_gc, _cmd_gc),
    "dump": ("hex (or raw) bytes of a range of a segment, like shmop_read", _args_dump,
             _cmd_dump),
    "doctor": ("limits, /dev/shm, KSM, start method, xattrs: is this machine ready?",
               _args_doctor, _cmd_doctor),
    "serve": ("the live status page of segments, zones and objects (read-only, localhost)",
              _args_serve, _cmd_serve),
    "cgi": ("the status page as a CGI program (busybox httpd, boa, lighttpd)", _args_cgi,
            _cmd_cgi),
    "bench": ("run the benchmark suite (benchmarks/)", _args_passthrough, _cmd_bench),
    "demo": ("a live demonstration across several processes", _args_passthrough, _cmd_demo),
    "config": ("build flags of the C API (shmkit.h, libshmkit.so), like pkg-config; see "
               "docs/c.md", _args_config, _cmd_config),
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
