"""Full /dev/shm: creators, growers and writers racing for a small tmpfs.

    python -m tests.campaigns fullshm --seconds 300 --seed 7

Runs in a private mount namespace (``unshare -m``) with a 16 MiB tmpfs mounted over
/dev/shm, so the machine's /dev/shm is never filled.  Round after round, four processes
start together, each doing one kind of work until the file system is full:

    creator   creates segments of 64 KiB .. 4 MiB (every lifecycle), then writes every page
    grower    a zone with a large max_size: allocates until it cannot grow, writes all of it
    dict      a dict in a growing zone: sets values until the zone or the dict is full
    queue     a queue in a growing zone: puts large messages
    resizer   grows a segment step by step (resize), writing each new part
    adopter   a sparse object (sized, never reserved: what a killed creator leaves, or a
              foreign file) adopted by Zone() or opened and written through Segment()

Expected: each either finishes or gets NoSpaceError / ZoneFullError where space runs
out.  A death by SIGBUS (or any signal), a hang, or any other exception is a finding.
Between rounds everything in the private /dev/shm is removed.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

from ._common import Report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TMPFS = "16m"
KINDS = ("creator", "grower", "dict", "queue", "resizer", "adopter")


def _unshare_problem() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot make a private mount namespace: {r.stderr.strip()}"
    return None


# -- workers (inside the namespace, forked) ---------------------------------------------------

def _touch(mv, step=4096):
    for i in range(0, len(mv), step):
        mv[i] = 1


def work(kind: str, seed: int, tag: str) -> str:
    """One worker's job; returns "ok" or "nospace" (anything else raises)."""
    import shmkit
    from shmkit import NoSpaceError, ZoneFullError
    rnd = random.Random(seed)
    try:
        if kind == "creator":
            segs = []
            lifecycles = ("persist", "unlink_on_last_close", "unlink_on_creator_exit")
            try:
                for i in range(64):
                    segs.append(shmkit.Segment(f"{tag}-{i}", "x", rnd.randrange(64 << 10, 4 << 20),
                                               lifecycle=rnd.choice(lifecycles)))
            finally:
                for s in segs:  # what was created was reserved: writing it never faults
                    _touch(s.buf)
            return "ok"
        if kind == "grower":
            z = shmkit.Zone(tag, 256 << 10, max_size=64 << 20)
            offs = []
            try:
                for _ in range(2000):
                    n = rnd.choice((100, 3000, 70000, 500000))
                    off = z.alloc(n)
                    offs.append((off, n))
            finally:
                for off, n in offs:
                    _touch(z.view(off, n))
            return "ok"
        if kind == "dict":
            z = shmkit.Zone(tag, 256 << 10, max_size=64 << 20)
            d = z.dict("d", rnd.choice((1 << 20, 4 << 20, 12 << 20)))
            for i in range(5000):
                d[f"k{i}"] = os.urandom(rnd.randrange(10, 3000))
            return "ok"
        if kind == "queue":
            z = shmkit.Zone(tag, 256 << 10, max_size=64 << 20)
            q = z.queue("q", rnd.choice((1 << 20, 4 << 20, 8 << 20)))
            for _ in range(2000):
                try:
                    q.put(os.urandom(rnd.randrange(1000, 200000)), timeout=0.001)
                except shmkit.QueueFull:
                    q.get_many(8)
            return "ok"
        if kind == "resizer":
            s = shmkit.Segment(tag, "x", 64 << 10, reserve=64 << 20)
            size = 64 << 10
            while size < (32 << 20):
                size += rnd.randrange(64 << 10, 2 << 20)
                s.resize(size)
                _touch(s.buf)
            return "ok"
        if kind == "adopter":
            path = f"/dev/shm/{tag}"
            size = rnd.randrange(1 << 20, 12 << 20)
            if rnd.random() < 0.5:  # a killed shmkit creator's object
                shmkit.Segment(tag, "x", 0, _allow_empty=True).close()
                os.truncate(path, size)
                z = shmkit.Zone(tag, size)
                _touch(z.view(z.alloc(size // 2), size // 2))
            else:                   # a foreign sparse file
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                os.ftruncate(fd, size)
                os.close(fd)
                s = shmkit.Segment(tag, "w")
                _touch(s.buf)
            return "ok"
    except (NoSpaceError, ZoneFullError):
        return "nospace"
    raise ValueError(kind)


def _child(kind, seed, tag, w):
    try:
        res = work(kind, seed, tag)
    except BaseException as e:
        res = f"raw {type(e).__name__}: {e}"
    os.write(w, res[:300].encode())
    os._exit(0)


def _clear_shm():
    for n in os.listdir("/dev/shm"):
        p = os.path.join("/dev/shm", n)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except OSError:
                pass


def inner(seconds: float, seed: int, out_path: str) -> None:
    """The part that runs inside the namespace (/dev/shm is the small tmpfs)."""
    import select
    import shmkit  # noqa: F401  (imported before forking)
    rnd = random.Random(seed)
    stats = defaultdict(Counter)
    findings = []
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        rounds += 1
        kinds = [rnd.choice(KINDS) for _ in range(4)]
        procs = []
        for k, kind in enumerate(kinds):
            r, w = os.pipe()
            wseed = rnd.getrandbits(32)
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _child(kind, wseed, f"r{rounds}-{k}-{kind}", w)
            os.close(w)
            procs.append((pid, r, kind, wseed))
        deadline = time.monotonic() + 60
        for pid, r, kind, wseed in procs:
            msg = b""
            while True:
                left = deadline - time.monotonic()
                ready = select.select([r], [], [], max(0, left))[0] if left > 0 else []
                if not ready:
                    break
                chunk = os.read(r, 4096)
                if not chunk:
                    break
                msg += chunk
            os.close(r)
            while True:  # the pipe closes a moment before the child can be reaped
                done, status = os.waitpid(pid, os.WNOHANG)
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.002)
            if not done:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                how = "hang"
            elif os.WIFSIGNALED(status):
                how = f"signal {os.WTERMSIG(status)}"
            else:
                how = msg.decode(errors="replace") or "no report"
            cls = how.split()[0] if how.split() else how
            stats[kind][cls if cls in ("ok", "nospace", "hang", "signal") else "raw"] += 1
            if cls not in ("ok", "nospace"):
                findings.append({"round": rounds, "kind": kind, "seed": wseed, "how": how})
        _clear_shm()
    with open(out_path, "w") as f:
        json.dump({"rounds": rounds, "stats": {k: dict(v) for k, v in stats.items()},
                   "findings": findings}, f)


def run(seconds: float, seed: int) -> Report:
    from .__main__ import CannotRun
    why = _unshare_problem()
    if why:
        raise CannotRun(why)
    rep = Report("fullshm", seed, seconds)
    fd, out = tempfile.mkstemp(prefix="shmkit-fullshm-", suffix=".json")
    os.close(fd)
    try:
        code = ("import sys; from tests.campaigns.fullshm import inner; "
                "inner(float(sys.argv[1]), int(sys.argv[2]), sys.argv[3])")
        cmd = (f"mount -t tmpfs -o size={TMPFS} tmpfs /dev/shm && exec "
               f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} {seconds} {seed} "
               f"{shlex.quote(out)}")
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd],
                           cwd=REPO, capture_output=True, text=True, timeout=seconds + 300)
        if r.returncode != 0:
            rep.findings.append({"what": "the namespace's process failed",
                                 "code": r.returncode, "stderr": r.stderr[-2000:]})
            return rep
        with open(out) as f:
            res = json.load(f)
    finally:
        os.unlink(out)
    total = Counter()
    for kind in KINDS:
        s = res["stats"].get(kind, {})
        total.update(s)
        rep.rows.append({"worker": kind, "runs": sum(s.values()), "ok": s.get("ok", 0),
                         "NoSpaceError": s.get("nospace", 0), "raw": s.get("raw", 0),
                         "signal": s.get("signal", 0), "hang": s.get("hang", 0)})
    rep.figures["rounds"] = res["rounds"]
    rep.figures["tmpfs"] = TMPFS
    rep.figures["outcomes"] = dict(total)
    rep.findings.extend(res["findings"])
    return rep
