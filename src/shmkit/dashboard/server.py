"""``shmkit serve``: the status page on the standard library's ThreadingHTTPServer.

Bound to 127.0.0.1 by default, read-only unless given a token.  Each request is handled
in its own thread, at most ``MAX_CONCURRENT`` at a time (more get 503), each connection
with a socket timeout, so a slow or hostile client holds one thread for a while at most.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from .app import MAX_BODY, App, Request, Response

__all__ = ["StatusServer", "make_server", "MAX_CONCURRENT"]

MAX_CONCURRENT = 16
SOCKET_TIMEOUT = 10.0


class _Handler(BaseHTTPRequestHandler):
    server_version = "shmkit"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT

    def _serve(self) -> None:
        srv = cast(StatusServer, self.server)
        if not srv.slots.acquire(blocking=False):
            self._send(Response.text(503, "too many requests at once; try again"))
            return
        try:
            body = b""
            if self.command == "POST":
                read = self._read_body()
                if read is None:
                    return
                body = read
            path, _, query = self.path.partition("?")
            if not path.startswith("/"):  # absolute-form request target
                self._send(Response.text(400, "the request target must be a path"))
                return
            req = Request(self.command, path, query,
                          {k.lower(): v for k, v in self.headers.items()}, body)
            self._send(srv.app.handle(req))
        finally:
            srv.slots.release()

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send(Response.text(411, "send a Content-Length, not chunks"))
            return None
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self._send(Response.text(400, "bad Content-Length"))
            return None
        if n < 0:
            self._send(Response.text(400, "bad Content-Length"))
            return None
        if n > MAX_BODY:
            self._send(Response.text(413, f"body longer than {MAX_BODY} bytes"))
            return None
        return self.rfile.read(n)

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        names = {k.lower() for k, _ in resp.headers}
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(resp.body)))
        for k, v in resp.headers:
            self.send_header(k, v)
        if resp.status >= 400 and (self.command == "POST" or resp.status == 503):
            # a body may be left unread: this connection cannot carry another request
            self.close_connection = True
        self.end_headers()
        if resp.body:
            self.wfile.write(resp.body)

    do_GET = do_HEAD = do_POST = _serve

    def do_PUT(self) -> None:
        self._send(Response.text(405, f"{self.command} is not allowed"))

    do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = do_PUT

    def log_message(self, format: str, *args: Any) -> None:
        if not cast(StatusServer, self.server).quiet:
            line = format % args
            if len(line) > 300:  # a hostile request line is not copied out whole
                line = line[:300] + f"... ({len(line)} characters)"
            sys.stderr.write(f"{self.address_string()} - {line}\n")


class StatusServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the client went away or stalled: its business, not an error here
        super().handle_error(request, client_address)

    def __init__(self, address: tuple[str, int], app: App, *, quiet: bool = False) -> None:
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        self.quiet = quiet
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        super().__init__(address, _Handler)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(app: App, host: str = "127.0.0.1", port: int = 8765, *, quiet: bool = False,
                allow_hosts: tuple[str, ...] = ()) -> StatusServer:
    """Bind (port 0: any free port; ``server.server_address`` says which).  On a loopback
    address, requests must name it in their Host header (or one of ``allow_hosts``)."""
    srv = StatusServer((host, port), app, quiet=quiet)
    bound = srv.server_address[1]
    if _is_loopback(host):
        hosts = {"localhost", "127.0.0.1", "[::1]", host if ":" not in host else f"[{host}]"}
        allowed = {h for h in hosts} | {f"{h}:{bound}" for h in hosts}
        allowed |= {h.lower() for h in allow_hosts}
        app.allowed_hosts = allowed
    return srv
