"""Requests to answers, for both ``shmkit serve`` (server.py) and ``shmkit cgi`` (cgi.py).

Routes (every other path is 404):

    GET  /               the status page (HTML; draws itself from status.json)
    GET  /status.json    the status document (collect.py); ?zone=NAME (repeatable)
                         and ?match=PATTERN narrow it
    GET  /metrics        Prometheus text (needs the `metrics` extra)
    GET  /healthz        "ok"
    POST /actions/rm     remove one segment: {"name": N} or {"shmid": I}   } only when
    POST /actions/gc     run gc: {"dry_run": bool}                          } started with
                                                                              actions and
                                                                              a token
Everything from the request is validated before use: a path with '..', a NUL, a
backslash or an encoded '/' is 400; a query string over 2 KiB is 414; unknown or
repeated-beyond-reason parameters and bad names are 400; bodies over 4 KiB are 413.
A failure while answering is a 500 for that request only.
"""

from __future__ import annotations

import hmac
import json
import sys
import traceback
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from .collect import Collector, check_zone_name

__all__ = ["Request", "Response", "App", "MAX_QUERY", "MAX_BODY"]

MAX_QUERY = 2048          #: bytes of query string
MAX_BODY = 4096           #: bytes of request body (actions only)
MAX_ZONES = 16            #: zone= parameters in one request
MAX_PATTERN = 255

_READ_PARAMS = {"zone", "match"}


@dataclass
class Request:
    method: str
    path: str                      #: as received, still percent-encoded
    query: str = ""                #: as received
    headers: dict[str, Any] = field(default_factory=dict)   #: lower-case names
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def text(cls, status: int, message: str) -> "Response":
        return cls(status, (message.rstrip("\n") + "\n").encode("utf-8"))

    @classmethod
    def json(cls, status: int, obj: object) -> "Response":
        return cls(status, json.dumps(obj, indent=1).encode("utf-8") + b"\n",
                   "application/json")


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
           413: "Payload Too Large", 414: "URI Too Long", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable"}


def clean_path(raw: str) -> str:
    """The decoded path, or BadRequest: no NUL, no backslash, no '..' or '.' segment, no
    encoded '/', valid UTF-8, absolute."""
    if not raw.startswith("/"):
        raise BadRequest(400, "the path must start with '/'")
    low = raw.lower()
    if "%2f" in low or "%5c" in low or "%00" in low:
        raise BadRequest(400, "encoded '/', '\\' or NUL in the path")
    try:
        path = urllib.parse.unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(400, "the path is not UTF-8") from None
    if "\0" in path or "\\" in path:
        raise BadRequest(400, "NUL or backslash in the path")
    if any(seg in (".", "..") for seg in path.split("/")):
        raise BadRequest(400, "'.' or '..' in the path")
    return path


def parse_query(query: str, allowed: set[str]) -> dict[str, Any]:
    if len(query.encode("utf-8", "surrogateescape")) > MAX_QUERY:
        raise BadRequest(414, f"query string longer than {MAX_QUERY} bytes")
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False,
                                       errors="strict", max_num_fields=MAX_ZONES + 4)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(400, f"bad query string: {e}") from None
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k not in allowed:
            raise BadRequest(400, f"unknown parameter {k!r} (known: {', '.join(sorted(allowed)) or 'none'})")
        if "\0" in v:
            raise BadRequest(400, f"NUL in parameter {k!r}")
        out.setdefault(k, []).append(v)
    return out


def _read_filters(params: dict[str, Any]) -> tuple[list[str] | None, str | None]:
    zones: list[str] | None = None
    if "zone" in params:
        if len(params["zone"]) > MAX_ZONES:
            raise BadRequest(400, f"at most {MAX_ZONES} zone= parameters")
        zones = []
        for name in params["zone"]:
            try:
                if not name.startswith(("sysv:", "file:")):
                    check_zone_name(name)
            except ValueError as e:
                raise BadRequest(400, f"zone={name!r}: {e}") from None
            zones.append(name)
    match = None
    if "match" in params:
        if len(params["match"]) != 1:
            raise BadRequest(400, "match= may be given once")
        match = params["match"][0]
        if not match or len(match) > MAX_PATTERN or "/" in match:
            raise BadRequest(400, f"match= must be a shell pattern of 1..{MAX_PATTERN} "
                             "characters without '/'")
    return zones, match


