"""Differential conformance: the same calls with the same arguments on ``threading.X``
and on shmkit's ``zone.X`` must end the same way (the same return value, or an exception
of the same class whose message says the same thing), except for the differences
docs/sync.md lists under "Differences from threading", each of which has its expected
shmkit outcome written down here (DELIBERATE) and is checked too.

Two parts: a table of single calls over every argument the brief names, in a state
where the call can succeed and in one where it would have to wait (a call that blocks
in threading must block in shmkit: both are seen still waiting, then unblocked the same
way); and Hypothesis-generated sequences of calls (acquire/release/set/notify/abort...)
whose every step is compared as it happens.
"""

from __future__ import annotations

import itertools
import math
import os
import queue as stdqueue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmkit
from shmkit import Zone

TIMEOUTS: list[Any] = [-1, -0.5, 0, 0.01, None, 1e100, math.inf, math.nan, "1", True]
BLOCKINGS: list[Any] = [True, False]
COUNTS: list[Any] = [0, -1, 2**70]
WATCH = 0.25   # a call still running after this long is waiting


# ---- outcomes ---------------------------------------------------------------------------

# Messages that say the same thing, whichever library wrote them: (pattern, meaning).
MEANINGS: list[tuple[str, str]] = [
    (r"non-blocking", "timeout given to a non-blocking call"),
    (r"must be positive|non-negative", "negative timeout"),
    (r"NaN", "timeout is NaN"),
    (r"out of range|too large|too big|must be <=|overflow", "too large"),
    (r"interpreted as an integer|must be a number|must be an int|not supported between"
     r"|unsupported operand", "wrong type"),
    (r"un-acquired|unlocked|not held|not by this thread", "not held by the caller"),
    (r"one or more", "n < 1"),
    (r"released too many times", "released too many times"),
    (r"initial value must be >= 0", "negative initial value"),
    (r"parties must be >= 1|parties must be > 0", "parties < 1"),
    (r"unexpected keyword|invalid keyword", "unknown keyword"),
    (r"at most \d+ argument|takes no arguments|takes \d+ positional", "too many arguments"),
    (r"missing \d+ required", "missing argument"),
]

CHECKED_CLASSES = (OverflowError, TypeError, ValueError, RuntimeError)


def meaning(message: str) -> str:
    for pattern, what in MEANINGS:
        if re.search(pattern, message):
            return what
    raise AssertionError(f"no meaning known for the message {message!r}: add it to MEANINGS")


def outcome_of(exc: BaseException | None, value: Any = None) -> tuple:
    """("ok", type, value) or ("raise", class, meaning): what is compared."""
    if exc is None:
        return ("ok", type(value).__name__, value)
    if isinstance(exc, threading.BrokenBarrierError):
        return ("raise", "BrokenBarrierError", "")
    for cls in CHECKED_CLASSES:             # OverflowError before ValueError: neither is
        if isinstance(exc, cls):            # the other's subclass, the order is for clarity
            return ("raise", cls.__name__, meaning(str(exc)))
    return ("raise", type(exc).__name__, "")


def call(fn: Callable[[], Any]) -> tuple:
    try:
        return outcome_of(None, fn())
    except Exception as e:  # noqa: BLE001 - the exception is the outcome
        return outcome_of(e)


class Running:
    """A call made in its own thread, so that one that waits can be seen waiting."""

    def __init__(self, fn: Callable[[], Any]):
        self.result: tuple | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        self.result = call(fn)

    def done_within(self, seconds: float) -> bool:
        self.thread.join(seconds)
        return not self.thread.is_alive()


def run_both(ref_call: Callable[[], Any], ours_call: Callable[[], Any],
             unblock_ref: Callable[[], Any], unblock_ours: Callable[[], Any]) -> tuple:
    """(threading's outcome, shmkit's), each ("waits", outcome) when the call was still
    waiting after WATCH and was then unblocked (its outcome is what it returned then)."""
    results = []
    for fn, unblock in ((ref_call, unblock_ref), (ours_call, unblock_ours)):
        r = Running(fn)
        if r.done_within(WATCH):
            results.append(r.result)
            continue
        unblock()
        assert r.done_within(30), f"still waiting after it was unblocked: {fn}"
        results.append(("waits", r.result))
    return tuple(results)


