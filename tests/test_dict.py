"""shmkit.Dict: the API one call at a time (types, errors, memory, views, lifecycle,
other processes).  The model tests are in test_dict_model.py, crashes and concurrency
in test_dict_procs.py."""

from __future__ import annotations

import enum
import math
import multiprocessing as mp
import pickle
import threading
import time
from collections.abc import KeysView, MutableMapping

import pytest

from conftest import wait_until
from shmkit import (ClosedError, Dict, ObjectMismatchError, ObjectNotFoundError,
                    ObjectTypeError, TooLargeError, Zone, ZoneFullError)
from shmkit.dict import DEFAULT_CAPACITY, DictStats


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


class Color(enum.IntEnum):
    RED = 1


@pytest.fixture
def d(zone):
    d = zone.dict("d", 1 << 20)
    yield d
    d.close()


# -- values and keys ------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    b"", b"\x00" * 1000, "", "héllo wörld ✓", 0, -1, 2**63 - 1, -2**63, 2**63, -2**63 - 1,
    10**50, -10**50, 0.0, -0.0, 1.5, float("inf"), float("-inf"), True, False, None,
    (1, "a"), [1, 2], {"x": b"y"}, {1, 2}, Color.RED, bytearray(b"ab"), "\udcff lone surrogate",
])
def test_values_come_back_as_the_type_they_went_in(d, value):
    d["k"] = value
    got = d["k"]
    assert type(got) is type(value) and got == value
    if isinstance(value, float):
        assert math.copysign(1, got) == math.copysign(1, value)


def test_nan_round_trips(d):
    d["n"] = float("nan")
    assert math.isnan(d["n"])


def test_str_and_bytes_keys_are_distinct(d):
    d["a"] = 1
    d[b"a"] = 2
    assert (d["a"], d[b"a"], len(d)) == (1, 2, 2)
    assert sorted(d.keys(0), key=repr) == ["a", b"a"]


def test_bad_keys(d):
    for key in (1, 1.0, None, ("a",), bytearray(b"a"), memoryview(b"a")):
        with pytest.raises(TypeError):
            d[key] = 1
        with pytest.raises(TypeError):
            d.get(key)
    d["x" * 65535] = 1
    d[b"y" * 30000] = 2
    assert d["x" * 65535] == 1
    assert sorted(d, key=len) == [b"y" * 30000, "x" * 65535]   # iteration grows its buffer
    with pytest.raises(TooLargeError):
        d["x" * 65536] = 1
    with pytest.raises(ValueError):  # not UTF-8 text: ValueError, not a raw UnicodeEncodeError
        d["\udcff"] = 1


def test_bad_ttl_and_flags(d):
    for ttl in (-1, -0.001, float("nan"), float("inf"), 1e11):
        with pytest.raises(ValueError):
            d.set("k", 1, ttl)
    with pytest.raises(TypeError):
        d.set("k", 1, "1")
    for flags in (-1, 2**32, 2**70):
        with pytest.raises(ValueError):
            d.set("k", 1, flags=flags)
    with pytest.raises(TypeError):
        d.set("k", 1, flags=1.0)
    with pytest.raises(TypeError):
        d.set("k", 1, bogus=1)
    with pytest.raises(TypeError):
        d.set("k", 1, 2, 3, 4)
    with pytest.raises(TypeError):
        d.set("k")
    d.set(key="k", value=2, ttl=None, flags=2**32 - 1)
    assert d.get_with_flags("k") == (2, 2**32 - 1)


# -- the OpenResty surface --------------------------------------------------------------------

