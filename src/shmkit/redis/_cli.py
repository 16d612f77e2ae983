"""``shmkit ls --url URL`` and ``shmkit info --url URL NAME``: the objects of a
RedisZone (the cli module calls these; they use the public API only).

The command-line layer of the Redis backend (docs/ARCHITECTURE.md): ``shmkit.cli``
imports it, and it takes what both share (exit codes, CliError, sizes) from
``shmkit._cliutil`` and the output functions from its caller, never from ``cli``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._cliutil import EXIT_USAGE, CliError, human_bytes
from .._errors import ObjectNotFoundError
from . import _protocol as P
from ._zone import RedisZone, split_url

if TYPE_CHECKING:
    import argparse

#: what the command line hands in: print a line; print rows under a header; print JSON
Out = Callable[[str], None]
Table = Callable[[list[list[str]], list[str]], None]
AsJson = Callable[[object], None]


class _Observed(Protocol):
    """Any object of a RedisZone: its statistics() is a frozen *Stats dataclass."""

    def statistics(self) -> Any: ...


def _zone_from(url: str, zone: str | None) -> tuple[str, str | None]:
    base, from_url = split_url(url)
    return base, zone or from_url


def _when(ns: int) -> str:
    if not ns:
        return "-"
    return datetime.datetime.fromtimestamp(ns / 1e9).isoformat(sep=" ", timespec="seconds")


def list_zones(url: str) -> list[dict[str, Any]]:
    """Every shmkit zone on the server (or cluster) at ``url``: name and object count."""
    z = RedisZone("_", url)
    try:
        client = z.client
        kwargs = {"target_nodes": "primaries"} if z.cluster else {}
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for key in client.scan_iter(match=P.zone_pattern(), count=1000, **kwargs):
            name = P.zone_of_directory_key(key)
            if name is None or name in seen:
                continue
            seen.add(name)
            out.append({"zone": name, "objects": int(z.execute("HLEN", key))})
        return sorted(out, key=lambda r: r["zone"])
    finally:
        z.close()


def list_objects(url: str, zone: str) -> list[dict[str, Any]]:
    z = RedisZone(zone, url)
    try:
        return [dataclasses.asdict(o) for o in z.objects(sizes=True)]
    finally:
        z.close()


def object_info(url: str, zone: str, name: str) -> dict[str, Any]:
    z = RedisZone(zone, url)
    try:
        entry = z.find(name)
        openers: dict[str, Callable[[], _Observed]] = {
            "queue": lambda: z.queue(name, create=False),
            "dict": lambda: z.dict(name, create=False),
            "lock": lambda: z.lock(name, create=False),
            "rlock": lambda: z.rlock(name, create=False),
            "semaphore": lambda: z.semaphore(name, create=False),
            "event": lambda: z.event(name, create=False),
            "counter": lambda: z.counter(name, create=False),
            "board": lambda: z.board(name, create=False),
            "config": lambda: z.config(name, None, create=False),
        }
        open_ = openers.get(entry.type)
        out = dataclasses.asdict(entry)
        if open_ is not None:
            obj = open_()
            try:
                out["statistics"] = dataclasses.asdict(obj.statistics())
            except ObjectNotFoundError:
                pass
        out["keys"] = sorted(k.decode("utf-8", "backslashreplace")
                             for k in z._object_keys(name))[:1000]
        return out
    finally:
        z.close()


def _size(n: int | None, args: argparse.Namespace) -> str:
    if n is None:
        return "-"
    if getattr(args, "bytes", False):
        return str(n)
    return human_bytes(n)


def cmd_ls(args: argparse.Namespace, out: Out, table: Table, as_json: AsJson) -> int:
    url, zone = _zone_from(args.url, getattr(args, "zone", None) or getattr(args, "pattern", None))
    if zone is None:
        rows = list_zones(url)
        if args.json:
            as_json(rows)
        else:
            table([[r["zone"], str(r["objects"])] for r in rows], ["ZONE", "OBJECTS"])
        return 0
    rows = list_objects(url, zone)
    if args.json:
        as_json(rows)
        return 0
    table([[r["name"], r["type"], "-" if r["items"] is None else str(r["items"]),
            _size(r["bytes"], args), _when(r["created_ns"]),
            r["creator"]] for r in rows],
          ["NAME", "TYPE", "ITEMS", "BYTES", "CREATED", "CREATOR"])
    return 0


def cmd_info(args: argparse.Namespace, out: Out, as_json: AsJson) -> int:
    url, zone = _zone_from(args.url, getattr(args, "zone", None))
    name = args.name
    if zone is None and name and "/" in name:          # ZONE/OBJECT, as for local zones
        zone, _, name = name.partition("/")
        args.name = name
    if zone is None:
        raise CliError("name the zone: --zone NAME or ?zone=NAME in the URL", EXIT_USAGE)
    if not args.name:
        raise CliError("name the object: shmkit info --url URL --zone ZONE NAME", EXIT_USAGE)
    info = object_info(url, zone, args.name)
    if args.json:
        as_json(info)
        return 0
    out(f"{info['type']} {info['name']!r} in Redis zone {zone!r} ({url})")
    out(f"  {'created':<17} {_when(info['created_ns'])}")
    out(f"  {'creator':<17} {info['creator']}")
    for k, v in (info.get("statistics") or {}).items():
        if k != "name":
            out(f"  {k:<17} {v}")
    out(f"  {'keys':<17} {', '.join(info['keys']) or '-'}")
    return 0
