"""shmkit.Dict against reference implementations in Python (hypothesis stateful tests).

1. Semantics: every operation of the lua_shared_dict surface and of MutableMapping, on
   values of every type, with TTLs on a controllable clock (expired items invisible,
   except to get_stale, until something reclaims them), flags, lists and incr.
2. Eviction order: one shard, items of one size, so the model knows exactly when memory
   runs out; it then predicts which items the CLOCK (second chance) hand reclaims or
   evicts, and set()'s count of evictions, including TTLs and safe_set/safe_add refusals;
   updates of a key happen in place, keep its place in the queue and count as a use.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)

from shmkit import Dict, ObjectTypeError, Zone, ZoneFullError

START_MS = 1_700_000_000_000
_names = itertools.count()


class Clock:
    """The dict's time source: milliseconds we advance by hand."""

    def __init__(self):
        self.ms = START_MS

    def __call__(self) -> float:
        return self.ms / 1000.0


class SharedList(list):
    """Model of a list made by lpush/rpush (as opposed to a list stored as a value)."""


def ttl_ms(ttl) -> int:
    if ttl is None or ttl == 0:
        return 0
    return max(1, round(ttl * 1000))


def same(a, b) -> bool:
    if isinstance(a, SharedList):
        return type(b) is list and list(a) == b
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


@pytest.fixture(scope="module")
def model_zone(request):
    from conftest import unique

    name = unique("shmkit-dict-model")
    z = Zone(name, 64 << 20)
    yield z
    z.close()
    z.unlink()


# -- 1. semantics ------------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "ключ", "", b"a", b"b", b"", b"\x00\xff"])
VALUES = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=40),
    st.integers(-2**63, 2**63 - 1),
    st.integers(-2**70, 2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.tuples(st.integers(), st.text(max_size=4)),
    st.lists(st.integers(), max_size=4),
    st.binary(min_size=600, max_size=3000),
)
TTLS = st.one_of(st.none(), st.just(0), st.integers(1, 4000).map(lambda ms: ms / 1000))
FLAGS = st.integers(0, 2**32 - 1)
STEPS = st.one_of(st.integers(-2**65, 2**65), st.integers(-5, 5),
                  st.floats(-1e6, 1e6, allow_nan=False))
INITS = st.one_of(st.none(), st.integers(-10, 10), st.floats(-10, 10))