def test_openresty_return_values(zone):
    clock = Clock()
    d = zone.dict("or", 1 << 20, clock=clock)
    assert d.set("a", "x", 1.5, 7) == 0                         # evicted nothing
    assert d.get("a") == "x" and d.get_with_flags("a") == ("x", 7)
    assert d.ttl("a") == 1.5
    assert d.add("a", "y") is False and d.add("b", "y") is True
    assert d.safe_add("c", "z") is True and d.safe_add("c", "z") is False
    assert d.replace("zz", 1) is False and d.replace("b", "y2") is True
    assert d.safe_set("b", "y3") is None and d["b"] == "y3"
    clock.t += 1.5
    assert d.get("a") is None and d.get("a", "dflt") == "dflt" and "a" not in d
    assert d.get_stale("a") == ("x", 7, True)
    assert d.get_stale("b") == ("y3", 0, False) and d.get_stale("nope") == (None, 0, False)
    with pytest.raises(KeyError):
        d.ttl("a")
    assert d.expire("a", 10) is False                         # expired: not there
    assert d.expire("b", 10) is True and d.ttl("b") == 10.0
    assert d.expire("b", 0) is True and d.ttl("b") is None    # 0 (or None): never expires
    assert d.delete("b") is True and d.delete("b") is False
    assert d.incr("n", 1, init=10) == 11 and d.incr("n") == 12 and d.incr("n", -2.5) == 9.5
    with pytest.raises(KeyError):
        d.incr("missing")
    d.incr("m", 1, init=0, init_ttl=2)
    assert d.ttl("m") == 2.0
    assert d.incr("m", 5, init=100, init_ttl=60) == 6 and d.ttl("m") == 2.0  # init ignored
    d["s"] = "text"
    with pytest.raises(ObjectTypeError):
        d.incr("s")
    with pytest.raises(TypeError):
        d.incr("n", "1")
    assert d.lpush("L", 1) == 1 and d.rpush("L", 2) == 2 and d.lpush("L", 0) == 3
    assert d.llen("L") == 3 and d["L"] == [0, 1, 2] and d.llen("none") == 0
    assert d.lpop("L") == 0 and d.rpop("L") == 2 and d.rpop("L") == 1
    assert d.lpop("L") is None and d.lpop("L", "empty") == "empty" and "L" not in d
    d.rpush("L2", "x")
    d.expire("L2", 1)
    clock.t += 1
    assert d.get("L2") is None and d.get_stale("L2") == (["x"], 0, True)
    assert d.llen("L2") == 0 and d.rpop("L2") is None and d.get_stale("L2") == (None, 0, False)
    with pytest.raises(ObjectTypeError):
        d.lpush("s", 1)
    with pytest.raises(ObjectTypeError):
        d.llen("s")
    assert d.flush_expired() == 1                             # "a"
    assert sorted(d.keys(0)) == ["c", "m", "n", "s"] and len(d.keys(2)) == 2
    assert d.get_keys() == d.keys(0)
    with pytest.raises(ValueError):
        d.keys(-1)
    assert d.flush_all() == 4 and len(d) == 0 and d.free_space() == d.capacity()


def test_incr_arbitrary_precision_and_types(d):
    d["i"] = 2**63 - 1
    assert d.incr("i") == 2**63 and d["i"] == 2**63
    assert d.incr("i", -1) == 2**63 - 1 and type(d["i"]) is int
    assert d.incr("i", 10**30) == 2**63 - 1 + 10**30
    assert d.incr("i", 0.5) == 2**63 - 1 + 10**30 + 0.5
    d["f"] = 1.25
    assert d.incr("f", 2) == 3.25 and d.incr("f", 2**70) == 3.25 + 2**70
    d["t"] = True
    with pytest.raises(ObjectTypeError):
        d.incr("t")
    d.set("keep", 5, ttl=100, flags=9)
    d.incr("keep", 2**64)                                     # slow path keeps ttl and flags
    assert d.get_with_flags("keep") == (5 + 2**64, 9) and d.ttl("keep") > 99


def test_mapping_protocol(d):
    assert isinstance(d, MutableMapping)
    d.update({"a": 1, "b": 2}, c=3)
    assert len(d) == 3 and bool(d) and dict(d) == {"a": 1, "b": 2, "c": 3}
    assert isinstance(d.keys(), KeysView) and set(d.keys()) == {"a", "b", "c"}
    assert "a" in d.keys() and d.keys() & {"a", "z"} == {"a"}
    assert sorted(d.values()) == [1, 2, 3] and sorted(d.items()) == [("a", 1), ("b", 2), ("c", 3)]
    assert d == {"a": 1, "b": 2, "c": 3} and d != {"a": 1}
    assert d.pop("a") == 1 and d.pop("a", None) is None
    with pytest.raises(KeyError):
        d.pop("a")
    assert d.setdefault("b", 9) == 2 and d.setdefault("z", 9) == 9 and d["z"] == 9
    assert d.setdefault("none") is None and d["none"] is None
    k, v = d.popitem()
    assert k not in d and v in (2, 3, 9, None)
    del d["z"]
    with pytest.raises(KeyError):
        del d["z"]
    with pytest.raises(KeyError):
        d["z"]
    d.clear()
    assert len(d) == 0 and not d
    with pytest.raises(KeyError):
        d.popitem()


