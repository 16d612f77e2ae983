"""The status document: everything the status page, ``/status.json``, ``/metrics`` and
``shmkit cgi`` show, built from shmkit's public API only.

``collect_status()`` returns a plain dict (JSON-ready, schema in docs/serve.md):

- ``segments``: every POSIX and SysV segment as ``shmkit ls`` lists it
  (``shmkit.inventory``);
- ``zones``: for each zone its header, allocator statistics, slab classes and every
  named object with its ``statistics()``; a zone that is missing, vanishes while being
  read, is still initialising, was made by another layout or is corrupted is an entry
  with a ``state`` that says so (and the checker's problems), never an exception;
- ``alerts``: what a person should look at first (corruption, dead lock holders, stale
  segments, full queues, a nearly full /dev/shm).

Reading takes no lock that a fast path takes.  Queue and dict statistics are plain loads
of shared counters; locks, boards and counters too.  The zone mutex (which only
allocation and the directory take, never a put, get, lookup or acquire) is held for
microseconds by ``zone.stats()``, ``zone.objects()`` and each object's lookup.  Zones are
opened as an *observer*: the page does not show up as a zone's last attacher in ``shmkit
ls``, and it holds nothing between two reads (no handle that would keep a zone with
lifecycle ``unlink_on_last_close`` alive).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..zone import ObjectInfo, Zone

__all__ = ["SCHEMA", "ZoneSpec", "parse_zone_spec", "check_zone_name", "statistics_of",
           "collect_status", "collect_zone", "collect_object", "Collector"]

#: version of the document's shape; bumped when a field changes meaning or goes away
SCHEMA = 1

PAGE = 4096                    #: layout.h SHK_PAGE
OPEN_TIMEOUT = 0.05            #: seconds to wait for a zone that is being initialised

#: zone header states (layout.h enum shk_zone_state)
ZONE_STATES = {0: "uninitialised", 1: "initialising", 2: "ready", 3: "corrupt"}

#: BoardStats fields that describe the reading handle, not the board: the page's own
#: handle has nothing to say there
BOARD_HANDLE_FIELDS = ("is_writer", "copies", "retries", "fallbacks", "pins", "waits",
                       "sleeps", "spin_hits", "spin_budget_ns")

#: a queue this full (depth / max_messages or bytes / capacity) is an alert
QUEUE_ALERT_FULL = 0.9
DEV_SHM_ALERT_FULL = 0.95


def statistics_of(obj: Any) -> Any:
    """``obj.statistics()``, or ``obj.stats()`` for objects that predate the name
    (Zone): one helper so that either spelling works."""
    f = getattr(obj, "statistics", None)
    if f is None:
        f = obj.stats
    return f()


def _asdict(stats: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    mapping: Any = stats  # (a plain dict of statistics)
    return dict(mapping)


# -- which zones -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ZoneSpec:
    """A zone to show: a POSIX name, a SysV key or a file path."""

    backend: str            #: "posix", "sysv" or "file"
    name: str | None = None
    key: int | None = None
    path: str | None = None

    @property
    def label(self) -> str:
        if self.backend == "posix":
            return self.name or ""
        if self.backend == "sysv":
            return f"sysv:0x{(self.key or 0) & 0xffffffff:08x}"
        return f"file:{self.path}"


def check_zone_name(name: str) -> str:
    """A POSIX zone name as it may come from a request: 1..255 bytes, no '/', no NUL, not
    '.' or '..'.  ValueError otherwise."""
    if not isinstance(name, str) or not name:
        raise ValueError("a zone name is empty")
    if "\0" in name:
        raise ValueError("a zone name contains a NUL byte")
    if "/" in name or name in (".", "..") or ".." in name.split("/"):
        raise ValueError(f"a zone name cannot contain '/' or be '.' or '..': {name!r}")
    if len(name.encode("utf-8", "surrogateescape")) > 255:
        raise ValueError("a zone name is longer than 255 bytes")
    return name


def parse_zone_spec(text: str) -> ZoneSpec:
    """``NAME`` (POSIX, as in /dev/shm), ``sysv:KEY`` (decimal or 0x hex) or
    ``file:PATH``."""
    if text.startswith("sysv:"):
        try:
            key = int(text[5:], 0)
        except ValueError:
            raise ValueError(f"not a SysV key: {text[5:]!r}") from None
        if key == 0:
            raise ValueError("key 0 is IPC_PRIVATE: a zone cannot be found by it")
        return ZoneSpec("sysv", key=key)
    if text.startswith("file:"):
        if not text[5:]:
            raise ValueError("file: needs a path")
        return ZoneSpec("file", path=os.path.abspath(text[5:]))
    return ZoneSpec("posix", name=check_zone_name(text[1:] if text.startswith("/") else text))


def _open_zone(spec: ZoneSpec) -> Zone:
    """Attach without creating anything, as an observer (no attach/detach events in the
    segment's record, so ``shmkit ls`` keeps showing the real last user)."""
    from .. import Segment, Zone
    # Segment(_observer=True) is the hook segment.py keeps for tools that look without
    # using; Zone(segment=) takes the opened segment as the memfd attach path does.
    if spec.backend == "posix":
        seg = Segment(spec.name, "w", backend="posix", _allow_empty=True, _observer=True)
    elif spec.backend == "file":
        seg = Segment(spec.path, "w", backend="file", _allow_empty=True, _observer=True)
    else:
        seg = Segment(None, "w", backend="sysv", key=spec.key, _observer=True)
    try:
        return Zone(None, 0, backend=spec.backend, segment=seg, timeout=OPEN_TIMEOUT)
    except BaseException:
        seg.close()
        raise


# -- one object --------------------------------------------------------------------------------

def _open_object(zone: Zone, info: ObjectInfo) -> tuple[Any, Callable[[], object] | None]:
    """A handle on the object ``info`` names and how to let go of it; None for kinds
    that cannot be opened without the parameters they were made with."""
    import shmkit
    name, kind = info.name, info.type
    if kind == "queue":
        q = shmkit.Queue(name, zone=zone, create=False)
        return q, q.detach
    if kind == "dict":
        d = shmkit.Dict(name, zone=zone, create=False)
        return d, d.close
    simple = {"lock": "Lock", "rlock": "RLock", "rwlock": "RWLock", "event": "Event",
              "condition": "Condition", "counter": "Counter"}
    if kind in simple:
        h = getattr(shmkit, simple[kind])(name, zone=zone, create=False)
        return h, h.close
    if kind == "semaphore":
        try:
            h = shmkit.Semaphore(name, zone=zone, create=False)
        except shmkit.ObjectTypeError:  # it is a BoundedSemaphore (same directory type)
            h = shmkit.BoundedSemaphore(name, zone=zone, create=False)
        return h, h.close
    if kind == "board":
        b = shmkit.Board(name, None, zone=zone)
        return b, b.close
    if kind == "config":
        c = shmkit.SharedConfig(name, None, zone=zone)
        return c, c.close
    return None, None


def _ndarray_facts(zone: Zone, name: str) -> dict[str, Any] | None:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return None
    import shmkit
    a = shmkit.ndarray(name, zone=zone, create=False)
    try:
        return {"shape": list(a.shape), "dtype": str(a.dtype), "nbytes": int(a.nbytes)}
    finally:
        del a


def collect_object(zone: Zone, info: ObjectInfo) -> dict[str, Any]:
    """One directory entry and its statistics (``statistics`` is None for kinds whose
    handle needs creation parameters: value, array, barrier, raw)."""
    entry: dict[str, Any] = {"name": info.name, "type": info.type, "size": info.size,
             "offset": info.offset,
             "creator_pid": info.creator_pid, "created": info.created_ns / 1e9,
             "statistics": None, "error": None}
    try:
        if info.type == "ndarray":
            entry["statistics"] = _ndarray_facts(zone, info.name)
            return entry
        handle, release = _open_object(zone, info)
        if handle is None or release is None:
            return entry
        try:
            st = _asdict(statistics_of(handle))
        finally:
            release()
        if info.type == "queue":
            st["members"] = max(0, st["members"] - 1)  # not our own short-lived handle
        elif info.type in ("board", "config"):
            for k in BOARD_HANDLE_FIELDS:
                st.pop(k, None)
        entry["statistics"] = st
    except Exception as e:  # a broken or vanished object is shown as such
        entry["error"] = f"{type(e).__name__}: {e}"
    return entry


# -- one zone ------------------------------------------------------------------------------------

def _slab_capacity(size: int) -> int:
    """Chunks a slab page of this class hands out (layout.h: classes with more than 64
    chunks per page keep their bitmap in the page's first chunks)."""
    per_page = PAGE // size
    if per_page <= 64:
        return per_page
    return per_page - -(-(per_page // 8) // size)


def _zone_numbers(st: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    usable = st["total_pages"] * PAGE
    used = max(0, usable - st["free_bytes"])
    allocator = {k: v for k, v in st.items() if k != "classes"}
    allocator.update(used_pages=st["total_pages"] - st["free_pages"], used_bytes=used,
                     usable_bytes=usable,
                     used_percent=round(100.0 * used / usable, 1) if usable else 0.0)
    classes = []
    for c in st["classes"]:
        cap = _slab_capacity(c["size"])
        classes.append({"size": c["size"], "pages": c["total"] // cap if cap else 0,
                        "total": c["total"], "used": c["used"],
                        "free": max(0, c["total"] - c["used"]), "reqs": c["reqs"],
                        "fails": c["fails"]})
    return allocator, classes


def _problems(zone: Zone) -> list[str]:
    try:
        return zone.check()
    except Exception as e:
        return [f"{type(e).__name__}: {e}"]


def collect_zone(spec: ZoneSpec, *, listed: bool = False) -> dict[str, Any]:
    """One zone's entry.  ``listed``: the zone was just seen in /dev/shm, so a missing
    one has vanished ("gone") rather than never existed ("not-found")."""
    from .. import (CorruptedError, ObjectNotFoundError, ShmkitTimeoutError,
                    VersionMismatchError, ZoneInitError)
    entry: dict[str, Any] = {"name": spec.label, "backend": spec.backend, "state": None,
             "error": None,
             "problems": [], "header": None, "allocator": None, "slab_classes": [],
             "objects": []}
    try:
        zone = _open_zone(spec)
    except FileNotFoundError as e:
        entry.update(state="gone" if listed else "not-found", error=str(e))
        return entry
    except ShmkitTimeoutError as e:
        entry.update(state="initialising", error=str(e))
        return entry
    except ZoneInitError as e:
        entry.update(state="init-failed", error=str(e))
        return entry
    except ObjectNotFoundError as e:  # its initialiser died (or never ran): nothing to read
        entry.update(state="uninitialised", error=str(e))
        return entry
    except VersionMismatchError as e:
        entry.update(state="version-mismatch", error=str(e))
        return entry
    except CorruptedError as e:
        entry.update(state="corrupt", error=str(e), problems=[str(e)])
        return entry
    except PermissionError as e:
        entry.update(state="no-access", error=str(e))
        return entry
    except Exception as e:
        entry.update(state="error", error=f"{type(e).__name__}: {e}")
        return entry
    try:
        h = zone.info()
        tag = h.get("tag") or b""
        entry["header"] = {
            "state": ZONE_STATES.get(h["state"], str(h["state"])), "size": h["size"],
            "declared_size": h["declared_size"], "max_size": h["max_size"],
            "tag": tag.decode("utf-8", "backslashreplace") if isinstance(tag, bytes) else tag,
            "creator_pid": h["creator_pid"], "created": h["created_ns"] / 1e9,
            "generation": h["generation"], "recoveries": h["recoveries"],
            "extents": h.get("nextents")}
        entry["state"] = entry["header"]["state"]
        if entry["state"] == "corrupt":
            entry["error"] = "the zone is marked corrupt"
            entry["problems"] = _problems(zone)
            return entry
        try:
            entry["allocator"], entry["slab_classes"] = _zone_numbers(
                _asdict(statistics_of(zone)))
            objects = zone.objects()
        except CorruptedError as e:
            entry.update(state="corrupt", error=str(e), problems=_problems(zone))
            return entry
        entry["objects"] = [collect_object(zone, o)
                            for o in sorted(objects, key=lambda o: o.name)]
    except Exception as e:
        entry.update(state="error", error=f"{type(e).__name__}: {e}")
    finally:
        zone.close()
    return entry


# -- the whole document -------------------------------------------------------------------------

def dev_shm_space(path: str = "/dev/shm") -> dict[str, Any]:
    try:
        v = os.statvfs(path)
    except OSError as e:
        return {"path": path, "error": e.strerror}
    size, free = v.f_blocks * v.f_frsize, v.f_bavail * v.f_frsize
    return {"path": path, "size": size, "free": free, "used": size - free,
            "used_percent": round(100.0 * (size - free) / size, 1) if size else 0.0}


def collect_segments(match: str | None = None) -> list[dict[str, Any]]:
    from ..inventory import list_segments
    return [s.as_dict() for s in list_segments(match)]


def zones_of(segments: list[dict[str, Any]]) -> list[ZoneSpec]:
    """The POSIX zones among listed segments (SysV and file zones are shown when named)."""
    return [ZoneSpec("posix", name=s["name"]) for s in segments
            if s["backend"] == "posix" and s["kind"] == "zone"]


def _alerts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def alert(level: str, where: str, text: str) -> None:
        out.append({"level": level, "where": where, "text": text})

    shm = doc["dev_shm"]
    if shm.get("size") and shm["free"] < (1 - DEV_SHM_ALERT_FULL) * shm["size"]:
        alert("warning", shm["path"], f"{shm['used_percent']}% full")
    for s in doc["segments"]:
        if "stale" in s["status"]:
            alert("warning", s["display_name"], "stale: its lifecycle says it should be gone "
                  "(shmkit gc removes it)")
    for z in doc["zones"]:
        zn = z["name"]
        if z["state"] != "ready":
            level = "error" if z["state"] in ("corrupt", "init-failed", "uninitialised",
                                              "version-mismatch", "error") else "warning"
            alert(level, zn, f"zone {z['state']}" + (f": {z['error']}" if z["error"] else ""))
            continue
        for o in z["objects"]:
            where = f"{zn}/{o['name']}"
            if o["error"]:
                alert("error", where, o["error"])
                continue
            st = o["statistics"] or {}
            if o["type"] in ("lock", "rlock") and st.get("owner_alive") is False:
                alert("error", where, f"held by pid {st['owner_pid']}, which is dead")
            if o["type"] in ("board", "config") and st.get("writer_pid") and \
                    st.get("writer_alive") is False:
                alert("warning", where, f"writer pid {st['writer_pid']} is dead")
            if o["type"] == "queue":
                full = st["bytes_used"] / st["capacity"] if st["capacity"] else 0
                if st["max_messages"]:
                    full = max(full, st["depth"] / st["max_messages"])
                if full >= QUEUE_ALERT_FULL:
                    alert("warning", where, f"{round(100 * full)}% full ({st['depth']} "
                          "messages waiting)")
                if st["closed"]:
                    alert("info", where, "closed")
    return out


def collect_status(zones: list[ZoneSpec] | None = None, *, match: str | None = None,
                   segments: list[dict[str, Any]] | None = None, actions: bool = False) -> dict[str, Any]:
    """The status document.

    ``zones``: the zones to show (default: every POSIX zone in /dev/shm, or those whose
    name matches ``match``).  ``match``: a shell pattern that limits the segment list (as
    ``shmkit ls PATTERN``).  ``segments``: an already collected segment list to use
    (the server refreshes it less often than the zones, see Collector).  ``actions``:
    whether the serving program accepts actions (shown to the page, nothing more)."""
    t = time.time()
    if segments is None:
        segments = collect_segments(match)
    listed = {z.label for z in zones_of(segments)}
    if zones is None:
        specs = zones_of(segments)
    else:
        specs = [z for z in zones if match is None or z.backend != "posix"
                 or fnmatch.fnmatchcase(z.name or "", match)]
    doc = {
        "schema": SCHEMA,
        "shmkit": _version(),
        "host": socket.gethostname(),
        "time": round(t, 3),
        "actions": {"enabled": bool(actions)},
        "dev_shm": dev_shm_space(),
        "segments": segments,
        "zones": [collect_zone(s, listed=s.label in listed) for s in specs],
    }
    doc["alerts"] = _alerts(doc)
    return doc


def _version() -> str:
    from .. import __version__
    return __version__


class Collector:
    """What a long-running server uses: collects at most every ``min_interval`` seconds
    (concurrent viewers share one document) and rescans /dev/shm, SysV IPC and
    /proc/*/maps (the costly part: ~10-30 ms with a hundred processes) at most every
    ``scan_interval`` seconds.  Zones and objects are read afresh each time."""

    def __init__(self, zones: list[ZoneSpec] | None = None, *, match: str | None = None,
                 min_interval: float = 0.1, scan_interval: float = 2.0,
                 actions: bool = False):
        import threading
        self.zones = zones
        self.match = match
        self.min_interval = min_interval
        self.scan_interval = scan_interval
        self.actions = actions
        self._lock = threading.Lock()
        self._doc: dict[str, Any] | None = None
        self._doc_at = 0.0
        self._segments: list[dict[str, Any]] | None = None
        self._segments_at = 0.0

    def invalidate(self) -> None:
        """Forget what was read (after an action changed it)."""
        with self._lock:
            self._doc = self._segments = None

    def status(self, *, zones: list[str] | None = None, match: str | None = None) -> dict[str, Any]:
        """The document, narrowed by a request's ``zones`` (labels: POSIX names, or the
        ``sysv:``/``file:`` labels of zones this collector was given) and ``match`` (a
        filtered document is collected for that request alone).  A request can narrow
        what the collector shows, never widen it."""
        if zones is not None or match is not None:
            return self._filtered(zones, match)
        with self._lock:
            now = time.monotonic()
            if self._doc is not None and now - self._doc_at < self.min_interval:
                return self._doc
            if self._segments is None or now - self._segments_at >= self.scan_interval:
                self._segments = collect_segments(self.match)
                self._segments_at = now
            self._doc = collect_status(self.zones, match=self.match, segments=self._segments,
                                       actions=self.actions)
            self._doc_at = time.monotonic()
            return self._doc

    def _allowed(self, name: str) -> bool:
        return self.match is None or fnmatch.fnmatchcase(name, self.match)

    def _filtered(self, labels: list[str] | None, match: str | None) -> dict[str, Any]:
        if labels is None:
            specs = self.zones
        elif self.zones is not None:
            specs = [z for z in self.zones if z.label in labels]
        else:  # a request names POSIX zones only: never a SysV key or a file path
            specs = [ZoneSpec("posix", name=check_zone_name(n)) for n in labels]
        with self._lock:
            segments = [s for s in collect_segments(match)
                        if self._allowed(s["display_name"])]
            if specs is not None:
                specs = [z for z in specs if z.backend != "posix" or
                         (self._allowed(z.name or "") and
                          (match is None or fnmatch.fnmatchcase(z.name or "", match)))]
            else:
                specs = zones_of(segments)
            return collect_status(specs, segments=segments, actions=self.actions)
