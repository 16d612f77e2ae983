"""RedisZone itself: the directory of objects, names, pickling, open_zone, the optional
dependency, hash tags on a real cluster, errors for an unreachable server."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import subprocess
import sys

import pytest

import shmkit
from shmkit import (InvalidNameError, ObjectExistsError, ObjectNotFoundError, ObjectTypeError,
                    RedisZone)
from shmkit.redis import BackendConnectionError

from redis_support import free_port


def test_directory_and_types(redis_zone):
    z = redis_zone()
    z.queue("q")
    z.dict("d")
    z.lock("l")
    assert [o.name for o in z.objects()] == ["d", "l", "q"]
    assert {o.name: o.type for o in z.objects()} == {"d": "dict", "l": "lock", "q": "queue"}
    assert "q" in z and "nope" not in z
    info = z.find("q")
    assert info.type == "queue" and info.created_ns > 0 and str(os.getpid()) in info.creator
    with pytest.raises(ObjectTypeError):
        z.dict("q")
    with pytest.raises(ObjectNotFoundError):
        z.queue("missing", create=False)
    with pytest.raises(ObjectExistsError):
        z.queue("q", exclusive=True)
    z.destroy("q")
    assert "q" not in z
    assert z.execute("KEYS", "shmkit:{" + z.name + "/q}*") == []


def test_names(redis_zone):
    with pytest.raises(InvalidNameError):
        RedisZone("a/b", "redis://127.0.0.1:1/0")
    with pytest.raises(InvalidNameError):
        RedisZone("", "redis://127.0.0.1:1/0")
    with pytest.raises(InvalidNameError):
        RedisZone("}x", "redis://127.0.0.1:1/0")
    z = redis_zone()
    with pytest.raises(InvalidNameError):
        z.queue("")
    with pytest.raises(InvalidNameError):
        z.queue("x" * 64)
    # glob characters and braces in names are fine: keys stay in their own object
    d = z.dict("we*ird{na}me?")
    d["k"] = 1
    other = z.dict("we")
    other["k"] = 2
    assert len(d) == 1 and len(other) == 1
    assert d.flush_all() == 1 and other["k"] == 2


def _child_roundtrip(objs, out):
    zone, q, d, lock, ev, board, cfg = objs
    out.put((q.get(timeout=30), d["k"], lock.name, ev.is_set(), board.read()[0],
             cfg.snapshot()["x"], zone.name))


def test_objects_pickle_by_name_into_spawned_children(redis_zone):
    z = redis_zone()
    q, d, lock, ev = z.queue("q"), z.dict("d"), z.lock("l"), z.event("e")
    board, cfg = z.board("b", 1000), z.config("c")
    q.put(b"hello")
    d["k"] = [1, 2]
    ev.set()
    board.publish("frame")
    cfg.publish({"x": 1})
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_child_roundtrip, args=((z, q, d, lock, ev, board, cfg), out))
    p.start()
    try:
        assert out.get(timeout=60) == (b"hello", [1, 2], "l", True, "frame", 1, z.name)
    finally:
        p.join(30)
    for obj in (z, q, d, lock, ev, board, cfg):
        assert type(pickle.loads(pickle.dumps(obj))) is type(obj)


def test_open_zone(redis_server, redis_zone, monkeypatch, name):
    z = shmkit.open_zone(f"{redis_server.url}?zone=oz-{os.getpid()}", lease=3)
    try:
        assert isinstance(z, RedisZone) and z.name == f"oz-{os.getpid()}" and z.lease == 3
        z.counter("c").add(2)
        monkeypatch.setenv("SHMKIT_ZONE_URL", f"{redis_server.url}?zone=oz-{os.getpid()}")
        again = shmkit.open_zone()
        assert again.counter("c").get() == 2
        again.close()
    finally:
        z.destroy_all()
        z.close()
    local = shmkit.open_zone(name, size=4 << 20)
    try:
        assert isinstance(local, shmkit.Zone)
        local.counter("c").add(1)
        assert shmkit.open_zone(name).counter("c").get() == 1
    finally:
        local.close()
    with pytest.raises(ValueError, match="scheme"):
        shmkit.open_zone("http://example.invalid/")


def test_without_redis_py_the_import_error_names_the_extra():
    code = ("import sys; sys.modules['redis'] = None\n"
            "import shmkit\n"
            "try:\n    shmkit.RedisZone\n"
            "except ImportError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install shmkit[redis]" in r.stdout, r.stderr
    code = code.replace("shmkit.RedisZone", "shmkit.open_zone('redis://127.0.0.1/0')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install shmkit[redis]" in r.stdout, r.stderr


def test_unreachable_server_is_a_connection_error():
    z = RedisZone("x", f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    with pytest.raises(BackendConnectionError) as exc:
        z.dict("d")
    assert isinstance(exc.value, ConnectionError)
    with pytest.raises(ConnectionError):
        z.queue("q")


def test_every_key_of_an_object_shares_one_cluster_slot(cluster_zone):
    z = cluster_zone()
    assert z.cluster
    q = z.queue("jobs", delivery="at-least-once")
    q.put_many([b"a", b"b"])
    q.get()
    lock = z.lock("l")
    lock.acquire()
    d = z.dict("cache")
    for i in range(50):
        d[f"key{i}"] = i
    slots = {}
    client = z.client
    for name in ("jobs", "l", "cache"):
        keys = list(z._object_keys(name))
        assert keys, name
        slots[name] = {client.keyslot(k) for k in keys}
        assert len(slots[name]) == 1, (name, slots[name])
    lock.release()
    # different objects may live on different nodes: that is the point of a cluster
    assert len(d) == 50


def test_cluster_objects_spread_over_nodes(cluster_zone):
    z = cluster_zone()
    client = z.client
    nodes = {client.get_node_from_key(z.base(f"c{i}")).name for i in range(40)}
    assert len(nodes) == 3
    for i in range(40):
        z.counter(f"c{i}").add(i)
    assert sum(z.counter(f"c{i}").get() for i in range(40)) == sum(range(40))