class DictSemantics(RuleBasedStateMachine):
    zone: Zone = None

    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.d = Dict(f"sem-{next(_names)}", 4 << 20, zone=self.zone, shards=2, clock=self.clock)
        self.items = {}   # key -> [value, flags, expire_ms]  (expired ones until reclaimed)

    def teardown(self):
        try:
            assert self.d.check() == []
        finally:
            self.d.destroy()

    # -- model helpers
    def live(self, k):
        it = self.items.get(k)
        if it is None or (it[2] and it[2] <= self.clock.ms):
            return None
        return it

    def expire_of(self, ttl):
        ms = ttl_ms(ttl)
        return self.clock.ms + ms if ms else 0

    # -- time
    @rule(ms=st.integers(0, 3000))
    def advance(self, ms):
        self.clock.ms += ms

    # -- stores
    @rule(k=KEYS, v=VALUES, ttl=TTLS, flags=FLAGS)
    def set(self, k, v, ttl, flags):
        assert self.d.set(k, v, ttl=ttl, flags=flags) == 0
        self.items[k] = [v, flags, self.expire_of(ttl)]

    @rule(k=KEYS, v=VALUES, ttl=TTLS)
    def safe_set(self, k, v, ttl):
        assert self.d.safe_set(k, v, ttl) is None
        self.items[k] = [v, 0, self.expire_of(ttl)]

    @rule(k=KEYS, v=VALUES, ttl=TTLS, flags=FLAGS, safe=st.booleans())
    def add(self, k, v, ttl, flags, safe):
        added = (self.d.safe_add if safe else self.d.add)(k, v, ttl, flags)
        assert added is (self.live(k) is None)
        if added:
            self.items[k] = [v, flags, self.expire_of(ttl)]

    @rule(k=KEYS, v=VALUES, ttl=TTLS)
    def replace(self, k, v, ttl):
        replaced = self.d.replace(k, v, ttl=ttl)
        assert replaced is (self.live(k) is not None)
        if replaced:
            self.items[k] = [v, 0, self.expire_of(ttl)]

    @rule(k=KEYS, v=VALUES)
    def setitem(self, k, v):
        self.d[k] = v
        self.items[k] = [v, 0, 0]

    # -- lookups
    @rule(k=KEYS)
    def get(self, k):
        it = self.live(k)
        got = self.d.get(k, "<missing>")
        assert same(it[0], got) if it else got == "<missing>"
        value, flags = self.d.get_with_flags(k)
        assert (same(it[0], value) and flags == it[1]) if it else (value is None and flags == 0)
        assert (k in self.d) is (it is not None)

    @rule(k=KEYS)
    def getitem(self, k):
        it = self.live(k)
        if it is None:
            with pytest.raises(KeyError):
                self.d[k]
        else:
            assert same(it[0], self.d[k])

    @rule(k=KEYS)
    def get_stale(self, k):
        it = self.items.get(k)
        value, flags, stale = self.d.get_stale(k)
        if it is None:
            assert (value, flags, stale) == (None, 0, False)
        else:
            assert same(it[0], value) and flags == it[1]
            assert stale is bool(it[2] and it[2] <= self.clock.ms)

    @rule(k=KEYS)
    def ttl(self, k):
        it = self.live(k)
        if it is None:
            with pytest.raises(KeyError):
                self.d.ttl(k)
        elif it[2] == 0:
            assert self.d.ttl(k) is None
        else:
            assert self.d.ttl(k) == (it[2] - self.clock.ms) / 1000

    # -- removal
    @rule(k=KEYS)
    def delete(self, k):
        assert self.d.delete(k) is (self.live(k) is not None)
        self.items.pop(k, None)

    @rule(k=KEYS)
    def delitem(self, k):
        if self.live(k) is None:
            with pytest.raises(KeyError):
                del self.d[k]
        else:
            del self.d[k]
        self.items.pop(k, None)

    @rule(k=KEYS, with_default=st.booleans())
    def pop(self, k, with_default):
        it = self.live(k)
        if it is None:
            if with_default:
                assert self.d.pop(k, "dflt") == "dflt"
            else:
                with pytest.raises(KeyError):
                    self.d.pop(k)
        else:
            assert same(it[0], self.d.pop(k))
        self.items.pop(k, None)

    @rule(k=KEYS, v=VALUES)
    def setdefault(self, k, v):
        it = self.live(k)
        got = self.d.setdefault(k, v)
        if it is None:
            assert same(v, got)
            self.items[k] = [v, 0, 0]
        else:
            assert same(it[0], got)

    # -- numbers
    @rule(k=KEYS, step=STEPS, init=INITS, init_ttl=TTLS)
    def incr(self, k, step, init, init_ttl):
        it = self.live(k)
        if it is None:
            if init is None:
                with pytest.raises(KeyError):
                    self.d.incr(k, step)
                return
            new = init + step
            assert same(new, self.d.incr(k, step, init=init, init_ttl=init_ttl))
            self.items[k] = [new, 0, self.expire_of(init_ttl)]
            return
        old = it[0]
        if type(old) not in (int, float):
            with pytest.raises(ObjectTypeError):
                self.d.incr(k, step, init=init)
            return
        new = old + step
        assert same(new, self.d.incr(k, step, init=init, init_ttl=init_ttl))
        it[0] = new

    # -- expiry
    @rule(k=KEYS, ttl=TTLS)
    def expire(self, k, ttl):
        it = self.live(k)
        assert self.d.expire(k, ttl) is (it is not None)
        if it is not None:
            it[2] = self.expire_of(ttl)

    @rule()
    def flush_expired(self):
        expired = [k for k in self.items if self.live(k) is None]
        assert self.d.flush_expired() == len(expired)
        for k in expired:
            del self.items[k]

    @rule(n=st.integers(1, 3))
    def flush_expired_some(self, n):
        expired = {k for k in self.items if self.live(k) is None}
        assert self.d.flush_expired(n) == min(n, len(expired))
        for k in expired:   # which ones went is the dict's choice: ask it
            if self.d.get_stale(k)[2] is False:
                del self.items[k]

    @precondition(lambda self: len(self.items) > 6)
    @rule()
    def flush_all(self):
        assert self.d.flush_all() == len(self.items)
        self.items.clear()

    # -- lists
    @rule(k=KEYS, v=VALUES, right=st.booleans())
    def push(self, k, v, right):
        it = self.live(k)
        if it is not None and not isinstance(it[0], SharedList):
            with pytest.raises(ObjectTypeError):
                (self.d.rpush if right else self.d.lpush)(k, v)
            return
        if it is None:
            it = self.items[k] = [SharedList(), 0, 0]
        if right:
            it[0].append(v)
        else:
            it[0].insert(0, v)
        assert (self.d.rpush if right else self.d.lpush)(k, v) == len(it[0])

    @rule(k=KEYS, right=st.booleans())
    def lpop_rpop(self, k, right):
        it = self.items.get(k)
        if it is not None and self.live(k) is None:
            del self.items[k]   # reclaimed on the way
            it = None
        if it is not None and not isinstance(it[0], SharedList):
            with pytest.raises(ObjectTypeError):
                (self.d.rpop if right else self.d.lpop)(k)
            return
        got = (self.d.rpop if right else self.d.lpop)(k, "<none>")
        if it is None:
            assert got == "<none>"
            return
        want = it[0].pop(-1 if right else 0)
        assert same(want, got)
        if not it[0]:
            del self.items[k]

    @rule(k=KEYS)
    def llen(self, k):
        it = self.live(k)
        if it is not None and not isinstance(it[0], SharedList):
            with pytest.raises(ObjectTypeError):
                self.d.llen(k)
        else:
            assert self.d.llen(k) == (len(it[0]) if it else 0)

    # -- the whole dict
    @invariant()
    def contents(self):
        live = {k: it for k, it in self.items.items() if self.live(k) is not None}
        assert len(self.d) == len(live)
        assert sorted(self.d.keys(0), key=repr) == sorted(live, key=repr)
        assert self.d.statistics().items == len(self.items)