# ---- the two libraries side by side ------------------------------------------------------

@pytest.fixture(scope="module")
def zone() -> Iterator[Zone]:
    z = Zone(f"shmkit-test-{os.getpid()}-{uuid.uuid4().hex[:10]}", 16 << 20)
    try:
        yield z
    finally:
        z.close()
        try:
            z.unlink()
        except FileNotFoundError:
            pass


_names = itertools.count()


def fresh(zone: Zone, kind: str, *args: Any, **kw: Any) -> tuple[Any, Any]:
    """(threading object, shmkit object) made with the same arguments."""
    name = f"{kind}-{next(_names)}"
    ref = {"lock": threading.Lock, "rlock": threading.RLock, "semaphore": threading.Semaphore,
           "bounded_semaphore": threading.BoundedSemaphore, "event": threading.Event,
           "condition": threading.Condition, "barrier": threading.Barrier}[kind](*args, **kw)
    ours = getattr(zone, kind)(name, *args, **kw)
    return ref, ours


# ---- deliberate differences (docs/sync.md, "Differences from threading") ----------------

def deliberate(case: str, blocking: Any, timeout: Any, ref: tuple, ours: tuple) -> tuple | None:
    """shmkit's expected outcome where docs/sync.md says it differs, else None."""
    lock_style = case.split(".")[0] in ("lock", "rlock", "condition")
    if lock_style and timeout is None and ref[:2] == ("raise", "TypeError"):
        # row "timeout=None": the default (-1, for ever), as multiprocessing.Lock takes
        # it: a blocking call ends acquired, a non-blocking one says whether it was free
        return ("ok", "bool", True) if blocking else ("ok", "bool", ours[2])
    if isinstance(timeout, float) and math.isnan(timeout):
        # row "NaN": always a ValueError (threading.Lock's; threading's Python-level
        # primitives return at once or spin for ever)
        if not (not blocking and case.startswith("semaphore")):
            return ("raise", "ValueError", "timeout is NaN")
    return None


def eager(case: str, blocking: Any, timeout: Any, ref: tuple, ours: tuple) -> tuple | None:
    """Row "a bad timeout is refused even when the call need not wait": threading's
    Semaphore and the last party of a Barrier look at the timeout only if they wait."""
    if ours[0] != "raise" or ref == ours:
        return None
    if case in ("semaphore.available", "barrier.last"):
        bad = call(lambda: shmkit._core.timeout_seconds(
            timeout, blocking, shmkit._core.TIMEOUT_SEMAPHORE if case.startswith("semaphore")
            else shmkit._core.TIMEOUT_WAIT))
        if bad[0] == "raise":
            return bad
    return None


def check(case: str, blocking: Any, timeout: Any, ref: tuple, ours: tuple) -> None:
    if ours == ref:
        return
    r = ref[1] if ref[0] == "waits" else ref
    o = ours[1] if ours[0] == "waits" else ours
    want = deliberate(case, blocking, timeout, r, o) or eager(case, blocking, timeout, r, o)
    if want is not None:
        assert o == want, f"{case}({blocking!r}, {timeout!r}): shmkit {ours}, documented {want}"
        return
    assert ours == ref, f"{case}({blocking!r}, {timeout!r}): threading {ref}, shmkit {ours}"


# ---- single calls over every argument --------------------------------------------------

class Holder:
    """A thread that holds a lock until told to let it go (it stays alive meanwhile: a
    holder that ended would be a dead owner, which shmkit takes over on purpose)."""

    def __init__(self, lock: Any):
        self.go = threading.Event()
        got = threading.Event()

        def hold() -> None:
            lock.acquire()
            got.set()
            self.go.wait(60)
            lock.release()

        self.thread = threading.Thread(target=hold, daemon=True)
        self.thread.start()
        assert got.wait(30)

    def let_go(self) -> None:
        self.go.set()
        self.thread.join(30)


