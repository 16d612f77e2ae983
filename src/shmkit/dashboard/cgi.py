"""``shmkit cgi``: the status page as a CGI program (RFC 3875), for a board that already
runs a small web server (boa, busybox httpd, lighttpd) and no Python server.

The web server runs it once per request with the request in the environment
(REQUEST_METHOD, SCRIPT_NAME, PATH_INFO, QUERY_STRING, CONTENT_LENGTH, HTTP_*); it
answers on stdout with a ``Status:`` line, headers and the body, and exits.  The answers
are those of ``shmkit serve`` (app.py): ``SCRIPT_NAME/`` is the page,
``SCRIPT_NAME/status.json`` the document, ``SCRIPT_NAME/metrics`` Prometheus text.
A wrapper script in cgi-bin is all a server needs::

    #!/bin/sh
    exec /usr/bin/python3 -m shmkit cgi
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import IO, Any

from .app import MAX_BODY, REASONS, App, Request, Response
from .collect import Collector, ZoneSpec

__all__ = ["run_cgi", "request_from_environ"]


def request_from_environ(environ: Mapping[str, str], stdin: IO[bytes]) -> Request | Response:
    method = environ.get("REQUEST_METHOD", "GET").upper()
    path = environ.get("PATH_INFO") or "/"
    headers: dict[str, Any] = {}
    for k, v in environ.items():
        if k.startswith("HTTP_"):
            headers[k[5:].replace("_", "-").lower()] = v
    if "CONTENT_TYPE" in environ:
        headers["content-type"] = environ["CONTENT_TYPE"]
    body = b""
    if method == "POST":
        try:
            n = int(environ.get("CONTENT_LENGTH") or "0")
        except ValueError:
            return Response.text(400, "bad Content-Length")
        if n < 0:
            return Response.text(400, "bad Content-Length")
        if n > MAX_BODY:
            return Response.text(413, f"body longer than {MAX_BODY} bytes")
        body = stdin.read(n) if n else b""
    return Request(method, path, environ.get("QUERY_STRING", ""), headers, body)


def write_response(resp: Response, out: IO[bytes]) -> None:
    head = [f"Status: {resp.status} {REASONS.get(resp.status, '')}".rstrip(),
            f"Content-Type: {resp.content_type}"]
    if not any(k.lower() == "content-length" for k, _ in resp.headers):
        head.append(f"Content-Length: {len(resp.body)}")
    head += [f"{k}: {v}" for k, v in resp.headers]
    out.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    out.write(resp.body)
    out.flush()


def run_cgi(*, zones: list[ZoneSpec] | None = None, match: str | None = None,
            token: str | None = None, refresh_ms: int = 1000,
            environ: Mapping[str, str] | None = None, stdin: IO[bytes] | None = None,
            stdout: IO[bytes] | None = None) -> int:
    """Answer the one request in ``environ`` (default: os.environ); returns 0."""
    environ = os.environ if environ is None else environ
    source: IO[bytes] = sys.stdin.buffer if stdin is None else stdin
    sink: IO[bytes] = sys.stdout.buffer if stdout is None else stdout
    if "GATEWAY_INTERFACE" not in environ and "REQUEST_METHOD" not in environ:
        sys.stderr.write("shmkit cgi: not run by a web server (no REQUEST_METHOD in the "
                         "environment); see docs/serve.md\n")
        return 2
    # every request is one process: read everything afresh (no interval, no cache)
    collector = Collector(zones, match=match, min_interval=0.0, scan_interval=0.0)
    app = App(collector, base=environ.get("SCRIPT_NAME", "").rstrip("/"),
              refresh_ms=refresh_ms, token=token)
    req = request_from_environ(environ, source)
    resp = req if isinstance(req, Response) else app.handle(req)
    write_response(resp, sink)
    return 0