def test_iteration_holds_no_lock_and_sees_stable_keys_once(zone):
    d = zone.dict("it", 2 << 20, shards=4)
    for i in range(3000):
        d[f"k{i}"] = i
    seen = []
    for n, key in enumerate(d):
        seen.append(key)
        if n % 50 == 0:          # writes between batches: never blocked, never an error
            d[f"new{n}"] = n
            d.pop(f"new{n - 50}", None)
    stable = [k for k in seen if k.startswith("k")]
    assert sorted(stable) == sorted(f"k{i}" for i in range(3000))


def test_serializer(zone):
    class Json:
        import json as _json

        @classmethod
        def dumps(cls, obj):
            return cls._json.dumps(obj).encode()

        @classmethod
        def loads(cls, b):
            return cls._json.loads(b)

    d = zone.dict("json", 1 << 20, serializer=Json)
    d["x"] = {"a": [1, 2]}
    d["t"] = (1, 2)                          # json turns tuples into lists
    assert d["x"] == {"a": [1, 2]} and d["t"] == [1, 2]
    raw = Dict("json", zone=zone)            # without the serializer: pickle cannot read it
    with pytest.raises(pickle.UnpicklingError):
        raw["x"]
    with pytest.raises(TypeError):
        zone.dict("bad", 1 << 20, serializer=object())


# -- memory ---------------------------------------------------------------------------------------