@pytest.mark.parametrize("kind", ["lock", "rlock"])
@pytest.mark.parametrize("held", [False, True], ids=["free", "held"])
@pytest.mark.parametrize("blocking", BLOCKINGS)
@pytest.mark.parametrize("timeout", TIMEOUTS, ids=repr)
def test_lock_acquire(zone, kind, held, blocking, timeout):
    ref, ours = fresh(zone, kind)
    holders = [Holder(ref), Holder(ours)] if held else []
    try:
        expected, got = run_both(lambda: ref.acquire(blocking, timeout),
                                 lambda: ours.acquire(blocking, timeout),
                                 *(h.let_go for h in holders) if held else (_nothing, _nothing))
    finally:
        for h in holders:
            h.let_go()
    check(f"{kind}.{'held' if held else 'free'}", blocking, timeout, expected, got)


def _nothing() -> None:
    raise AssertionError("a call on a free lock waited")


@pytest.mark.parametrize("kind", ["semaphore", "bounded_semaphore"])
@pytest.mark.parametrize("value", [0, 1], ids=["empty", "available"])
@pytest.mark.parametrize("blocking", BLOCKINGS)
@pytest.mark.parametrize("timeout", TIMEOUTS, ids=repr)
def test_semaphore_acquire(zone, kind, value, blocking, timeout):
    ref, ours = fresh(zone, kind, 1)
    if not value:
        ref.acquire()
        ours.acquire()
    expected, got = run_both(lambda: ref.acquire(blocking, timeout),
                             lambda: ours.acquire(blocking, timeout),
                             ref.release, ours.release)
    check(f"semaphore.{'available' if value else 'empty'}", blocking, timeout, expected, got)


@pytest.mark.parametrize("is_set", [False, True], ids=["clear", "set"])
@pytest.mark.parametrize("timeout", TIMEOUTS, ids=repr)
def test_event_wait(zone, is_set, timeout):
    ref, ours = fresh(zone, "event")
    if is_set:
        ref.set()
        ours.set()
    expected, got = run_both(lambda: ref.wait(timeout), lambda: ours.wait(timeout),
                             ref.set, ours.set)
    check("event.wait", True, timeout, expected, got)


@pytest.mark.parametrize("timeout", TIMEOUTS, ids=repr)
def test_condition_wait(zone, timeout):
    ref, ours = fresh(zone, "condition")

    def waiting(c: Any) -> Callable[[], Any]:
        def run() -> Any:
            with c:
                return c.wait(timeout)
        return run

    def notifying(c: Any) -> Callable[[], None]:
        def run() -> None:
            with c:
                c.notify()
        return run

    expected, got = run_both(waiting(ref), waiting(ours), notifying(ref), notifying(ours))
    check("condition.wait", True, timeout, expected, got)


@pytest.mark.parametrize("parties", [1, 2], ids=["last", "waits"])
@pytest.mark.parametrize("timeout", TIMEOUTS, ids=repr)
@pytest.mark.parametrize("default", [False, True], ids=["arg", "default"])
def test_barrier_wait(zone, parties, timeout, default):
    if default:
        ref, ours = fresh(zone, "barrier", parties, timeout=timeout)
        expected, got = run_both(ref.wait, ours.wait, ref.abort, ours.abort)
    else:
        ref, ours = fresh(zone, "barrier", parties)
        expected, got = run_both(lambda: ref.wait(timeout), lambda: ours.wait(timeout),
                                 ref.abort, ours.abort)
    check("barrier.last" if parties == 1 else "barrier.wait", True, timeout, expected, got)
    if got == expected:
        assert ours.broken == ref.broken and ours.n_waiting == ref.n_waiting


@pytest.mark.parametrize("kind", ["semaphore", "bounded_semaphore"])
@pytest.mark.parametrize("value", COUNTS + [1.5, True, "1", None], ids=repr)
def test_semaphore_construction(zone, kind, value):
    expected = call(lambda: getattr(threading, _cls(kind))(value))
    got = call(lambda: getattr(zone, kind)(f"s-{next(_names)}", value))
    if value == 2**70:
        # row "capacity": a shared semaphore counts up to SEM_VALUE_MAX
        assert got == ("raise", "OverflowError", "too large")
    elif isinstance(value, (float, bool)):
        # row "int arguments": an int is required, as for every count in shmkit
        assert got == ("raise", "TypeError", "wrong type")
    else:
        assert got[0] == "ok" if expected[0] == "ok" else got == expected


