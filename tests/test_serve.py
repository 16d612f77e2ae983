"""`shmkit serve`: the status document, zones in every state, request validation, actions
with a token, /metrics parsed by prometheus_client and equal to statistics().  A real
server process on a free port; zones and objects made by real other processes."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import textwrap

import pytest

import shmkit
from shmkit import Segment, Zone, _core
from conftest import unique
from serve_helpers import Served, spawn_holder, wait_for
from segment_helpers import read_line, spawn_python

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def prefix():
    """A unique name prefix; every POSIX segment under it is removed at teardown."""
    p = unique("shmkit-servetest")
    yield p
    for n in os.listdir("/dev/shm"):
        if n.startswith(p):
            try:
                os.unlink(f"/dev/shm/{n}")
            except FileNotFoundError:
                pass


#: a process that fills a zone with one object of each kind and keeps it (and a lock) held
HOLDER = textwrap.dedent("""
    import os, sys, time
    import shmkit
    name = sys.argv[1]
    z = shmkit.Zone(name, 8 << 20)
    q = z.queue("jobs", 65536)
    for i in range(5):
        q.put(b"m" * (10 * i + 1))
    q.get()
    d = z.dict("cache", 1 << 20)
    for i in range(10):
        d[f"k{i}"] = i
    for i in range(15):
        d.get(f"k{i}")
    d.statistics()              # hands this process's hit/miss counts to the shared ones
    lk = z.lock("jobs-lock")
    lk.acquire()
    z.rlock("re")
    z.counter("requests").add(42)
    b = z.board("camera", 256)
    b.publish(b"frame-1"); b.publish(b"frame-2")
    z.semaphore("slots", 3).acquire()
    z.event("ready").set()
    z.rwlock("table")
    z.condition("cond")
    z.value("temperature", "d", 21.5)
    z.create("blob", 1000)
    z.config("settings").publish({"debug": True})
    print(os.getpid(), flush=True)
    sys.stdin.read()            # until the test closes our stdin (or kills us)