class App:
    """``App(collector, base="", refresh_ms=1000, token=None, allowed_hosts=None)``.

    Actions are enabled exactly when ``token`` is given (a non-empty string): requests
    must carry it in ``X-Shmkit-Token`` (or ``Authorization: Bearer``).  With
    ``allowed_hosts`` (a set of ``host[:port]``), a request whose Host header is not one
    of them is refused (DNS rebinding against a server bound to 127.0.0.1)."""

    def __init__(self, collector: Collector, *, base: str = "", refresh_ms: int = 1000,
                 token: str | None = None, allowed_hosts: set[str] | None = None) -> None:
        self.collector = collector
        self.base = base
        self.refresh_ms = refresh_ms
        self.token = token or None
        self.allowed_hosts = allowed_hosts
        collector.actions = self.token is not None

    # -- entry point --------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        try:
            resp = self._route(req)
        except BadRequest as e:
            resp = Response.text(e.status, str(e))
        except Exception as e:  # this request fails, the server goes on
            traceback.print_exc(file=sys.stderr)
            resp = Response.text(500, f"internal error: {type(e).__name__}: {e}")
        resp.headers += [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                         ("Referrer-Policy", "no-referrer")]
        if req.method == "HEAD":
            resp.headers.append(("Content-Length", str(len(resp.body))))
            resp.body = b""
        return resp

    def _route(self, req: Request) -> Response:
        if self.allowed_hosts is not None:
            host = req.headers.get("host")
            if host is not None and host.lower() not in self.allowed_hosts:
                raise BadRequest(400, f"unexpected Host header {host!r} (start the server "
                                 "with --allow-host to accept it)")
        path = clean_path(req.path)
        routes = {"/": ("GET", self._page), "/index.html": ("GET", self._page),
                  "/status.json": ("GET", self._status), "/metrics": ("GET", self._metrics),
                  "/healthz": ("GET", self._health), "/actions/rm": ("POST", self._act_rm),
                  "/actions/gc": ("POST", self._act_gc)}
        route = routes.get(path)
        if route is None:
            raise BadRequest(404, f"no such page: {path}")
        method, handler = route
        allowed = {"GET", "HEAD"} if method == "GET" else {"POST"}
        if req.method not in allowed:
            resp = Response.text(405, f"{req.method} is not allowed here")
            resp.headers.append(("Allow", ", ".join(sorted(allowed))))
            return resp
        return handler(req)

    # -- reading ----------------------------------------------------------------------------
    def _page(self, req: Request) -> Response:
        from .page import content_security_policy, render_page
        parse_query(req.query, _READ_PARAMS)  # the page passes them on to status.json
        resp = Response(200, render_page(self.base, self.refresh_ms), "text/html; charset=utf-8")
        resp.headers += [("Content-Security-Policy", content_security_policy()),
                         ("X-Frame-Options", "DENY")]
        return resp

    def status(self, query: str = "") -> dict[str, Any]:
        zones, match = _read_filters(parse_query(query, _READ_PARAMS))
        shown = {z.label for z in self.collector.zones or ()}
        for name in zones or ():
            if name.startswith(("sysv:", "file:")) and name not in shown:
                raise BadRequest(400, f"zone={name!r}: SysV and file zones are shown only when "
                                 "named on the command line")
        return self.collector.status(zones=zones, match=match)

    def _status(self, req: Request) -> Response:
        return Response.json(200, self.status(req.query))

    def _metrics(self, req: Request) -> Response:
        doc = self.status(req.query)
        try:
            from .metrics import CONTENT_TYPE, render_metrics
        except ImportError as e:
            return Response.text(501, str(e))
        return Response(200, render_metrics(doc), CONTENT_TYPE)

    def _health(self, req: Request) -> Response:
        parse_query(req.query, set())
        return Response.text(200, "ok")

    # -- actions ----------------------------------------------------------------------------
    def _authorise(self, req: Request) -> dict[str, Any]:
        if self.token is None:
            raise BadRequest(403, "actions are disabled: this page is read-only (start it "
                             "with --allow-actions and a token)")
        given = req.headers.get("x-shmkit-token")
        auth = req.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                self.token.encode("utf-8")):
            raise BadRequest(403, "missing or wrong token")
        parse_query(req.query, set())
        if len(req.body) > MAX_BODY:
            raise BadRequest(413, f"body longer than {MAX_BODY} bytes")
        ctype = req.headers.get("content-type", "application/json").split(";")[0].strip()
        if ctype != "application/json":
            raise BadRequest(400, "the body must be application/json")
        try:
            body = json.loads(req.body.decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError) as e:
            raise BadRequest(400, f"the body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest(400, "the body must be a JSON object")
        return body

    def _act_rm(self, req: Request) -> Response:
        from .actions import ActionRefused, remove_segment_checked
        body = self._authorise(req)
        if set(body) - {"name", "shmid", "key"} or len(body) != 1:
            raise BadRequest(400, 'give exactly one of {"name": N}, {"shmid": I}, {"key": K}')
        (what, value), = body.items()
        if what == "name":
            if not isinstance(value, str):
                raise BadRequest(400, "name must be a string")
            try:
                check_zone_name(value)
            except ValueError as e:
                raise BadRequest(400, str(e)) from None
        elif not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest(400, f"{what} must be an integer")
        try:
            arguments: dict[str, Any] = {what: value}
            message = remove_segment_checked(**arguments)
        except ActionRefused as e:
            raise BadRequest(e.status, str(e)) from None
        self.collector.invalidate()
        return Response.json(200, {"ok": True, "message": message})

    def _act_gc(self, req: Request) -> Response:
        from ..inventory import collect_garbage
        body = self._authorise(req)
        if set(body) - {"dry_run"} or not isinstance(body.get("dry_run", False), bool):
            raise BadRequest(400, 'the body is {"dry_run": true|false}')
        done = [a.as_dict() for a in collect_garbage(dry_run=body.get("dry_run", False))]
        self.collector.invalidate()
        gone = sum(a["action"] in ("removed", "would remove") for a in done)
        verb = "would remove" if body.get("dry_run") else "removed"
        return Response.json(200, {"ok": True, "actions": done,
                                   "message": f"gc {verb} {gone} item(s)"})