def _cls(kind: str) -> str:
    return {"semaphore": "Semaphore", "bounded_semaphore": "BoundedSemaphore"}[kind]


@pytest.mark.parametrize("kind", ["semaphore", "bounded_semaphore"])
@pytest.mark.parametrize("n", COUNTS + [1, 2, 1.5, "1", None], ids=repr)
def test_semaphore_release_n(zone, kind, n):
    ref, ours = fresh(zone, kind, 3)
    for s in (ref, ours):
        s.acquire()
        s.acquire()
    if n == 2**70 and kind == "semaphore":
        # row "capacity" again (threading loops 2**70 times to notify)
        got = call(lambda: ours.release(n))
        assert got == ("raise", "ValueError", "too large")
        return
    expected, got = call(lambda: ref.release(n)), call(lambda: ours.release(n))
    if isinstance(n, float) and kind == "bounded_semaphore":
        # threading adds the float first and then finds it too many
        assert got == ("raise", "TypeError", "wrong type")
        return
    assert got == expected
    if got[0] == "ok":        # (threading adds a float n before it fails on it)
        assert ours.get_value() == ref._value


@pytest.mark.parametrize("parties", COUNTS + [1, 1.5, True, None], ids=repr)
def test_barrier_parties(zone, parties):
    got = call(lambda: zone.barrier(f"b-{next(_names)}", parties))
    if isinstance(parties, int) and not isinstance(parties, bool) and parties < 1:
        # threading >= 3.13 (gh-121474) checks this too; 3.11/3.12 accept and hang later
        assert got == ("raise", "ValueError", "parties < 1")
    elif parties == 2**70:
        assert got == ("raise", "ValueError", "too large")
    elif not isinstance(parties, int) or isinstance(parties, bool):
        assert got == ("raise", "TypeError", "wrong type")
    else:
        assert got[0] == "ok" and call(lambda: threading.Barrier(parties))[0] == "ok"


@pytest.mark.parametrize("n", COUNTS + [1, 5, 1.5, "1", True], ids=repr)
def test_condition_notify(zone, n):
    ref, ours = fresh(zone, "condition")
    # without the lock: RuntimeError first, whatever n is
    assert call(lambda: ours.notify(n)) == call(lambda: ref.notify(n))
    with ref, ours:
        expected, got = call(lambda: ref.notify(n)), call(lambda: ours.notify(n))
    if not isinstance(n, int) or isinstance(n, bool):
        # row "int arguments": threading compares n with 0 only when someone waits
        assert got == ("raise", "TypeError", "wrong type")
    else:
        assert got == expected


def test_unheld_and_foreign_releases(zone):
    for kind in ("lock", "rlock"):
        ref, ours = fresh(zone, kind)
        assert call(ours.release) == call(ref.release)
    # an RLock released by a thread that does not own it
    ref, ours = fresh(zone, "rlock")
    ref.acquire()
    ours.acquire()
    results: list[tuple] = []
    t = threading.Thread(target=lambda: results.extend([call(ref.release), call(ours.release)]))
    t.start()
    t.join(30)
    assert results[1] == results[0] == ("raise", "RuntimeError", "not held by the caller")
    for c in fresh(zone, "condition"):
        assert call(lambda: c.wait(0)) == ("raise", "RuntimeError", "not held by the caller")
        assert call(c.notify_all) == ("raise", "RuntimeError", "not held by the caller")
        assert call(lambda: c.wait_for(lambda: True, 0)) == ("ok", "bool", True)
    ref, ours = fresh(zone, "bounded_semaphore", 1)
    assert call(ours.release) == call(ref.release) == ("raise", "ValueError",
                                                       "released too many times")