def test_semantics_against_model(model_zone):
    DictSemantics.zone = model_zone
    run_state_machine_as_test(
        DictSemantics,
        settings=settings(max_examples=60, stateful_step_count=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]))


# -- 2. eviction order ------------------------------------------------------------------------

VLEN = 64          # 8-byte keys: 48 + 8 + 64 = 120 bytes -> 4 cells of 32 bytes
SLOTS = 16         # 16 * 4 cells * 32 bytes = 2 KiB: the whole (single) shard
EKEYS = st.integers(0, 23).map(lambda i: f"key{i:05d}")
SEEN = {"evictions": 0, "expirations": 0, "refusals": 0, "second_chances": 0}


class DictEviction(RuleBasedStateMachine):
    zone: Zone = None

    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.d = Dict(f"lru-{next(_names)}", SLOTS * 4 * 32, zone=self.zone, shards=1,
                      clock=self.clock)
        assert self.d.item_size("key00000", b"x" * VLEN) == 128
        self.queue = []       # keys, oldest first (the CLOCK hand looks at queue[0])
        self.ref = {}         # key -> referenced since the hand last passed it
        self.expire = {}      # key -> ms (0: never)
        self.value = {}
        self.evictions = 0
        self.expirations = 0
        self.n = 0

    def teardown(self):
        try:
            assert self.d.check() == []
            st_ = self.d.statistics()
            assert (st_.evictions, st_.expirations) == (self.evictions, self.expirations)
            SEEN["evictions"] += self.evictions
            SEEN["expirations"] += self.expirations
        finally:
            self.d.destroy()

    def expired(self, k):
        return bool(self.expire[k] and self.expire[k] <= self.clock.ms)

    def live(self, k):
        return k in self.value and not self.expired(k)

    def remove(self, k):
        self.queue.remove(k)
        for m in (self.ref, self.expire, self.value):
            del m[k]

    def new_value(self, k):
        self.n += 1
        return (f"{k}:{self.n}".encode()).ljust(VLEN, b".")

    def make_room(self, protect, safe):
        """What the dict does when a new item of one slot needs room: None if there is
        room (after reclaiming expired items), else the number of evictions, or
        'full' when it refuses (safe) or cannot."""
        if len(self.queue) < SLOTS:
            return 0
        for k in [k for k in self.queue if k != protect and self.expired(k)]:
            self.remove(k)
            self.expirations += 1
        evicted = 0
        while len(self.queue) >= SLOTS:
            if safe:
                return "full"
            candidates = [k for k in self.queue if k != protect]
            if not candidates:
                return "full"
            while True:     # the CLOCK hand
                k = self.queue[0]
                if k == protect:
                    self.queue.append(self.queue.pop(0))
                elif self.ref[k]:
                    self.ref[k] = False
                    self.queue.append(self.queue.pop(0))
                    SEEN["second_chances"] += 1
                else:
                    self.remove(k)
                    evicted += 1
                    self.evictions += 1
                    break
        return evicted

    def store(self, k, ttl, mode, safe):
        exists = self.live(k)
        if (mode == "add" and exists) or (mode == "replace" and not exists):
            return False, None
        v = self.new_value(k)
        expire = self.clock.ms + ttl_ms(ttl) if ttl_ms(ttl) else 0
        if k in self.value:
            # an update of the same size happens in place: no room needed; the key keeps
            # its place in the queue and a write is a use
            if self.expired(k):
                self.expirations += 1
            self.ref[k] = True
            self.expire[k] = expire
            self.value[k] = v
            return 0, v
        outcome = self.make_room(None, safe)
        if outcome == "full":
            return "full", v
        self.queue.append(k)
        self.ref[k] = False
        self.expire[k] = expire
        self.value[k] = v
        return outcome, v

    @rule(k=EKEYS, ttl=st.one_of(st.none(), st.integers(1, 3000).map(lambda ms: ms / 1000)),
          mode=st.sampled_from(["set", "add", "replace"]), safe=st.booleans())
    def write(self, k, ttl, mode, safe):
        if mode == "replace":
            safe = False
        outcome, v = self.store(k, ttl, mode, safe)
        if outcome is False:
            call = self.d.add if mode == "add" else self.d.replace
            assert call(k, b"-" * VLEN, ttl) is False
            return
        if outcome == "full":
            fn = {"set": self.d.safe_set, "add": self.d.safe_add}[mode]
            before = self.d.get_stale(k)
            with pytest.raises(ZoneFullError):
                fn(k, v, ttl)
            SEEN["refusals"] += 1
            assert self.d.get_stale(k) == before   # the old value is still there
            if k in self.value:     # get_stale is a read: it marks the item as used
                self.ref[k] = True
            return
        if mode == "set":
            got = (self.d.safe_set if safe else self.d.set)(k, v, ttl)
            assert got == (None if safe else outcome)
        elif mode == "add":
            assert (self.d.safe_add if safe else self.d.add)(k, v, ttl) is True
        else:
            assert self.d.replace(k, v, ttl) is True

    @rule(k=EKEYS)
    def read(self, k):
        want = self.value[k] if self.live(k) else None
        assert self.d.get(k) == want
        if want is not None:
            self.ref[k] = True

    @rule(first=st.integers(0, 23), n=st.integers(4, 12), safe=st.booleans())
    def burst(self, first, n, safe):
        for i in range(n):
            self.write(f"key{(first + i) % 24:05d}", None, "set", safe)

    @precondition(lambda self: self.queue)
    @rule(data=st.data())
    def read_present(self, data):
        self.read(data.draw(st.sampled_from(self.queue)))

    @rule(k=EKEYS)
    def delete(self, k):
        assert self.d.delete(k) is self.live(k)
        if k in self.value:
            if self.expired(k):
                self.expirations += 1
            self.remove(k)

    @rule(ms=st.integers(0, 2000))
    def advance(self, ms):
        self.clock.ms += ms

    @invariant()
    def same_items_and_order(self):
        # the eviction queue, oldest first, with its reference bits
        assert self.d._debug_queue(0) == [(k, self.ref[k]) for k in self.queue]
        assert self.d.free_space() == (SLOTS - len(self.queue)) * 128


def test_eviction_order_against_model(model_zone):
    DictEviction.zone = model_zone
    run_state_machine_as_test(
        DictEviction,
        settings=settings(max_examples=60, stateful_step_count=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]))
    # the interesting paths were all taken (the model would be vacuous otherwise)
    assert all(SEEN.values()), SEEN
