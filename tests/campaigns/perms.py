"""Permissions, with a second user created for the run (root only).

    python -m tests.campaigns perms --seconds 60 --seed 7

A user is created with useradd and removed at the end (also on failure).  Root makes
segments, zones and SysV segments of modes 0600 and 0644 (and a zone of 0666); the
other user plants symlinks, FIFOs and a registry; each check runs the side that must be
refused in a real process of the right user and compares what happens with what must
happen.  The checks are repeated (the plants and names change each round) until the
time is up.
"""

from __future__ import annotations

import json
import os
import random
import signal
import tempfile
import time

from ._common import Cleanup, Report, deadline_after


def _as(user, fn, *args, timeout=20.0):
    from ._users import run_as

    def call():
        try:
            out = fn(*args)
        except BaseException as e:
            out = f"{type(e).__name__}: {e}"
        print("RESULT " + json.dumps(out, default=str), flush=True)
        return 0
    res = run_as(user, call, timeout=timeout)
    for line in res.out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return f"{res.how} {res.code}: {res.out[-300:]}"


def _try(fn):
    try:
        r = fn()
        return "ok" if r is None or r is True else r
    except BaseException as e:
        return f"{type(e).__name__}: {e}"


def _checks(user, clean, rnd, tmpdir):
    """(name, got, want) for one round; want is a predicate on got."""
    from shmkit import Segment, Zone, cli

    def startswith(*prefixes):
        return lambda got: isinstance(got, str) and got.startswith(prefixes)

    p600 = Segment(clean.name("p600"), "x", 8192)
    p644 = Segment(clean.name("p644"), "x", 8192, perm=0o644)
    z666 = Zone(clean.name("z666"), 1 << 20, perm=0o666)
    k600, k644 = clean.sysv_key(rnd), clean.sysv_key(rnd)
    s600 = Segment(None, "x", 8192, key=k600)
    s644 = Segment(None, "x", 8192, key=k644, perm=0o644)
    p644.write(b"readable")
    made = [p600, p644, s600, s644]
    try:
        yield ("posix 0600: open read-only", _as(user, lambda: Segment(p600.name, "r").close()),
               startswith("SegmentPermissionError"))
        yield ("posix 0644: open without allow_other_owner",
               _as(user, lambda: Segment(p644.name, "r").close()),
               lambda g: "allow_other_owner" in str(g))
        yield ("posix 0644: read with allow_other_owner",
               _as(user, lambda: Segment(p644.name, "r", allow_other_owner=True).read(0, 8)),
               lambda g: "readable" in str(g))
        yield ("posix 0644: open read-write", _as(user, lambda: Segment(
            p644.name, "w", allow_other_owner=True).close()), startswith("SegmentPermissionError"))
        yield ("sysv 0600: open read-only", _as(user, lambda: Segment(None, "r", key=k600)),
               startswith("SegmentPermissionError"))
        yield ("sysv 0644: read with allow_other_owner", _as(user, lambda: Segment(
            None, "r", key=k644, allow_other_owner=True).read(0, 4)),
               lambda g: isinstance(g, str) and g.startswith("b'"))
        yield ("sysv 0644: open read-write", _as(user, lambda: Segment(
            None, "w", key=k644, allow_other_owner=True)), startswith("SegmentPermissionError"))
        yield ("zone 0600 of root", _as(user, lambda: Zone(p600.name)),
               startswith("SegmentPermissionError"))
        # a lock held by root, waited for by the other user: root is alive, never stolen
        lk = z666.lock("held")
        lk.acquire()
        try:
            yield ("a live holder of another user is not taken over", _as(
                user, lambda: Zone(z666.name, allow_other_owner=True).lock("held").acquire(
                    timeout=0.3)), lambda g: g is False)
        finally:
            lk.release()
        # the other user's own segment, seen by root
        oname = clean.name("other")
        _as(user, lambda: Segment(oname, "x", 4096).close())
        yield ("root opening another user's segment", _try(lambda: Segment(oname, "r").close()),
               lambda g: "allow_other_owner" in str(g))
        yield ("root with allow_other_owner", _try(
            lambda: Segment(oname, "r", allow_other_owner=True).close()), lambda g: g == "ok")
        # plants by the other user in /dev/shm
        victim = os.path.join(tmpdir, f"victim-{rnd.getrandbits(32)}")
        with open(victim, "wb") as f:
            f.write(b"root's file")
        os.chmod(victim, 0o600)
        link = clean.name("link")
        _as(user, lambda: os.symlink(victim, f"/dev/shm/{link}"))
        for mode in ("c", "x", "w"):
            yield (f"a symlink planted in /dev/shm, mode {mode!r}", _try(
                lambda: Segment(link, mode, 4096).close()), lambda g: g != "ok")
        yield ("Zone() over the planted symlink", _try(lambda: Zone(link, 1 << 20).close()),
               lambda g: g != "ok")
        with open(victim, "rb") as f:
            yield ("the symlink's target is untouched", f.read(), lambda g: g == b"root's file")
        fifo = clean.name("fifo")
        _as(user, lambda: os.mkfifo(f"/dev/shm/{fifo}", 0o666))
        t0 = time.monotonic()
        got = _try(lambda: Segment(fifo, "r").close())
        yield ("a FIFO planted in /dev/shm is refused at once",
               (got, round(time.monotonic() - t0, 2)),
               lambda g: "not a regular file" in g[0] and g[1] < 2)
        # the registry: pre-created by the other user, not sticky
        reg = os.path.join(tmpdir, f"registry-{rnd.getrandbits(32)}")
        os.mkdir(reg, 0o755)
        os.chown(reg, user.uid, user.gid)
        old = os.environ.get("SHMKIT_REGISTRY")
        os.environ["SHMKIT_REGISTRY"] = reg
        try:
            k = clean.sysv_key(rnd)
            yield ("a registry of another user (0755) is refused with its owner named",
                   _try(lambda: Segment(None, "x", 4096, key=k,
                                        lifecycle="unlink_on_last_close").close()),
                   lambda g: f"uid {user.uid}" in g and "SHMKIT_REGISTRY" in g)
        finally:
            if old is None:
                del os.environ["SHMKIT_REGISTRY"]
            else:
                os.environ["SHMKIT_REGISTRY"] = old
        # the CLI as the other user, on root's objects
        for argv, code in ((["rm", p600.name], 4), (["rm", "--force", p600.name], 4),
                           (["rm", "--force", "--key", hex(k600)], 4),
                           (["check", z666.name], 4), (["dump", p600.name], 4),
                           (["info", p600.name], 0)):
            from ._users import run_as
            res = run_as(user, cli.main, argv)
            yield (f"shmkit {' '.join(argv[:-1])} (another user)", (res.how, res.code),
                   lambda g, code=code: tuple(g) == ("ok", code))
        yield ("root's segments are all still there", [s.removed for s in made],
               lambda g: not any(g))
        # gc by the other user never removes root's stale segment
        stale = clean.name("stale")
        pid = os.fork()
        if pid == 0:
            try:
                s = Segment(stale, "x", 4096, lifecycle="unlink_on_creator_exit")
                os.kill(s._reaper_pid, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        from ._users import run_as
        res = run_as(user, cli.main, ["gc", f"{clean.prefix}-stale-*"])
        yield ("gc by another user leaves root's stale segment", (
            res.code, os.path.exists(f"/dev/shm/{stale}")), lambda g: tuple(g) == (0, True))
    finally:
        for s in made:
            try:
                s.unlink()
            except Exception:
                pass
            s.close()
        z666.close()


def run(seconds: float, seed: int) -> Report:
    from .__main__ import CannotRun
    from ._users import TempUser, preload, skip_reason
    why = skip_reason()
    if why:
        raise CannotRun(why)
    preload()
    rep = Report("perms", seed, seconds)
    rnd = random.Random(seed)
    clean = Cleanup()
    tmpdir = tempfile.mkdtemp(prefix="shmkit-perms-")
    os.chmod(tmpdir, 0o755)
    rounds = checks = 0
    results = {}
    try:
        with TempUser() as user:
            rep.figures["user"] = f"{user.name} (uid {user.uid})"
            end = deadline_after(seconds)
            while rounds == 0 or time.monotonic() < end:
                rounds += 1
                for name, got, want in _checks(user, clean, rnd, tmpdir):
                    checks += 1
                    ok = bool(want(got))
                    r = results.setdefault(name, {"check": name, "runs": 0, "failed": 0})
                    r["runs"] += 1
                    if not ok:
                        r["failed"] += 1
                        rep.findings.append({"round": rounds, "check": name,
                                             "got": repr(got)[:400]})
                clean.run()
        rep.rows.extend(results.values())
        rep.figures["rounds"] = rounds
        rep.figures["checks"] = checks
    finally:
        import shutil
        shutil.rmtree(tmpdir, ignore_errors=True)
        clean.run()
    return rep