def test_return_values_and_context_managers(zone):
    for kind in ("lock", "rlock"):
        ref, ours = fresh(zone, kind)
        assert call(ours.__enter__) == call(ref.__enter__) == ("ok", "bool", True)
        if kind == "rlock":
            assert call(ours._is_owned) == call(ref._is_owned) == ("ok", "bool", True)
        assert call(lambda: ours.__exit__(None, None, None)) == \
            call(lambda: ref.__exit__(None, None, None)) == ("ok", "NoneType", None)
        if kind == "rlock":
            assert call(ours._is_owned) == call(ref._is_owned) == ("ok", "bool", False)
    ref, ours = fresh(zone, "lock")
    assert call(ours.locked) == call(ref.locked) == ("ok", "bool", False)
    ref.acquire()
    ours.acquire()
    assert call(ours.locked) == call(ref.locked) == ("ok", "bool", True)
    for s in fresh(zone, "semaphore", 1):
        assert call(s.__enter__) == ("ok", "bool", True)
        assert call(lambda: s.__exit__(None, None, None)) == ("ok", "NoneType", None)
    ref, ours = fresh(zone, "event")
    for op in ("is_set", "set", "is_set", "clear", "is_set"):
        assert call(getattr(ours, op)) == call(getattr(ref, op))
    ref.set()
    ours.set()
    assert call(lambda: ours.wait(0)) == call(lambda: ref.wait(0)) == ("ok", "bool", True)
    ref, ours = fresh(zone, "condition")
    assert call(ours.__enter__) == call(ref.__enter__) == ("ok", "bool", True)
    assert call(lambda: ours.__exit__(None, None, None)) == \
        call(lambda: ref.__exit__(None, None, None))


def test_condition_over_an_rlock(zone):
    """Condition(lock) with an RLock: held twice, wait() releases both levels and
    restores them; _is_owned follows the RLock's owner."""
    r_lock = threading.RLock()
    o_lock = zone.rlock(f"cr-{next(_names)}")
    ref = threading.Condition(r_lock)
    ours = zone.condition(f"c-{next(_names)}", o_lock)
    for c, lk in ((ref, r_lock), (ours, o_lock)):
        assert c._is_owned() is False
        lk.acquire()
        lk.acquire()
        assert c._is_owned() is True
        assert c.wait(0.01) is False
        lk.release()
        assert c._is_owned() is True     # one level still held: wait() restored two
        lk.release()
        assert c._is_owned() is False


def test_barrier_states(zone):
    ref, ours = fresh(zone, "barrier", 2)
    for b in (ref, ours):
        assert (b.parties, b.n_waiting, b.broken) == (2, 0, False)
    assert call(ours.abort) == call(ref.abort) == ("ok", "NoneType", None)
    assert ours.broken is ref.broken is True
    assert call(lambda: ours.wait(0)) == call(lambda: ref.wait(0)) == ("raise",
                                                                       "BrokenBarrierError", "")
    assert call(ours.reset) == call(ref.reset) == ("ok", "NoneType", None)
    assert ours.broken is ref.broken is False
    # an action that raises breaks the barrier and the exception reaches the caller
    ref, ours = fresh(zone, "barrier", 1, action=lambda: 1 / 0)
    assert call(ours.wait) == call(ref.wait) == ("raise", "ZeroDivisionError", "")
    assert ours.broken is ref.broken is True


def test_keywords_and_arity(zone):
    for kind in ("lock", "rlock"):
        ref, ours = fresh(zone, kind)
        assert call(lambda: ours.acquire(nonsense=1)) == call(lambda: ref.acquire(nonsense=1))
        assert call(lambda: ours.acquire(True, 1, 2)) == call(lambda: ref.acquire(True, 1, 2))
        assert call(lambda: ours.acquire(blocking=False, timeout=-1)) == \
            call(lambda: ref.acquire(blocking=False, timeout=-1))
    ref, ours = fresh(zone, "semaphore")
    assert call(lambda: ours.acquire(nonsense=1)) == call(lambda: ref.acquire(nonsense=1))
    ref, ours = fresh(zone, "event")
    assert call(lambda: ours.wait(nonsense=1)) == call(lambda: ref.wait(nonsense=1))


def test_timeout_max_is_threadings():
    assert shmkit.sync.TIMEOUT_MAX == threading.TIMEOUT_MAX
    assert shmkit._core.timeout_seconds(threading.TIMEOUT_MAX) == threading.TIMEOUT_MAX