""")


def start_holder(procs, name):
    p = spawn_holder(HOLDER, name)
    procs.append(p)
    pid = int(read_line(p))
    return p, pid


def zone_entry(doc, name):
    (z,) = [z for z in doc["zones"] if z["name"] == name]
    return z


def objects(zentry):
    return {o["name"]: o for o in zentry["objects"]}


# -- the document --------------------------------------------------------------------------------

def test_status_json_shows_segments_zones_and_objects(prefix, procs):
    name = f"{prefix}-app"
    holder, pid = start_holder(procs, name)
    foreign = f"{prefix}-foreign"
    fd = os.open(f"/dev/shm/{foreign}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, 5000)
    os.close(fd)
    with Served("--match", f"{prefix}*") as srv:
        doc = srv.json()
        assert doc["schema"] == 1 and doc["shmkit"] == shmkit.__version__
        assert doc["actions"] == {"enabled": False}
        assert doc["dev_shm"]["size"] > 0 and 0 <= doc["dev_shm"]["free"] <= doc["dev_shm"]["size"]
        segs = {s["display_name"]: s for s in doc["segments"]}
        assert set(segs) == {name, foreign}
        assert segs[name]["kind"] == "zone" and segs[name]["size"] == 8 << 20
        assert segs[name]["cpid"] == pid and "in-use" in segs[name]["status"]
        assert segs[foreign]["kind"] is None and segs[foreign]["size"] == 5000
        z = zone_entry(doc, name)
        assert z["state"] == "ready" and z["error"] is None and z["backend"] == "posix"
        assert z["header"]["creator_pid"] == pid and z["header"]["size"] == 8 << 20
        a = z["allocator"]
        assert a["used_bytes"] + a["free_bytes"] == a["usable_bytes"] == a["total_pages"] * 4096
        assert len(z["slab_classes"]) == _core.NCLASSES
        assert all(c["free"] == c["total"] - c["used"] for c in z["slab_classes"])
        objs = objects(z)
        assert {n: o["type"] for n, o in objs.items()} == {
            "jobs": "queue", "cache": "dict", "jobs-lock": "lock", "re": "rlock",
            "requests": "counter", "camera": "board", "slots": "semaphore", "ready": "event",
            "table": "rwlock", "cond": "condition", "temperature": "value", "blob": "raw",
            "settings": "config"}
        assert all(o["error"] is None for o in objs.values())
        q = objs["jobs"]["statistics"]
        assert (q["depth"], q["puts"], q["gets"], q["members"]) == (4, 5, 1, 1)
        d = objs["cache"]["statistics"]
        assert (d["items"], d["hits"], d["misses"]) == (10, 10, 5)
        lk = objs["jobs-lock"]["statistics"]
        assert lk["locked"] and lk["owner_pid"] == pid and lk["owner_alive"] is True
        assert objs["requests"]["statistics"]["value"] == 42
        b = objs["camera"]["statistics"]
        assert b["version"] == 2 and b["last_publish_ns"] > 0 and "copies" not in b
        assert objs["slots"]["statistics"]["value"] == 2
        assert objs["ready"]["statistics"]["is_set"] is True
        assert objs["settings"]["statistics"]["version"] == 1
        assert objs["blob"]["statistics"] is None and objs["temperature"]["statistics"] is None
        assert doc["alerts"] == []
        # the page reads as an observer: the holder stays the zone's last attacher, and
        # the server keeps nothing mapped between two readings
        for _ in range(3):
            srv.json()
        again = {s["display_name"]: s for s in srv.json()["segments"]}
        assert again[name]["lpid"] == pid
        with open(f"/proc/{srv.proc.pid}/maps") as f:
            assert name not in f.read()
        # ?zone= narrows the zones, ?match= the segments
        only = srv.json(f"/status.json?zone={name}&match={prefix}-a*")
        assert [s["display_name"] for s in only["segments"]] == [name]
        assert [z["name"] for z in only["zones"]] == [name]
    holder.stdin.close()


def test_each_figure_equals_statistics(prefix, procs):
    """Every object's statistics in status.json are its statistics() as this process
    reads them (the queue's handle count leaves out the page's own, short-lived one)."""
    name = f"{prefix}-app"
    holder, pid = start_holder(procs, name)
    with Served("--match", f"{prefix}*", "--min-interval", "0") as srv, Zone(name) as z:
        handles = {"jobs": shmkit.Queue("jobs", zone=z, create=False),
                   "cache": shmkit.Dict("cache", zone=z, create=False),
                   "jobs-lock": shmkit.Lock("jobs-lock", zone=z, create=False),
                   "re": shmkit.RLock("re", zone=z, create=False),
                   "requests": shmkit.Counter("requests", zone=z, create=False),
                   "camera": shmkit.Board("camera", None, zone=z),
                   "slots": shmkit.Semaphore("slots", zone=z, create=False),
                   "ready": shmkit.Event("ready", zone=z, create=False),
                   "table": shmkit.RWLock("table", zone=z, create=False),
                   "cond": shmkit.Condition("cond", zone=z, create=False)}
        doc_objs = objects(zone_entry(srv.json(), name))  # now with our handles too
        try:
            for n, h in handles.items():
                mine = {k: v for k, v in h.statistics().__dict__.items()}
                shown = doc_objs[n]["statistics"]
                for k, v in shown.items():
                    assert mine[k] == v, (n, k, mine[k], v)
                if n == "jobs":
                    assert shown["members"] == 2  # the holder's and ours
        finally:
            handles["jobs"].detach()
            for k in ("cache", "camera"):
                handles[k].close()
    holder.stdin.close()


# -- zones in every state ---------------------------------------------------------------------------

def test_missing_gone_corrupt_mismatched_and_initialising_zones(prefix, procs):
    ok, missing, corrupt, wrong, gone, slow = (f"{prefix}-{x}" for x in
                                               ("ok", "missing", "corrupt", "wrong", "gone", "slow"))
    zones = [Zone(ok, 1 << 20), Zone(corrupt, 1 << 20), Zone(wrong, 1 << 20), Zone(gone, 1 << 20)]
    try:
        zones[0].queue("q", 4096)
        with Segment(corrupt, "w") as raw:  # a stray write into the allocator's list head
            raw.write(struct.pack("=I", 999999), _core.ZONE_OFF_FREE_HEAD)
        with Segment(wrong, "w") as raw:    # another layout version in the format word
            fmt = struct.unpack("=Q", raw.read(8, 8))[0]
            raw.write(struct.pack("=Q", fmt ^ (0x7f << 48)), 8)
        # a zone whose initialiser is still at work in another process
        init = spawn_python(textwrap.dedent(f"""
            import sys, time
            from shmkit import Zone
            def init(z):
                print("initialising", flush=True)
                time.sleep(60)
            Zone({slow!r}, 1 << 20, init=init)
        """))
        procs.append(init)
        assert read_line(init) == "initialising"
        with Served("--match", f"{prefix}*", "--scan-interval", "600", "--min-interval", "0", ok, missing, corrupt,
                    wrong, gone, slow) as srv:
            doc = srv.json()
            st = {z["name"]: z for z in doc["zones"]}
            assert st[ok]["state"] == "ready" and objects(st[ok])["q"]["type"] == "queue"
            assert st[missing]["state"] == "not-found" and st[missing]["error"]
            assert st[corrupt]["state"] == "corrupt"
            assert any("free list" in p for p in st[corrupt]["problems"]), st[corrupt]
            assert st[wrong]["state"] == "version-mismatch" and "format" in st[wrong]["error"]
            assert st[slow]["state"] == "initialising"
            levels = {(a["where"], a["level"]) for a in doc["alerts"]}
            assert (corrupt, "error") in levels and (wrong, "error") in levels
            assert (missing, "warning") in levels
            # the zone disappears while the page is open: marked, never a failure
            zones[3].unlink()
            zones[3].close()
            st = {z["name"]: z for z in srv.json()["zones"]}
            assert st[gone]["state"] == "gone" and st[ok]["state"] == "ready"
            # the initialiser dies: its zone says so
            init.kill()
            init.wait(10)
            wait_for(lambda: {z["name"]: z for z in srv.json()["zones"]}[slow]["state"]
                     == "uninitialised", what="the zone to show as uninitialised")
            assert srv.get("/")[0] == 200 and srv.alive()
    finally:
        for z in zones:
            if not z.closed:
                z.unlink()
                z.close()


# -- requests --------------------------------------------------------------------------------------

BAD = [
    ("GET", "/../etc/passwd", 400),
    ("GET", "/%2e%2e/%2e%2e/etc/passwd", 400),
    ("GET", "/status.json/..", 400),
    ("GET", "/a/..%2f..%2fetc%2fpasswd", 400),
    ("GET", "/..%5c..%5cwindows", 400),
    ("GET", "/status.json%00", 400),
    ("GET", "/status.json%00.html", 400),
    ("GET", "/%ff%fe", 400),
    ("GET", "/status.json?zone=..", 400),
    ("GET", "/status.json?zone=../../etc", 400),
    ("GET", "/status.json?zone=a/b", 400),
    ("GET", "/status.json?zone=a%00b", 400),
    ("GET", "/status.json?zone=", 400),
    ("GET", "/status.json?match=a/b", 400),
    ("GET", "/status.json?match=x&match=y", 400),
    ("GET", "/status.json?debug=1", 400),
    ("GET", "/status.json?" + "&".join(f"zone=z{i}" for i in range(40)), 400),
    ("GET", "/status.json?match=" + "a" * 3000, 414),
    ("GET", "/?zone=" + "b" * 5000, 414),
    ("GET", "/metrics?zone=" + "%2e" * 2, 400),
    ("GET", "/no/such/page", 404),
    ("GET", "/static/app.js", 404),
    ("GET", "/etc/passwd", 404),
    ("POST", "/status.json", 405),
    ("PUT", "/status.json", 405),
    ("DELETE", "/", 405),
    ("POST", "/actions/gc", 403),
    ("POST", "/actions/rm", 403),
]


def test_bad_requests_get_4xx_and_the_server_lives_on(prefix):
    Zone(f"{prefix}-z", 1 << 20).close()
    with Served("--match", f"{prefix}*") as srv:
        for method, path, want in BAD:
            status, headers, body = srv.request(method, path)
            assert status == want, (method, path[:80], status, body[:200])
            assert b"root:" not in body
        # a request line longer than http.server accepts, a huge body, garbage bytes
        assert srv.get("/status.json?match=" + "c" * 70000)[0] == 414
        assert srv.request("POST", "/actions/gc", body=b"x" * 10000)[0] == 413
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200) + b"\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):  # http.server answers in HTTP/0.9 style, then closes
                answer += chunk
            assert b"400" in answer and b"Bad request" in answer
        # a client that connects and says nothing does not block the others
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        try:
            status, headers, body = srv.get("/status.json")
            assert status == 200 and headers["content-type"] == "application/json"
            assert headers["cache-control"] == "no-store"
        finally:
            idle.close()
        # another site's page cannot read it by rebinding a name to 127.0.0.1
        assert srv.get("/status.json", headers={"Host": "attacker.example:8765"})[0] == 400
        status, headers, body = srv.request("HEAD", "/status.json")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        status, headers, body = srv.get("/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert "script-src 'sha256-" in headers["content-security-policy"]
        assert b"status.json" in body
        assert srv.get("/healthz")[0::2] == (200, b"ok\n")
        assert srv.alive() and srv.json()["zones"][0]["state"] == "ready"


# -- actions ---------------------------------------------------------------------------------------

def test_actions_need_the_flag_and_the_token(prefix, tmp_path):
    token = "t0k3n-" + os.urandom(12).hex()
    tfile = tmp_path / "token"
    tfile.write_text(token + "\n")
    idle = Segment(f"{prefix}-idle", "x", 4096)
    idle.close()
    held = Segment(f"{prefix}-held", "x", 4096)
    fd = os.open(f"/dev/shm/{prefix}-foreign", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, 4096)
    os.close(fd)
    try:
        def post(srv, path, body, tok=token, ctype="application/json"):
            h = {"Content-Type": ctype}
            if tok is not None:
                h["X-Shmkit-Token"] = tok
            return srv.request("POST", path, headers=h, body=json.dumps(body).encode())

        # without --allow-actions a token changes nothing
        with Served("--match", f"{prefix}*", env={"SHMKIT_TOKEN": token}) as srv:
            assert post(srv, "/actions/rm", {"name": f"{prefix}-idle"})[0] == 403
            assert srv.json()["actions"]["enabled"] is False
        assert os.path.exists(f"/dev/shm/{prefix}-idle")

        with Served("--match", f"{prefix}*", "--allow-actions", "--token-file",
                    str(tfile)) as srv:
            assert srv.json()["actions"]["enabled"] is True
            assert token not in srv.banner
            assert post(srv, "/actions/rm", {"name": f"{prefix}-idle"}, tok=None)[0] == 403
            assert post(srv, "/actions/rm", {"name": f"{prefix}-idle"}, tok="wrong" * 5)[0] == 403
            status, _, body = srv.request("POST", "/actions/rm", headers={
                "Authorization": "Bearer nope", "Content-Type": "application/json"}, body=b"{}")
            assert status == 403
            assert post(srv, "/actions/rm", {"name": "../etc/passwd"})[0] == 400
            assert post(srv, "/actions/rm", {"name": f"{prefix}-idle", "shmid": 1})[0] == 400
            assert post(srv, "/actions/rm", {"shmid": "1"})[0] == 400
            assert post(srv, "/actions/rm", ["x"])[0] == 400
            assert post(srv, "/actions/rm", {"name": "x"}, ctype="text/plain")[0] == 400
            assert post(srv, "/actions/rm", {"name": f"{prefix}-nothing"})[0] == 404
            status, _, body = post(srv, "/actions/rm", {"name": f"{prefix}-foreign"})
            assert status == 409 and b"not created by shmkit" in body
            status, _, body = post(srv, "/actions/rm", {"name": f"{prefix}-held"})
            assert status == 409 and b"attached" in body
            assert os.path.exists(f"/dev/shm/{prefix}-foreign")
            assert os.path.exists(f"/dev/shm/{prefix}-held")
            status, _, body = post(srv, "/actions/rm", {"name": f"{prefix}-idle"})
            assert status == 200 and json.loads(body)["ok"] is True
            assert not os.path.exists(f"/dev/shm/{prefix}-idle")
            names = [s["display_name"] for s in srv.json()["segments"]]
            assert f"{prefix}-idle" not in names  # the change shows at once
            status, _, body = post(srv, "/actions/gc", {"dry_run": True})
            assert status == 200 and "actions" in json.loads(body)
            assert post(srv, "/actions/gc", {"dry_run": "yes"})[0] == 400
            # reads stay open to everyone: the token guards changes only
            assert srv.get("/status.json")[0] == 200
    finally:
        held.close()


def test_actions_without_a_token_file_get_a_generated_token(prefix):
    with Served("--match", f"{prefix}*", "--allow-actions") as srv:
        line = srv.readline()
        assert "#token=" in line
        tok = line.strip().rsplit("#token=", 1)[1]
        assert len(tok) >= 16
        status, _, _ = srv.request("POST", "/actions/gc", headers={
            "X-Shmkit-Token": tok, "Content-Type": "application/json"}, body=b'{"dry_run": true}')
        assert status == 200


# -- /metrics ---------------------------------------------------------------------------------------

def test_metrics_parse_and_equal_statistics(prefix, procs):
    from prometheus_client.parser import text_string_to_metric_families

    from shmkit.dashboard.metrics import METRICS, SLAB_METRICS, ZONE_METRICS
    name = f"{prefix}-app"
    holder, pid = start_holder(procs, name)
    with Zone(name) as z:
        handles = {"queue": ("jobs", shmkit.Queue("jobs", zone=z, create=False)),
                   "dict": ("cache", shmkit.Dict("cache", zone=z, create=False)),
                   "lock": ("jobs-lock", shmkit.Lock("jobs-lock", zone=z, create=False)),
                   "rwlock": ("table", shmkit.RWLock("table", zone=z, create=False)),
                   "semaphore": ("slots", shmkit.Semaphore("slots", zone=z, create=False)),
                   "event": ("ready", shmkit.Event("ready", zone=z, create=False)),
                   "condition": ("cond", shmkit.Condition("cond", zone=z, create=False)),
                   "counter": ("requests", shmkit.Counter("requests", zone=z, create=False)),
                   "board": ("camera", shmkit.Board("camera", None, zone=z))}
        try:
            with Served("--match", f"{prefix}*") as srv:
                status, headers, body = srv.get("/metrics")
                assert status == 200 and headers["content-type"].startswith("text/plain")
                samples = {}
                for fam in text_string_to_metric_families(body.decode()):
                    for s in fam.samples:
                        samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
            for kind, (obj, h) in handles.items():
                st = h.statistics().__dict__
                labels = (("name", obj), ("zone", name))
                for metric, field, typ, _, f in METRICS[kind]:
                    sample = metric + ("_total" if typ == "counter" else "")
                    want = float(f(st[field]) if f else st[field])
                    assert samples[(sample, labels)] == want, (sample, want)
            zst = z.statistics().__dict__
            allocator = dict(zst, used_bytes=zst["total_pages"] * 4096 - zst["free_bytes"])
            for metric, field, typ, _, f in ZONE_METRICS:
                sample = metric + ("_total" if typ == "counter" else "")
                assert samples[(sample, (("zone", name),))] == float(allocator[field]), metric
            for c in zst["classes"]:
                labels = (("chunk_bytes", str(c.size)), ("zone", name))
                for metric, field, typ, _, f in SLAB_METRICS:
                    if field == "pages":
                        continue
                    sample = metric + ("_total" if typ == "counter" else "")
                    assert samples[(sample, labels)] == float(getattr(c, field)), metric
            assert samples[("shmkit_zone_ready", (("zone", name),))] == 1.0
            assert samples[("shmkit_segment_size_bytes", (("backend", "posix"),
                            ("kind", "zone"), ("segment", name)))] == float(8 << 20)
            assert samples[("shmkit_lock_owner_pid", (("name", "jobs-lock"),
                                                      ("zone", name)))] == float(pid)
        finally:
            handles["queue"][1].detach()
            handles["dict"][1].close()
            handles["board"][1].close()
    holder.stdin.close()


def test_metric_names_are_documented():
    from shmkit.dashboard.metrics import all_metric_names
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "serve.md")) as f:
        doc = f.read()
    missing = [n for n in all_metric_names() if f"`{n}" not in doc]
    assert not missing, f"undocumented metrics: {missing}"


def test_metrics_without_prometheus_client_names_the_extra(prefix, tmp_path):
    """Where the extra is not installed, /metrics says what to install; the page works."""
    blocker = tmp_path / "prometheus_client.py"
    blocker.write_text("raise ImportError('not installed here')\n")
    env = {"PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with Served("--match", f"{prefix}*", env=env) as srv:
        assert "pip install shmkit[metrics]" in srv.banner
        status, _, body = srv.get("/metrics")
        assert status == 501 and b"pip install shmkit[metrics]" in body
        assert srv.get("/status.json")[0] == 200


def test_serve_usage_errors():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "shmkit", "serve", *args],
                              capture_output=True, text=True, timeout=60)
    assert run("--port", "x").returncode == 2
    assert run("../etc").returncode == 2
    assert run("--refresh", "0").returncode == 2
    assert run("--token-file", "/nonexistent").returncode == 2
    r = run("--allow-actions", "--token-file", "/nonexistent")
    assert r.returncode == 2 and "token-file" in r.stderr
    r = subprocess.run([sys.executable, "-m", "shmkit", "cgi"], capture_output=True, text=True,
                       timeout=60, env={k: v for k, v in os.environ.items()
                                        if k not in ("REQUEST_METHOD", "GATEWAY_INTERFACE")})
    assert r.returncode == 2 and "web server" in r.stderr


def test_a_request_narrows_what_is_shown_never_widens_it(prefix):
    a, b = Zone(f"{prefix}-a", 1 << 20), Zone(f"{prefix}-b", 1 << 20)
    try:
        with Served("--match", f"{prefix}-a*") as srv:
            for q in ("?match=*", f"?zone={prefix}-b", f"?zone={prefix}-b&match=*"):
                doc = srv.json("/status.json" + q)
                assert f"{prefix}-b" not in [z["name"] for z in doc["zones"]], q
                assert f"{prefix}-b" not in [s["display_name"] for s in doc["segments"]], q
            assert srv.get("/status.json?zone=sysv:0x1234")[0] == 400
            assert srv.get("/status.json?zone=file:/etc/passwd")[0] == 400
            assert [z["name"] for z in srv.json()["zones"]] == [f"{prefix}-a"]
        with Served(f"{prefix}-a", f"{prefix}-b") as srv:  # zones named: only those
            doc = srv.json(f"/status.json?zone={prefix}-b&zone={prefix}-c")
            assert [z["name"] for z in doc["zones"]] == [f"{prefix}-b"]
    finally:
        for z in (a, b):
            z.unlink()
            z.close()
