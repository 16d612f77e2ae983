"""Shared fixtures.  Every test cleans up what it creates, even when it fails:
segments and zones get unique names and are unlinked in teardown; child processes are
killed in teardown."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest


def unique(prefix: str = "shmkit-test") -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def name(request):
    """A unique POSIX name; whatever exists under it is unlinked at teardown."""
    n = unique()
    yield n
    try:
        os.unlink(f"/dev/shm/{n}")
    except FileNotFoundError:
        pass


@pytest.fixture
def zone(name):
    """A fresh 4 MiB posix zone, closed and unlinked at teardown."""
    from shmkit import Zone

    z = Zone(name, 4 << 20)
    yield z
    z.close()


@pytest.fixture
def procs():
    """Collects child processes (subprocess.Popen or multiprocessing.Process) and
    SIGKILLs whatever is still running at teardown."""
    started = []
    yield started
    for p in started:
        try:
            if isinstance(p, subprocess.Popen):
                if p.poll() is None:
                    p.kill()
                p.wait(timeout=10)
            else:
                if p.is_alive():
                    p.kill()
                p.join(timeout=10)
        except Exception:
            pass


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.005, what: str = "condition"):
    """Poll predicate() until it is true or the deadline passes (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run_python(code: str, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (a plain subprocess, not multiprocessing)."""
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"child failed ({r.returncode}):\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


START_METHODS = ["spawn", "forkserver", "fork"]


@pytest.fixture(params=START_METHODS)
def ctx(request):
    """A multiprocessing context for each start method."""
    return mp.get_context(request.param)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs mounted for the test (needs root; skipped otherwise)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def kill_hard(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# real redis-server processes (a single server and a 3-master cluster, one per session)
from redis_support import cluster_zone, redis_cluster, redis_server, redis_zone  # noqa: E402,F401