# ---- the queue's argument checks against queue.Queue -----------------------------------

@pytest.mark.parametrize("block", BLOCKINGS)
@pytest.mark.parametrize("timeout", TIMEOUTS, ids=repr)
@pytest.mark.parametrize("op", ["put", "get"])
@pytest.mark.parametrize("ready", [True, False], ids=["ready", "must-wait"])
def test_queue_arguments(zone, block, timeout, op, ready):
    ref = stdqueue.Queue(maxsize=1)
    ours = zone.queue(f"q-{next(_names)}", 4096, max_messages=1, mode="objects")
    fill = (op == "get") == ready           # get needs an item; put needs room
    if fill:
        ref.put(1)
        ours.put(1)

    def run(q: Any) -> Callable[[], Any]:
        return (lambda: q.put(2, block, timeout)) if op == "put" else \
               (lambda: q.get(block, timeout))

    def unblock(q: Any) -> Callable[[], Any]:
        return (lambda: q.get_nowait()) if op == "put" else (lambda: q.put_nowait(3))

    expected, got = run_both(run(ref), run(ours), unblock(ref), unblock(ours))
    expected, got = _queue_outcome(expected), _queue_outcome(got)
    r, o = (x[1] if x[0] == "waits" else x for x in (expected, got))
    if isinstance(timeout, float) and math.isnan(timeout) and block:
        assert o == ("raise", "ValueError", "timeout is NaN")     # row "NaN"
    elif ready and block and r[0] == "ok" and o[0] == "raise":
        # row "a bad timeout is refused even when the call need not wait"
        assert o[1] in ("TypeError", "OverflowError")
    else:
        assert got == expected, f"{op}({block}, {timeout!r}): queue.Queue {expected}, shmkit {got}"
        assert (ours.qsize(), ours.empty(), ours.full()) == (ref.qsize(), ref.empty(), ref.full())


def _queue_outcome(o: tuple) -> tuple:
    """queue.Empty/Full and shmkit's QueueEmpty/QueueFull are the same outcome."""
    if o[0] == "waits":
        return ("waits", _queue_outcome(o[1]))
    if o[0] == "raise" and o[1] in ("Empty", "QueueEmpty"):
        return ("raise", "Empty", "")
    if o[0] == "raise" and o[1] in ("Full", "QueueFull"):
        return ("raise", "Full", "")
    return o


def test_queue_nowait_and_sizes(zone):
    ref = stdqueue.Queue(maxsize=2)
    ours = zone.queue(f"q-{next(_names)}", 4096, max_messages=2, mode="objects")
    steps: list[tuple[str, tuple]] = [("get_nowait", ()), ("put_nowait", (1,)),
                                      ("put_nowait", (2,)), ("put_nowait", (3,)),
                                      ("qsize", ()), ("full", ()), ("get_nowait", ()),
                                      ("empty", ()), ("get_nowait", ()), ("empty", ()),
                                      ("qsize", ()), ("put_nowait", ()), ("qsize", (1,))]
    for op, args in steps:
        expected = _queue_outcome(call(lambda: getattr(ref, op)(*args)))
        got = _queue_outcome(call(lambda: getattr(ours, op)(*args)))
        if expected[:2] == ("raise", "TypeError"):
            assert got[:2] == expected[:2], op   # arity messages differ in wording only
        else:
            assert got == expected, (op, args)


# ---- Hypothesis: sequences of calls ----------------------------------------------------

# Steps that never wait for ever: a timeout that means "for ever" is only used where
# the reference would not have to wait (WAITS_FOREVER below), so every step ends.
SHORT_TIMEOUTS = [-1, -0.5, 0, 0.01, 1e100, math.inf, math.nan, "1", None]


def _would_wait_forever(kind: str, ref: Any, op: str, blocking: Any, timeout: Any) -> bool:
    if op not in ("acquire", "wait") or (op == "acquire" and not blocking):
        return False
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and \
            0 <= timeout <= 0.01:
        return False
    free = {"lock": lambda: not ref.locked(),
            "rlock": lambda: True,                # this thread may always re-enter
            "semaphore": lambda: ref._value > 0,
            "bounded_semaphore": lambda: ref._value > 0,
            "event": lambda: ref.is_set()}.get(kind, lambda: False)
    return not free()


