"""What is particular to RedisDict: the value encoding seen from raw Redis, incr on every
numeric kind, batches, TTLs in milliseconds, options that cannot apply."""

from __future__ import annotations

import json
import pickle
import time

import pytest

from shmkit import ObjectMismatchError, ObjectTypeError


def test_values_as_redis_sees_them(redis_zone):
    z = redis_zone()
    d = z.dict("d")
    d["n"] = 42
    d["b"] = b"raw"
    raw_key = z.base("d") + ":k:s:n"
    assert z.execute("GET", raw_key) == b"42"          # an int is its decimal text
    z.execute("INCRBY", raw_key, 8)                     # so plain Redis clients can add to it
    assert d["n"] == 50
    assert z.execute("GET", z.base("d") + ":k:s:b") == b"\x00raw"


def test_incr_keeps_types_and_ttl(redis_zone):
    d = redis_zone().dict("d")
    d.set("i", 1, ttl=30, flags=5)
    assert d.incr("i", 2) == 3 and d.get_with_flags("i") == (3, 5)
    assert 29 < d.ttl("i") <= 30                          # incr keeps the expiry
    assert d.incr("i", 0.5) == 3.5 and type(d["i"]) is float
    d["f"] = 1.0
    assert d.incr("f", 1.0) == 2.0 and type(d["f"]) is float
    d["big"] = 2 ** 63 - 1
    assert d.incr("big", 1) == 2 ** 63                    # beyond int64: exact, as Python
    assert d.incr("big", -1) == 2 ** 63 - 1
    assert d.incr("huge", 2 ** 100, init=1) == 2 ** 100 + 1
    d["t"] = True
    with pytest.raises(ObjectTypeError):
        d.incr("t")
    with pytest.raises(TypeError):
        d.incr("i", "1")


def test_ttl_in_milliseconds(redis_zone):
    d = redis_zone().dict("d")
    d.set("k", 1, ttl=0.25)
    assert 0.2 < d.ttl("k") <= 0.25
    time.sleep(0.3)
    assert d.get("k") is None and "k" not in d
    with pytest.raises(KeyError):
        d.ttl("k")
    for bad in (-1, float("nan"), 1e11):
        with pytest.raises(ValueError):
            d.set("k", 1, ttl=bad)
    with pytest.raises(ValueError):
        d.set("k", 1, flags=2 ** 32)


def test_batches(redis_zone):
    d = redis_zone().dict("d")
    d.set_many({"a": 1, "b": "two", b"c": b"3"})
    d.set_many([("t", 1)], ttl=5)
    assert d.get_many(["a", "b", b"c", "missing"], default=0) == [1, "two", b"3", 0]
    assert 4 < d.ttl("t") <= 5
    assert d.get_many([]) == []


def test_options(redis_zone):
    z = redis_zone()
    z.dict("cap", 1 << 20)
    with pytest.raises(ObjectMismatchError):
        z.dict("cap", 2 << 20)
    assert z.dict("cap").name == "cap"
    with pytest.raises(ValueError, match="clock"):
        z.dict("d", clock=time.time)
    d = z.dict("j", serializer=json)
    d["obj"] = {"a": [1, 2]}
    again = pickle.loads(pickle.dumps(d))                  # the serializer travels by name
    assert again["obj"] == {"a": [1, 2]}
