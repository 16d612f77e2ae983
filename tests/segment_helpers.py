"""Helpers shared by the segment, shmop and CLI tests: SysV keys that are cleaned up
even when a test fails, and polling for removals."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from conftest import wait_until  # noqa: F401  (re-exported for the test modules)

REGISTRY = os.environ.get("SHMKIT_REGISTRY") or "/dev/shm/.shmkit"


def sysv_rows() -> list[dict]:
    with open("/proc/sysvipc/shm") as f:
        header = f.readline().split()
        return [dict(zip(header, line.split())) for line in f if line.strip()]


def sysv_ids_with_key(key: int) -> list[int]:
    k = key - (1 << 32) if key >= (1 << 31) else key
    return [int(r["shmid"]) for r in sysv_rows() if int(r["key"]) == k]


def sysv_exists(key: int) -> bool:
    return bool(sysv_ids_with_key(key))


def sysv_id_exists(shmid: int) -> bool:
    return any(int(r["shmid"]) == shmid for r in sysv_rows())


def remove_sysv(shmid: int) -> None:
    subprocess.run(["ipcrm", "-m", str(shmid)], capture_output=True)
    for rec in list_records(f"sysv-{shmid}-"):
        try:
            os.unlink(os.path.join(REGISTRY, rec))
        except OSError:
            pass


def list_records(prefix: str = "") -> list[str]:
    try:
        return [n for n in os.listdir(REGISTRY) if n.startswith(prefix)]
    except FileNotFoundError:
        return []


class SysvKeys:
    """Random SysV keys; every segment ever created with one of them (or whose id was
    registered with ``track_id``) is removed at teardown."""

    def __init__(self):
        self.keys: list[int] = []
        self.ids: list[int] = []

    def new(self) -> int:
        while True:
            k = random.randint(0x10000000, 0x7ffffff0)
            if not sysv_exists(k):
                self.keys.append(k)
                return k

    def track_id(self, shmid: int) -> None:
        self.ids.append(shmid)

    def cleanup(self) -> None:
        for k in self.keys:
            for shmid in sysv_ids_with_key(k):
                remove_sysv(shmid)
        for shmid in self.ids:
            remove_sysv(shmid)


@pytest.fixture
def sysv_keys():
    keys = SysvKeys()
    try:
        yield keys
    finally:
        keys.cleanup()


@pytest.fixture
def sysv_key(sysv_keys):
    return sysv_keys.new()


def shm_path(name: str) -> str:
    return f"/dev/shm/{name}"


def wait_gone(path: str, timeout: float = 10.0) -> None:
    wait_until(lambda: not os.path.exists(path), timeout, what=f"{path} to be removed")


def spawn_python(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """A plain interpreter running ``code``; stdout is a pipe (text, line-buffered)."""
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1,
                            env=dict(os.environ, **(env or {})))


def read_line(p: subprocess.Popen, timeout: float = 30.0) -> str:
    """The child's next stdout line (fails with its stderr if it died first)."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out waiting for the child to report")
        if sel.select(left):
            line = p.stdout.readline()
            if line:
                return line.strip()
            p.wait(10)
            raise AssertionError(f"child exited ({p.returncode}) without reporting:\n"
                                 f"{p.stderr.read()}")