OPS: dict[str, list[str]] = {
    "lock": ["acquire", "release", "locked"],
    "rlock": ["acquire", "release", "_is_owned"],
    "semaphore": ["acquire", "release"],
    "bounded_semaphore": ["acquire", "release"],
    "event": ["set", "clear", "is_set", "wait"],
    "condition": ["acquire", "release", "notify", "notify_all", "wait"],
    "barrier": ["abort", "reset", "wait", "broken", "n_waiting", "parties"],
}

step = st.tuples(st.integers(0, 5), st.sampled_from(BLOCKINGS), st.sampled_from(SHORT_TIMEOUTS),
                 st.sampled_from([1, 2, 0, -1]))


@pytest.mark.parametrize("kind", list(OPS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=12))
def test_sequences(zone, kind, steps):
    args = {"semaphore": (1,), "bounded_semaphore": (2,), "barrier": (1,)}.get(kind, ())
    ref, ours = fresh(zone, kind, *args)
    ops = OPS[kind]
    for i, blocking, timeout, n in steps:
        op = ops[i % len(ops)]
        if op in ("broken", "n_waiting", "parties"):
            assert getattr(ours, op) == getattr(ref, op)
            continue
        if _would_wait_forever(kind, ref, op, blocking, timeout):
            continue
        if kind == "condition" and op == "wait" and not (
                isinstance(timeout, (int, float)) and timeout <= 0.01):
            continue                              # nobody would notify
        if op == "acquire" and kind in ("semaphore", "bounded_semaphore", "lock", "rlock",
                                        "condition"):
            a: tuple = (blocking, timeout)
        elif op == "wait":
            a = (timeout,)
        elif op == "release" and kind.endswith("semaphore"):
            a = (n,)
        elif op == "notify":
            a = (n,)
        else:
            a = ()
        expected = call(lambda: getattr(ref, op)(*a))
        got = call(lambda: getattr(ours, op)(*a))
        case = f"{kind if kind != 'bounded_semaphore' else 'semaphore'}." + (
            "available" if kind.endswith("semaphore") and expected[0] == "ok" else
            "last" if kind == "barrier" else "seq")
        check(case, blocking if op == "acquire" else True, timeout, expected, got)
        if op == "acquire" and expected != got:   # a documented difference: same state again
            if got == ("ok", "bool", True):
                ref.acquire()
            elif expected == ("ok", "bool", True):
                ref.release()


# ---- the asyncio twins take the same arguments -----------------------------------------

def test_aio_twins_follow_the_same_rules(zone):
    import asyncio

    async def main() -> None:
        lk, rl = zone.lock(f"al-{next(_names)}"), zone.rlock(f"ar-{next(_names)}")
        sem, ev = zone.semaphore(f"as-{next(_names)}", 1), zone.event(f"ae-{next(_names)}")
        for aio in (lk.aio, rl.aio):
            for timeout, exc in ((1e100, OverflowError), (math.nan, ValueError),
                                 ("1", TypeError), (-0.5, ValueError)):
                with pytest.raises(exc):
                    await aio.acquire(True, timeout)
            with pytest.raises(ValueError, match="non-blocking"):
                await aio.acquire(False, 1)
        assert await rl.aio.acquire()
        with pytest.raises(OverflowError):     # re-entering checks its arguments too
            await rl.aio.acquire(True, 1e100)
        rl.aio.release()
        with pytest.raises(ValueError, match="non-blocking"):
            await sem.aio.acquire(False, -1)
        assert await sem.aio.acquire(True, -0.5) is True   # Semaphore's rule: one attempt
        assert await sem.aio.acquire(True, -0.5) is False
        for timeout, exc in ((1e100, OverflowError), (math.nan, ValueError), ("1", TypeError)):
            with pytest.raises(exc):
                await ev.aio.wait(timeout)
        assert await ev.aio.wait(-1) is False

    asyncio.run(main())
