"""`shmkit cgi` under a real CGI web server: Debian's busybox httpd, started by the test on
a free port with a cgi-bin wrapper script.  Its JSON equals `shmkit serve`'s
/status.json for the same state; the page works from the CGI path in Chromium; bad
requests get 4xx; /metrics parses."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import unique
from serve_helpers import (Browser, Served, need_chromium, spawn_holder, wait_for,
                           without_preload)
from segment_helpers import read_line
from test_serve import HOLDER, objects, zone_entry

pytestmark = pytest.mark.timeout(120)

BUSYBOX = shutil.which("busybox") or "/usr/bin/busybox"


@pytest.fixture
def prefix():
    p = unique("shmkit-cgitest")
    yield p
    for n in os.listdir("/dev/shm"):
        if n.startswith(p):
            try:
                os.unlink(f"/dev/shm/{n}")
            except FileNotFoundError:
                pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BusyboxHttpd:
    """busybox httpd -f -p 127.0.0.1:PORT -h ROOT with ROOT/cgi-bin/shmkit running
    ``python -m shmkit cgi ARGS``."""

    def __init__(self, root, *cgi_args):
        self.root = root
        self.cgi_args = cgi_args
        self.proc = None

    def __enter__(self):
        if not os.access(BUSYBOX, os.X_OK):
            pytest.skip("busybox is not installed (apt-get install busybox; .ci/run does)")
        cgi = self.root / "cgi-bin"
        cgi.mkdir(parents=True, exist_ok=True)
        args = " ".join(f"'{a}'" for a in self.cgi_args)
        script = cgi / "shmkit"
        # busybox runs without the sanitizer runtime `make sanitize` preloads into Python;
        # the Python it starts needs it again
        preload = os.environ.get("LD_PRELOAD")
        env_line = f"export LD_PRELOAD='{preload}'\n" if preload else ""
        script.write_text(f"#!/bin/sh\n{env_line}exec '{sys.executable}' -m shmkit cgi {args}\n")
        script.chmod(0o755)
        (self.root / "index.html").write_text("<p>busybox</p>\n")
        for _ in range(5):  # the port may be taken between choosing and binding it
            self.port = _free_port()
            self.proc = subprocess.Popen([BUSYBOX, "httpd", "-f", "-p",
                                          f"127.0.0.1:{self.port}", "-h", str(self.root)],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         env=without_preload())
            try:
                wait_for(lambda: self.proc.poll() is not None or self._accepts(), timeout=10,
                         what="busybox httpd to listen")
            except BaseException:
                self.__exit__()
                raise
            if self.proc.poll() is None:
                return self
        raise AssertionError(f"busybox httpd would not start: {self.proc.stderr.read()}")

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def request(self, method, path, headers=None, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            c.putrequest(method, path, skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                c.putheader(k, v)
            if body is not None:
                c.putheader("Content-Length", str(len(body)))
            c.endheaders(body)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)
            self.proc.stdout.close()
            self.proc.stderr.close()


def comparable(doc: dict) -> dict:
    """The document without what differs between two readings of the same state: the
    time of reading and /dev/shm's free space (other programs use /dev/shm too)."""
    doc = dict(doc)
    doc.pop("time")
    doc.pop("dev_shm")
    return doc


def test_cgi_json_equals_serve_json_for_the_same_state(prefix, procs, tmp_path):
    name = f"{prefix}-app"
    holder = spawn_holder(HOLDER, name)
    procs.append(holder)
    pid = int(read_line(holder))
    with BusyboxHttpd(tmp_path / "www", "--match", f"{prefix}*") as httpd, \
            Served("--match", f"{prefix}*", "--min-interval", "0", "--scan-interval", "0") as srv:
        status, headers, body = httpd.request("GET", "/cgi-bin/shmkit/status.json")
        assert status == 200 and headers["content-type"] == "application/json", body[:300]
        via_cgi = json.loads(body)
        via_serve = srv.json()
        assert comparable(via_cgi) == comparable(via_serve)
        z = zone_entry(via_cgi, name)
        assert z["state"] == "ready" and objects(z)["jobs-lock"]["statistics"]["owner_pid"] == pid
        # the state changes: both see the change the same way
        holder.stdin.close()
        holder.wait(30)
        again_cgi = json.loads(httpd.request("GET", "/cgi-bin/shmkit/status.json")[2])
        assert objects(zone_entry(again_cgi, name))["jobs-lock"]["statistics"]["owner_alive"] is False
        assert comparable(again_cgi) == comparable(srv.json())
        # the filters work the same way through CGI
        q = f"?zone={name}&match={prefix}-a*"
        assert comparable(json.loads(httpd.request("GET", "/cgi-bin/shmkit/status.json" + q)[2])) \
            == comparable(srv.json("/status.json" + q))


