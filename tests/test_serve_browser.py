"""The status page in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): what a person sees.  Zone names, a queue depth that follows another
process's puts within 2 s without a reload, a dead lock holder marked dead, hostile
names shown as text, and the screenshot docs/serve.md shows (written to the path in
$SHMKIT_DOCS_SCREENSHOT when set)."""

from __future__ import annotations

import os
import shutil
import textwrap
import time

import pytest

from shmkit import Zone
from conftest import kill_hard, unique
from serve_helpers import Browser, Served, need_chromium, spawn_holder, wait_for
from segment_helpers import read_line

# `make sanitize` preloads libasan into every interpreter: these tests check what the page
# draws in a browser, which the C sanitizers cannot see into (test_serve.py and
# test_serve_cgi.py read the same shared memory through the same code under them)
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                                 reason="browser tests do not run under make sanitize")]


@pytest.fixture
def prefix():
    p = unique("shmkit-pagetest")
    yield p
    for n in os.listdir("/dev/shm"):
        if n.startswith(p):
            try:
                os.unlink(f"/dev/shm/{n}")
            except FileNotFoundError:
                pass


@pytest.fixture(autouse=True)
def _chromium():
    need_chromium()


#: puts or gets on command: "put N" / "get N" on stdin, "ok DEPTH" on stdout
PRODUCER = textwrap.dedent("""
    import sys
    import shmkit
    z = shmkit.Zone(sys.argv[1], 4 << 20)
    q = z.queue("jobs", 1 << 16)
    print("ready", flush=True)
    for line in sys.stdin:
        verb, n = line.split()
        for _ in range(int(n)):
            q.put(b"job") if verb == "put" else q.get()
        print("ok", q.qsize(), flush=True)
""")

HOLDS_LOCK = textwrap.dedent("""
    import os, sys, time
    import shmkit
    z = shmkit.Zone(sys.argv[1], 4 << 20)
    z.lock("jobs-lock").acquire()
    print(os.getpid(), flush=True)
    time.sleep(600)
""")


def depth_on_page(page) -> str:
    loc = page.locator('tr[data-object="jobs"] b.depth')
    return loc.inner_text() if loc.count() else ""


def test_page_shows_zones_and_follows_another_process_within_2s(prefix, procs):
    name = f"{prefix}-orders"
    producer = spawn_holder(PRODUCER, name)
    procs.append(producer)
    assert read_line(producer) == "ready"
    with Served("--match", f"{prefix}*") as srv, Browser() as b:  # default refresh: 1 s
        b.page.goto(srv.url + "/")
        b.page.get_by_text(name, exact=True).first.wait_for(timeout=10_000)
        assert b.page.locator(f'.zone[data-zone="{name}"] .badge').first.inner_text() == "ready"
        wait_for(lambda: depth_on_page(b.page) == "depth 0", what="depth 0 on the page")
        loads = b.page.evaluate("performance.getEntriesByType('navigation').length")
        for verb, n, want in (("put", 7, 7), ("put", 5, 12), ("get", 10, 2)):
            producer.stdin.write(f"{verb} {n}\n")
            producer.stdin.flush()
            assert read_line(producer) == f"ok {want}"
            t0 = time.monotonic()
            wait_for(lambda: depth_on_page(b.page) == f"depth {want}", timeout=5,
                     interval=0.02, what=f"depth {want} on the page")
            took = time.monotonic() - t0
            assert took < 2.0, f"the page showed depth {want} after {took:.2f} s"
        # followed without a reload, and the segment table shows the zone as in use
        assert b.page.evaluate("performance.getEntriesByType('navigation').length") == loads
        row = b.page.locator(f'tr[data-segment="{name}"]')
        assert "in-use" in row.inner_text() and "zone" in row.inner_text()
        assert not b.errors, b.errors
    producer.stdin.close()


