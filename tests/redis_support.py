"""Real redis-server processes for the tests: a single server and a 3-master Redis
Cluster, each started once per test session on 127.0.0.1 (free ports, a temporary
directory) and stopped at the end, also when tests fail.  Nothing here mocks Redis.

The fixtures are imported by tests/conftest.py.  Every test that uses a server gets
unique zone names and removes what it made (the ``redis_zone`` factories do both).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")

needs_redis = pytest.mark.skipif(REDIS_SERVER is None,
                                 reason="redis-server is not installed (apt-get install redis-server)")

# `make sanitize` runs the suite again with ASan preloaded, to check shmkit's C code.  The
# Redis backend is pure Python over redis-py: nothing for the sanitizers to see, and
# running it twice would double its share of CI time.  Its tests run in `make test`.
UNDER_SANITIZER = "libasan" in os.environ.get("LD_PRELOAD", "")


def _skip_under_sanitizer():
    if UNDER_SANITIZER:
        pytest.skip("the Redis backend is pure Python: run by make test, not make sanitize")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(span: int = 1, bus: bool = False) -> int:
    """A port p such that p .. p+span-1 (and p+10000.., for a cluster bus) are free."""
    for _ in range(200):
        p = random.randint(20000, 30000)
        ports = list(range(p, p + span))
        if bus:
            ports += [q + 10000 for q in ports]
        if all(_port_free(q) for q in ports):
            return p
    raise RuntimeError("no free port range found")


def _die_with_parent():
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """One redis-server on 127.0.0.1:port with its own directory."""

    def __init__(self, port: int, workdir: str, *, appendonly: bool = False,
                 cluster: bool = False, extra: tuple = ()):
        self.port = port
        self.dir = workdir
        self.appendonly = appendonly
        self.cluster = cluster
        self.extra = tuple(extra)
        self.proc = None
        self.log = os.path.join(workdir, f"redis-{port}.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self):
        a = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
             "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning",
             "--save", "", "--maxmemory", "1gb"]
        if self.appendonly:
            a += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            a += ["--appendonly", "no"]
        if self.cluster:
            a += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf",
                  "--cluster-node-timeout", "2000"]
        return a + list(self.extra)

    def start(self, timeout: float = 15.0) -> "RedisProcess":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.dir,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if ping(self.port):
                return self
            time.sleep(0.02)
        self.stop()
        with open(self.log, errors="replace") as f:
            tail = f.read()[-2000:]
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")

    def stop(self, sig=signal.SIGTERM) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, sig=signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()


class RedisCluster:
    """Three masters built with ``redis-cli --cluster create`` (no replicas)."""

    def __init__(self, workdir: str):
        base = free_port(3, bus=True)
        self.nodes = [RedisProcess(base + i, workdir, cluster=True) for i in range(3)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> "RedisCluster":
        for n in self.nodes:
            n.start()
        try:
            r = subprocess.run([REDIS_CLI, "--cluster", "create",
                                *[f"127.0.0.1:{n.port}" for n in self.nodes],
                                "--cluster-replicas", "0", "--cluster-yes"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{r.stdout}\n{r.stderr}")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if all(self._state_ok(n.port) for n in self.nodes):
                    return self
                time.sleep(0.1)
            raise RuntimeError("the cluster did not reach cluster_state:ok in 30 s")
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _state_ok(port) -> bool:
        r = subprocess.run([REDIS_CLI, "-p", str(port), "cluster", "info"], capture_output=True,
                           text=True, timeout=10)
        return "cluster_state:ok" in r.stdout

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A redis-server (no persistence) shared by the whole session."""
    _skip_under_sanitizer()
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    d = tempfile.mkdtemp(prefix="shmkit-redis-")
    server = RedisProcess(free_port(), d)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster():
    """A 3-master Redis Cluster shared by the whole session."""
    _skip_under_sanitizer()
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip("redis-server / redis-cli are not installed")
    d = tempfile.mkdtemp(prefix="shmkit-rcluster-")
    cluster = RedisCluster(d)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(d, ignore_errors=True)


def unique_zone(prefix: str = "t") -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:10]}"


class ZoneFactory:
    """Makes RedisZones with unique names on one server/cluster; removes every object
    they made (and closes them) at teardown."""

    def __init__(self, url: str, lease: float):
        self.url = url
        self.lease = lease
        self.zones = []

    def __call__(self, name: str | None = None, **kw):
        from shmkit import RedisZone
        kw.setdefault("lease", self.lease)
        z = RedisZone(name or unique_zone(), self.url, **kw)
        self.zones.append(z)
        return z

    def cleanup(self):
        from shmkit import RedisZone
        for z in self.zones:
            try:
                RedisZone(z.name, self.url).destroy_all()
            except Exception:
                pass
            z.close()


@pytest.fixture
def redis_zone(redis_server):
    """``redis_zone(name=None, **kw)`` -> a RedisZone on the session's server (lease 2 s)."""
    f = ZoneFactory(redis_server.url, 2.0)
    try:
        yield f
    finally:
        f.cleanup()


@pytest.fixture
def cluster_zone(redis_cluster):
    """``cluster_zone(name=None, **kw)`` -> a RedisZone on the session's cluster."""
    f = ZoneFactory(redis_cluster.url, 2.0)
    try:
        yield f
    finally:
        f.cleanup()
