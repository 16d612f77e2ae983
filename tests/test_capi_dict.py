"""The dict across C (libshmkit) and Python processes: concurrent increments from both add
up exactly; what one side stores the other reads (bytes, str, ints, TTLs); the errors C
gets for what it cannot read; ENOBUFS; add/replace/safe."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import shmkit
from capi_support import CSRC, build, run
from conftest import unique, wait_until

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    return build(os.path.join(CSRC, "peer.c"), str(tmp_path_factory.mktemp("capi-dict")))


@pytest.fixture
def zname():
    n = unique("shmkit-capi-d")
    yield n
    try:
        os.unlink(f"/dev/shm/{n}")
    except FileNotFoundError:
        pass


@pytest.fixture
def zone(zname):
    z = shmkit.Zone(zname, 4 << 20, max_size=64 << 20)   # grows for a default-size dict
    yield z
    z.close()


@pytest.fixture
def d(zone):
    return zone.dict("cache", 64 << 10)


def op(peer, zname, *args):
    return run(peer, "dict", args[0], zname, "cache", *args[1:])


PY_INCR = r"""
import sys, shmkit
d = shmkit.Zone(sys.argv[1]).dict("cache")
for _ in range(int(sys.argv[2])):
    d.incr(b"hits", 1, 0)
"""


@pytest.mark.parametrize("n", [20_000, pytest.param(250_000, marks=pytest.mark.slow)])
def test_incr_from_c_and_python_processes_adds_up_exactly(peer, zone, zname, d, n):
    ps = [subprocess.Popen([peer, "dict-incr", zname, "cache", "hits", str(n)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    ps += [subprocess.Popen([sys.executable, "-c", PY_INCR, zname, str(n)],
                            stderr=subprocess.PIPE) for _ in range(2)]
    try:
        for p in ps:
            _, err = p.communicate(timeout=500)
            assert p.returncode == 0, err
    finally:
        for p in ps:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    assert d.get(b"hits") == 4 * n
    assert op(peer, zname, "get-int", "hits") == {"result": "OK", "value": str(4 * n)}
    assert d.check() == [] if hasattr(d, "check") else True


def test_values_both_ways(peer, zname, d):
    # C -> Python
    assert op(peer, zname, "set", "greeting", "hello from C", 0, "")["result"] == "OK"
    assert d.get(b"greeting") == b"hello from C"
    assert "greeting" not in d                       # bytes keys, not str keys
    assert op(peer, zname, "set-int", "n", -42, 0, "")["result"] == "OK"
    assert d.get(b"n") == -42 and type(d.get(b"n")) is int
    assert d.incr(b"n", 2) == -40
    # Python -> C
    d[b"raw"] = b"\x00bytes from Python"
    f = op(peer, zname, "get", "raw")
    assert f["result"] == "OK" and f["len"] == "18"
    d[b"text"] = "unicode é"
    f = op(peer, zname, "get", "text")
    assert f["result"] == "OK" and f["value"] == "unicode é"    # str: its UTF-8 bytes
    d[b"count"] = 7
    assert op(peer, zname, "get-int", "count") == {"result": "OK", "value": "7"}
    assert op(peer, zname, "incr", "count", 5)["value"] == "12"
    assert d[b"count"] == 12
    # delete
    assert op(peer, zname, "delete", "count")["result"] == "OK"
    assert b"count" not in d
    assert op(peer, zname, "delete", "count")["result"] == "ENOTFOUND"
    assert op(peer, zname, "get", "count")["result"] == "ENOTFOUND"


def test_types_c_cannot_read(peer, zname, d):
    d[b"f"] = 1.5
    d[b"big"] = 1 << 80
    d[b"obj"] = {"a": 1}
    d[b"none"] = None
    for key in ("f", "obj", "none"):
        assert op(peer, zname, "get", key)["result"] == "ETYPE", key
        assert op(peer, zname, "get-int", key)["result"] == "ETYPE", key
    assert op(peer, zname, "get-int", "big")["result"] == "ERANGE"
    assert op(peer, zname, "get", "big")["result"] == "ETYPE"
    f = op(peer, zname, "get", "raw-missing")
    assert f["result"] == "ENOTFOUND"
    # incr: bytes is not a number (nothing changes); a sum beyond int64 is stored exactly
    d[b"b"] = b"x"
    assert op(peer, zname, "incr", "b", 1)["result"] == "ETYPE" and d[b"b"] == b"x"
    d[b"i"] = (1 << 63) - 1
    f = op(peer, zname, "incr", "i", 1)
    assert f["result"] == "ERANGE" and d[b"i"] == 1 << 63
    assert op(peer, zname, "incr", "big", 1)["result"] == "ERANGE" and d[b"big"] == (1 << 80) + 1
    f = op(peer, zname, "incr", "f", 1)                 # a float stays a float, as in Python
    assert f["result"] == "ETYPE" and d[b"f"] == 2.5
    # incr of a missing key: ENOTFOUND without init, init + step with it
    assert op(peer, zname, "incr", "fresh", 3)["result"] == "ENOTFOUND"
    assert op(peer, zname, "incr", "fresh", 3, 10)["value"] == "13"


def test_enobufs_says_the_room_needed(peer, zname, d):
    d[b"long"] = b"v" * 5000
    f = op(peer, zname, "get", "long", 100)
    assert f == {"result": "ENOBUFS", "len": "5000"}
    f = op(peer, zname, "get", "long", 5000)
    assert f["result"] == "OK" and f["value"] == "v" * 5000


def test_ttl_set_from_c_expires_for_python(peer, zname, d):
    assert op(peer, zname, "set", "temp", "soon gone", 0.3, "")["result"] == "OK"
    assert 0 < d.ttl(b"temp") <= 0.3
    f = op(peer, zname, "ttl", "temp")
    assert f["result"] == "OK" and 0 < float(f["ttl"]) <= 0.3
    wait_until(lambda: d.get(b"temp") is None, 10, what="the C-set key to expire")
    assert op(peer, zname, "get", "temp")["result"] == "ENOTFOUND"
    d.set(b"forever", b"x")
    assert op(peer, zname, "ttl", "forever") == {"result": "OK", "ttl": "-1.000"}
    d.set(b"py-ttl", b"x", ttl=100)
    assert 99 < float(op(peer, zname, "ttl", "py-ttl")["ttl"]) <= 100


def test_add_replace_safe(peer, zname, d):
    assert op(peer, zname, "set", "k", "1", 0, "a")["result"] == "OK"
    assert op(peer, zname, "set", "k", "2", 0, "a")["result"] == "EEXISTS"
    assert d[b"k"] == b"1"
    assert op(peer, zname, "set", "missing", "2", 0, "r")["result"] == "ENOTFOUND"
    assert op(peer, zname, "set", "k", "3", 0, "r")["result"] == "OK" and d[b"k"] == b"3"
    assert op(peer, zname, "set", "k", "4", 0, "ar")["result"] == "EINVAL"
    assert op(peer, zname, "set", "k", "5", 0, "s")["result"] == "OK" and d[b"k"] == b"5"
    big = "z" * 100_000                                 # larger than the whole dict
    assert op(peer, zname, "set", "huge", big, 0, "")["result"] == "ETOOBIG"


def test_open_errors(peer, zone, zname, d):
    assert run(peer, "open", "dict", zname, "cache", 0, "-")["result"] == "0"
    f = run(peer, "open", "dict", zname, "cache", 1 << 20, "c")
    assert f["result"] == str(shmkit._core.E_OBJMISMATCH)
    assert run(peer, "open", "dict", zname, "cache", 0, "x")["result"] == str(shmkit._core.E_EXISTS)
    assert run(peer, "open", "dict", zname, "nope", 0, "-")["result"] == str(shmkit._core.E_NOTFOUND)
    zone.queue("a-queue", 65536)
    assert run(peer, "open", "dict", zname, "a-queue", 0, "c")["result"] == str(shmkit._core.E_TYPE)
    # created from C with the default capacity, opened by Python as it is
    assert run(peer, "open", "dict", zname, "from-c", 0, "c")["result"] == "0"
    assert zone.dict("from-c").capacity() == 16 << 20