def test_dead_lock_holder_is_marked_dead(prefix, procs):
    name = f"{prefix}-locks"
    holder = spawn_holder(HOLDS_LOCK, name)
    procs.append(holder)
    pid = int(read_line(holder))
    with Served("--match", f"{prefix}*", "--refresh", "0.5") as srv, Browser() as b:
        b.page.goto(srv.url + "/")
        row = b.page.locator('tr[data-object="jobs-lock"]')
        row.wait_for(timeout=10_000)
        wait_for(lambda: f"by pid {pid}" in row.inner_text(), what="the live holder")
        assert "dead" not in row.inner_text()
        kill_hard(pid)
        holder.wait(10)
        wait_for(lambda: "holder dead" in row.inner_text(), timeout=10, what="holder dead")
        assert f"held by pid {pid} (dead)" in row.inner_text()
        badge = row.locator(".badge.dead")
        assert badge.inner_text() == "holder dead"
        assert badge.evaluate("e => getComputedStyle(e).color") == "rgb(198, 40, 40)"  # red
        alert = b.page.locator("#alerts li.error")
        assert f"held by pid {pid}, which is dead" in alert.inner_text()
        assert b.page.title().startswith("(!)")
        assert not b.errors, b.errors


def test_hostile_names_are_shown_as_text(prefix):
    seg = f"{prefix}-<img src=x onerror=alert(1)>"
    fd = os.open(f"/dev/shm/{seg}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, 4096)
    os.close(fd)
    obj = "<script>alert(2)</script>"
    with Zone(f"{prefix}-z", 1 << 20) as z:
        z.create(obj, 64)
        with Served("--match", f"{prefix}*") as srv, Browser() as b:
            b.page.goto(srv.url + "/")
            b.page.locator("td.name", has_text=obj).wait_for(timeout=10_000)
            assert b.page.locator("td.name", has_text=seg).inner_text() == seg
            assert b.page.locator("img").count() == 0
            assert b.page.locator("#zones script").count() == 0
            assert not b.errors, b.errors  # no dialog opened, no script error
        z.unlink()


#: the traffic behind the docs' screenshot: a pipeline, a cache, a camera board, counters
SCENE = textwrap.dedent("""
    import os, random, sys, time
    import shmkit
    zone = shmkit.Zone(sys.argv[1], 64 << 20, max_size=256 << 20)
    q = zone.queue("jobs", 1 << 20)
    done = zone.queue("results", 1 << 18)
    cache = zone.dict("sessions", 8 << 20)
    board = zone.board("camera", 64 << 10)
    served = zone.counter("requests")
    zone.lock("jobs-lock")
    zone.semaphore("db-slots", 8)
    zone.event("shutdown")
    print("ready", flush=True)
    rng = random.Random(7)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        for _ in range(rng.randint(150, 400)):
            try:
                q.put_nowait(b"job" * 20)
            except shmkit.QueueFull:
                break
        for _ in range(rng.randint(100, 420)):
            try:
                done.put_nowait(q.get_nowait())
            except (shmkit.QueueEmpty, shmkit.QueueFull):
                break
        try:
            done.get_many(rng.randint(50, 300), block=False)
        except shmkit.QueueEmpty:
            pass
        for _ in range(200):
            k = f"user:{rng.randint(0, 800)}"
            if cache.get(k) is None:
                cache.set(k, b"x" * 200, ttl=30)
        cache.statistics()
        board.publish(os.urandom(256))
        served.add(rng.randint(20, 80))
        time.sleep(0.05)
""")


def test_screenshot_of_a_busy_page(prefix, procs, tmp_path):
    short = prefix.rsplit("-", 1)[1][:6]
    app, sessions = f"shop-{short}", f"cache-{short}"
    scene = spawn_holder(SCENE, app)
    procs.append(scene)
    assert read_line(scene) == "ready"
    dead = spawn_holder(HOLDS_LOCK, sessions)
    procs.append(dead)
    kill_hard(int(read_line(dead)))  # leaves "jobs-lock" held by a dead process
    dead.wait(10)
    try:
        with Served("--match", f"*-{short}", "--refresh", "0.5") as srv, \
                Browser(width=1200, height=900) as b:
            b.page.goto(srv.url + "/")
            b.page.locator('tr[data-object="jobs"]').wait_for(timeout=10_000)
            time.sleep(8)  # some history for the rate charts
            b.page.locator(f'.zone[data-zone="{app}"] details').evaluate("d => d.open = true")
            out = tmp_path / "serve.png"
            b.page.screenshot(path=str(out), full_page=True)
            assert not b.errors, b.errors
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 300_000, len(data)
        target = os.environ.get("SHMKIT_DOCS_SCREENSHOT")
        if target:
            shutil.copyfile(out, target)
    finally:
        for n in (app, sessions):
            try:
                os.unlink(f"/dev/shm/{n}")
            except FileNotFoundError:
                pass