def test_cgi_page_metrics_and_bad_requests(prefix, procs, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families
    name = f"{prefix}-app"
    holder = spawn_holder(HOLDER, name)
    procs.append(holder)
    read_line(holder)
    with BusyboxHttpd(tmp_path / "www", "--match", f"{prefix}*") as httpd:
        # (busybox takes a URL that ends in '/' for a directory: the page is the script's URL)
        status, headers, body = httpd.request("GET", "/cgi-bin/shmkit")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b'name="shmkit-base" content="/cgi-bin/shmkit"' in body
        assert "script-src 'sha256-" in headers["content-security-policy"]
        status, headers, body = httpd.request("GET", "/cgi-bin/shmkit/metrics")
        assert status == 200
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        assert {"shmkit_queue_depth", "shmkit_lock_held", "shmkit_zone_ready"} <= names
        for method, path, want in [
                ("GET", "/cgi-bin/shmkit/nope", 404),
                ("GET", "/cgi-bin/shmkit/status.json?zone=../../etc", 400),
                ("GET", "/cgi-bin/shmkit/status.json?zone=a%00b", 400),
                ("GET", "/cgi-bin/shmkit/status.json?what=1", 400),
                ("GET", "/cgi-bin/shmkit/status.json?match=" + "x" * 3000, 414),
                ("POST", "/cgi-bin/shmkit/actions/gc", 403),
                ("POST", "/cgi-bin/shmkit/status.json", 405)]:
            got = httpd.request(method, path, body=b"{}" if method == "POST" else None)[0]
            assert got == want, (method, path[:60], got)
        # whatever busybox itself makes of a traversal, nothing outside is served
        status, _, body = httpd.request("GET", "/cgi-bin/shmkit/../../../etc/passwd")
        assert 400 <= status < 500 and b"root:" not in body
        # the page draws itself from the CGI's status.json, in a real browser
        need_chromium()
        with Browser() as b:
            b.page.goto(f"http://127.0.0.1:{httpd.port}/cgi-bin/shmkit")
            b.page.get_by_text(name, exact=True).first.wait_for(timeout=15_000)
            wait_for(lambda: "depth 4" in b.page.locator('tr[data-object="jobs"]').inner_text(),
                     what="the queue's depth from the CGI")
            assert not b.errors, b.errors
    holder.stdin.close()


def test_cgi_actions_with_a_token_from_the_environment(prefix, tmp_path):
    from shmkit import Segment
    token = "cgi-token-" + os.urandom(8).hex()
    idle = Segment(f"{prefix}-idle", "x", 4096)
    idle.close()
    env = dict(os.environ, SHMKIT_TOKEN=token, REQUEST_METHOD="POST", GATEWAY_INTERFACE="CGI/1.1",
               SCRIPT_NAME="/cgi-bin/shmkit", PATH_INFO="/actions/rm",
               CONTENT_TYPE="application/json", HTTP_X_SHMKIT_TOKEN=token)
    body = json.dumps({"name": f"{prefix}-idle"}).encode()
    env["CONTENT_LENGTH"] = str(len(body))

    def cgi(*args, **extra):
        return subprocess.run([sys.executable, "-m", "shmkit", "cgi", *args], input=body,
                              capture_output=True, timeout=60, env=dict(env, **extra))
    r = cgi()  # read-only without --allow-actions
    assert r.stdout.startswith(b"Status: 403") and os.path.exists(f"/dev/shm/{prefix}-idle")
    r = cgi("--allow-actions", HTTP_X_SHMKIT_TOKEN="wrong-token-123456")
    assert r.stdout.startswith(b"Status: 403") and os.path.exists(f"/dev/shm/{prefix}-idle")
    r = cgi("--allow-actions")
    assert r.stdout.startswith(b"Status: 200"), r.stdout
    assert not os.path.exists(f"/dev/shm/{prefix}-idle")
    head, _, payload = r.stdout.partition(b"\r\n\r\n")
    assert json.loads(payload)["ok"] is True
    assert b"Content-Length: %d" % len(payload) in head
