"""The behavioural suite: every test here runs against a local ``shmkit.Zone`` and a
``shmkit.RedisZone`` on a real redis-server and on a real 3-master Redis Cluster,
through one fixture, ``backend``.  What differs between them is what docs/redis.md says
differs, and it comes from the fixture (how long a dead holder takes to be noticed),
never from ``if backend == ...`` in a test.

Tests of task_done()/join()/delivery modes use ``queue_backend`` (the same three
backends; issue 18 gave the local queue these methods).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import uuid

import pytest


class Backend:
    """A zone factory and the few facts that differ between backends."""

    def __init__(self, kind: str, request):
        self.kind = kind
        self._request = request
        self._local = []
        self._redis = None
        if kind == "local":
            # a dead lock holder or consumer is noticed within milliseconds
            self.death_grace = 1.0
        else:
            self._redis = request.getfixturevalue("redis_zone" if kind == "redis"
                                                  else "cluster_zone")
            # a dead process's leases run out after `lease` seconds (2 s in tests)
            self.death_grace = self._redis.lease + 2.5

    def zone(self):
        if self.kind == "local":
            from shmkit import Zone
            z = Zone(f"shmkit-test-{os.getpid()}-{uuid.uuid4().hex[:10]}", 8 << 20,
                     max_size=256 << 20)
            self._local.append(z)
            return z
        return self._redis()

    def cleanup(self):
        for z in self._local:
            try:
                z.close()
            finally:
                try:
                    z.unlink()
                except FileNotFoundError:
                    pass

    def __repr__(self):
        return f"<Backend {self.kind}>"


BACKENDS = ["local", "redis", "cluster"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    b = Backend(request.param, request)
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture(params=BACKENDS)
def queue_backend(request):
    b = Backend(request.param, request)
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def spawn():
    """Start spawned children; SIGKILL whatever still runs at teardown."""
    ctx = mp.get_context("spawn")
    started = []

    def start(target, *args):
        p = ctx.Process(target=target, args=args, daemon=True)
        p.start()
        started.append(p)
        return p

    start.ctx = ctx
    yield start
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(10)