def test_free_space_is_the_truth(zone):
    d = zone.dict("mem", 64 << 10, shards=1)
    assert d.capacity() == 64 << 10 and d.free_space() == 64 << 10
    value = b"v" * 100
    size = d.item_size("key00000", value)
    assert size == 160                          # 48 + 8 + 100, rounded up to 32
    n = 0
    while True:
        before = d.free_space()
        try:
            d.safe_set(f"key{n:05d}", value)
        except ZoneFullError:
            assert before < size
            break
        assert d.free_space() == before - size
        n += 1
    assert n == (64 << 10) // size
    # what is left can really be used: a value that takes exactly the free space fits
    left = d.free_space()
    d.delete("key00000")
    d.delete("key00002")                        # two holes: the value goes in fragments
    free = d.free_space()
    assert free == left + 2 * size
    # three free runs (two holes, the tail): header and key in the first, and each of
    # the other two costs an 8-byte fragment header; one byte more does not fit
    fits = free - 48 - 8 - 2 * 8
    with pytest.raises(ZoneFullError):
        d.safe_set("bigvalue", b"x" * (fits + 1))
    big = (bytes(range(256)) * (fits // 256 + 1))[:fits]
    d.safe_set("bigvalue", big)
    assert d["bigvalue"] == big and d.free_space() == 0
    assert d.check() == []
    st = d.statistics()
    assert isinstance(st, DictStats) and st.capacity == 64 << 10 and st.memory > st.capacity
    assert st.free_space == d.free_space() and st.items == n - 1 and st.shards == 1


def test_set_evicts_and_says_so_safe_set_keeps_the_old_value(zone):
    d = zone.dict("ev", 16 << 10, shards=1)
    value = b"x" * 200
    evicted = [d.set(f"k{i:03d}", value) for i in range(200)]
    assert evicted[:50] == [0] * 50 and sum(evicted) > 100
    assert d.statistics().evictions == sum(evicted)
    assert len(d) == 200 - sum(evicted) and "k199" in d and "k000" not in d
    d.set("small", b"s")
    with pytest.raises(ZoneFullError, match="safe_"):
        d.safe_set("small", b"y" * 4000)
    assert d["small"] == b"s"                   # OpenResty would have lost it
    with pytest.raises(TooLargeError):
        d.set("huge", b"y" * (17 << 10))        # more than the shard holds
    assert d.check() == []


def test_flush_all_frees_memory(zone):
    d = zone.dict("fl", 256 << 10)
    for i in range(1000):
        d.set(f"k{i}", b"x" * 100, ttl=i % 2 or None)
        d.lpush("list", i)
    assert d.free_space() < d.capacity() // 2
    assert d.flush_all() == 1001
    assert d.free_space() == d.capacity() and len(d) == 0 and d.llen("list") == 0
    assert d.statistics().items == 0 and d.check() == []


def test_ttl_with_the_real_clock(d):
    d.set("short", 1, ttl=0.05)
    d.set("long", 1, ttl=60)
    assert "short" in d
    wait_until(lambda: "short" not in d, timeout=10, what="the 50 ms ttl to pass")
    assert d.get_stale("short") == (1, 0, True) and "long" in d
    assert d.flush_expired() == 1 and d.get_stale("short") == (None, 0, False)
    assert 59 < d.ttl("long") <= 60


def test_millisecond_resolution(zone):
    clock = Clock(1000.0)
    d = zone.dict("ms", 1 << 20, clock=clock)
    d.set("k", 1, ttl=0.0004)                   # rounds to 0 ms: still expires (1 ms)
    d.set("j", 1, ttl=0.25)
    assert d.ttl("k") == 0.001 and d.ttl("j") == 0.25
    clock.t += 0.001
    assert "k" not in d and "j" in d
    clock.t += 0.248
    assert "j" in d
    clock.t += 0.001
    assert "j" not in d and len(d) == 0


def test_lists_hold_any_value_and_large_ones(d):
    values = [b"b" * 3000, "s", 1, 2**100, 1.5, None, True, (1, 2)]
    for v in values:
        d.rpush("L", v)
    assert d["L"] == values and d.llen("L") == len(values)
    assert d.pop("L") == values and "L" not in d


def test_statistics_count_hits_and_misses(d):
    d["a"] = 1
    before = d.statistics()
    for _ in range(3):
        d["a"]
    d.get("zz")
    "a" in d
    st = d.statistics()
    assert (st.hits - before.hits, st.misses - before.misses) == (4, 1)


# -- identity, attaching, lifecycle -------------------------------------------------------------

def test_identity_and_attaching(zone):
    d = zone.dict("same", 1 << 20)
    assert d.created
    d["x"] = 1
    again = Dict("same", zone=zone)             # no capacity: whatever exists
    assert not again.created and again["x"] == 1 and again.capacity() == 1 << 20
    assert Dict("same", 1 << 20, zone=zone)["x"] == 1
    with pytest.raises(ObjectMismatchError, match="capacity 1048576"):
        Dict("same", 2 << 20, zone=zone)
    with pytest.raises(ObjectMismatchError):
        Dict("same", 1 << 20, zone=zone, shards=4)
    with pytest.raises(ObjectNotFoundError):
        Dict("absent", zone=zone, create=False)
    zone.create("raw", 64)
    with pytest.raises(ObjectTypeError):
        Dict("raw", zone=zone)
    assert zone.find("same").type == "dict"


def test_bad_constructor_arguments(zone):
    for cap in (0, -1, 1.5, True, "1m"):
        with pytest.raises(ValueError):
            Dict("x", cap, zone=zone)
    for shards in (0, 3, 512, True):
        with pytest.raises(ValueError):
            Dict("x", 1 << 20, zone=zone, shards=shards)
    with pytest.raises(ValueError):
        Dict("x", 1024, zone=zone)              # below the minimum
    with pytest.raises(ValueError):
        Dict("x", 64 << 10, zone=zone, shards=64)   # 1 KiB shards
    with pytest.raises(TypeError):
        Dict("x", 1 << 20, zone="zone")
    with pytest.raises(TypeError):
        Dict("x", 1 << 20, zone=zone, clock=5)
    with pytest.raises(ValueError):
        Dict("", 1 << 20, zone=zone)


def test_default_capacity_and_zone(monkeypatch, name):
    monkeypatch.setenv("SHMKIT_ZONE", name)
    import shmkit.zone as zmod

    monkeypatch.setattr(zmod, "_default", None)
    d = Dict("in-default-zone")
    try:
        assert d.capacity() == DEFAULT_CAPACITY and d.zone.name == name
        d["a"] = 1
        assert Dict("in-default-zone")["a"] == 1
    finally:
        d.close()
        d.zone.close()


def test_close_and_destroy(zone):
    with zone.dict("c", 1 << 20) as d:
        d["a"] = 1
    assert d.closed and "closed" in repr(d)
    with pytest.raises(ClosedError):
        d["a"]
    with pytest.raises(ClosedError):
        d["a"] = 2
    e = Dict("c", zone=zone)
    assert e["a"] == 1 and "capacity=" in repr(e)
    e.destroy()
    assert "c" not in zone


def test_zone_closed_under_the_dict(name):
    z = Zone(name, 4 << 20)
    d = z.dict("d", 1 << 20)
    d["a"] = 1
    z.close()
    with pytest.raises(ClosedError):
        d["a"]
    assert d.closed
    del d                                       # the mapping goes with the last handle


def test_threads_of_one_process_increment_exactly(d):
    def work():
        for _ in range(2000):
            d.incr("n", 1, init=0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert d["n"] == 8000


def test_calls_wait_without_the_gil_for_a_shard_another_thread_holds(name):
    # flush_all runs without the GIL and holds each shard's lock in turn, seq odd: the
    # other thread's calls find the shard busy, give up without waiting (EBUSY) and are
    # made again with the GIL released, waiting for the lock. Every kind of call, each
    # with an answer that must hold whatever the flushes did meanwhile.
    z = Zone(name, 16 << 20)
    try:
        d = z.dict("busy", 8 << 20, shards=4)
        stop = threading.Event()

        def flusher():
            for _ in range(100_000):
                if stop.is_set():
                    return
                d.flush_all()

        t = threading.Thread(target=flusher)
        t.start()
        try:
            big = b"x" * 3000
            for i in range(1000):
                k = f"k{i % 50}"
                d[k] = big
                assert d.get(k) in (big, None)
                assert d.incr("n", 1, init=0) >= 1
                assert (k in d) in (True, False)
                assert d.pop(k, None) in (big, None)
                assert d.setdefault(k, i) in (i, big)
                assert d.lpush("L", i) >= 1
                assert d.rpop("L") in (i, None)
                assert d.llen("L") >= 0 and len(d) >= 0
                assert d.expire(k, 100) in (True, False)
                d.get_keys(10)
        finally:
            stop.set()
            t.join(60)
        assert not t.is_alive()
        assert d.check() == []
    finally:
        z.close()
        z.unlink()


def _child_rw(d, out):
    out.put((d["from-parent"], d.incr("n", 1, init=0), type(d).__name__))
    d["from-child"] = b"hello"


def test_handles_pickle_into_children(zone, ctx):
    d = zone.dict("shared", 1 << 20, serializer=pickle)
    d["from-parent"] = [1, "two"]
    q = ctx.Queue()
    p = ctx.Process(target=_child_rw, args=(d, q))
    p.start()
    try:
        assert q.get(timeout=60) == ([1, "two"], 1, "Dict")
        p.join(60)
        assert p.exitcode == 0 and d["from-child"] == b"hello"
    finally:
        if p.is_alive():
            p.kill()


def _attach_before_growth(zone_name, ready, go, out):
    z = Zone(zone_name)                          # attached while the zone is small
    ready.set()
    go.wait(60)
    d = Dict("big", zone=z, create=False)        # the dict lies beyond what we mapped
    out.put((d["last"], len(d)))


def test_dict_in_a_zone_that_grows(name):
    z = Zone(name, 1 << 20, max_size=64 << 20)
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_attach_before_growth, args=(name, ready, go, out))
    p.start()
    try:
        assert ready.wait(60)
        d = z.dict("big", 16 << 20)              # grows the zone
        assert z.size > 16 << 20
        for i in range(100):
            d[f"k{i}"] = i
        d["last"] = "x"
        go.set()
        assert out.get(timeout=60) == ("x", 101)
        p.join(60)
    finally:
        if p.is_alive():
            p.kill()
        z.close()
        z.unlink()


def test_check_reports_a_scribble(zone):
    d = zone.dict("scribble", 64 << 10, shards=1)
    for i in range(50):
        d[f"k{i}"] = b"v" * 40
    assert d.check() == []
    # overwrite the used bitmap of the shard: derived state, reported, then rebuilt
    st = d._stats()
    view = zone.view(d._offset, st["memory"])
    header = memoryview(view)
    data_off = int.from_bytes(header[48:56], "little")
    used_off = int.from_bytes(header[64:72], "little")
    header[data_off + used_off] ^= 0xFF
    problems = d.check()
    assert problems and any("marked used/free wrongly" in p for p in problems)
    d._debug_crash_at(0)
    del header, view
