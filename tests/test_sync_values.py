"""Value, Array and Counter: multiprocessing-compatible shared values, exact totals
under contention, found by name, pickled to children."""

from __future__ import annotations

import ctypes
import os
import pickle

import pytest

from conftest import run_python

import shmkit
from shmkit import Array, Counter, ObjectTypeError, Value

# Default run: 2-4 processes x 100k increments.  `-m slow` runs the full 1M each.
N_QUICK = 100_000
N_FULL = 1_000_000


# ---- Counter ---------------------------------------------------------------------------

def test_counter_operations(zone):
    c = zone.counter("c", 10)
    assert isinstance(c, Counter)
    assert c.get() == 10 and c.value == 10 and int(c) == 10
    assert c.add() == 11 and c.add(5) == 16 and c.sub(6) == 10 and c.sub() == 9
    assert c.inc() == 10 and c.dec() == 9
    c.set(-3)
    assert c.get() == -3
    assert c.exchange(7) == -3
    assert c.compare_and_swap(7, 8) is True
    assert c.compare_and_swap(7, 9) is False and c.get() == 8
    c.value = 100
    c += 5
    c -= 1
    assert c.get() == 104
    assert zone.counter("c", 999).get() == 104       # initial only when created
    assert c.statistics().value == 104 and "104" in repr(c)


def test_counter_wraps_and_range(zone):
    c = zone.counter("c", (1 << 63) - 1)
    assert c.inc() == -(1 << 63)                      # two's complement, like the hardware
    with pytest.raises(OverflowError):
        c.set(1 << 63)
    with pytest.raises(OverflowError):
        zone.counter("d", 1 << 64)
    with pytest.raises(TypeError):
        c.add("1")
    with pytest.raises(TypeError):
        zone.counter("e", 1.5)


def _count(counter, n):
    add = counter.inc
    for _ in range(n):
        add()


@pytest.mark.parametrize("nprocs", [2, 4])
def test_counter_exact_total(ctx, zone, procs, nprocs):
    c = zone.counter("total")
    ps = [ctx.Process(target=_count, args=(c, N_QUICK)) for _ in range(nprocs)]
    procs.extend(ps)
    for p in ps:
        p.start()
    for p in ps:
        p.join(120)
        assert p.exitcode == 0
    assert c.get() == nprocs * N_QUICK


@pytest.mark.slow
@pytest.mark.parametrize("nprocs", [2, 4])
def test_counter_exact_total_1m(zone, procs, nprocs):
    import multiprocessing as mp
    c = zone.counter("total")
    ps = [mp.get_context("fork").Process(target=_count, args=(c, N_FULL)) for _ in range(nprocs)]
    procs.extend(ps)
    for p in ps:
        p.start()
    for p in ps:
        p.join(600)
        assert p.exitcode == 0
    assert c.get() == nprocs * N_FULL


# ---- Value -------------------------------------------------------------------------------

def test_value_like_multiprocessing(zone):
    v = zone.value("v", "i", 7)
    assert isinstance(v, Value)
    assert v.value == 7
    v.value = 9
    assert v.get_obj().value == 9
    with v.get_lock():
        v.value += 1
    with v:
        assert v.get_lock().statistics().count == 1
    assert v.value == 10
    d = zone.value("d", ctypes.c_double, 1.5)
    assert d.value == 1.5
    assert zone.value("v", "i", 12345).value == 10    # args used only when created
    with pytest.raises(ObjectTypeError):
        zone.value("v", "d")
    with pytest.raises(ValueError):
        zone.value("x", "Z")
    raw = zone.value("raw", "q", 5, lock=False)
    assert raw.value == 5
    with pytest.raises(AttributeError):
        raw.get_lock()
    named = zone.lock("guard")
    g = zone.value("guarded", "i", 0, lock=named)
    assert g.get_lock() is named
    st = v.statistics()
    assert st.type == "i" and st.length == 1 and st.nbytes == 4 and st.lock.acquisitions >= 2


def test_value_of_a_structure(zone):
    class Point(ctypes.Structure):
        _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double)]

    p = zone.value("pt", Point, 1, 2.5)
    assert p.get_obj().x == 1 and p.get_obj().y == 2.5
    with p:
        p.get_obj().x = 5
    assert zone.value("pt", Point).get_obj().x == 5


def _locked_increments(v, n):
    lock = v.get_lock()
    for _ in range(n):
        with lock:
            v.get_obj().value += 1


@pytest.mark.parametrize("nprocs", [2, 4])
def test_value_under_its_lock_exact_total(ctx, zone, procs, nprocs):
    v = zone.value("v", "q", 0)
    n = N_QUICK // 4
    ps = [ctx.Process(target=_locked_increments, args=(v, n)) for _ in range(nprocs)]
    procs.extend(ps)
    for p in ps:
        p.start()
    for p in ps:
        p.join(120)
        assert p.exitcode == 0
    assert v.value == nprocs * n
    assert v.get_lock().statistics().acquisitions >= nprocs * n


@pytest.mark.slow
@pytest.mark.parametrize("nprocs", [2, 4])
def test_value_under_its_lock_exact_total_1m(zone, procs, nprocs):
    import multiprocessing as mp
    v = zone.value("v", "q", 0)
    ps = [mp.get_context("fork").Process(target=_locked_increments, args=(v, N_FULL))
          for _ in range(nprocs)]
    procs.extend(ps)
    for p in ps:
        p.start()
    for p in ps:
        p.join(900)
        assert p.exitcode == 0
    assert v.value == nprocs * N_FULL


def test_value_found_by_an_unrelated_program(zone, name):
    v = zone.value("v", "d", 2.25)
    out = run_python(f"import shmkit; v = shmkit.Zone({name!r}).value('v', 'd'); "
                     f"print(v.value); v.value = 4.5").stdout.split()
    assert out == ["2.25"] and v.value == 4.5


def test_value_pickles(zone):
    v = zone.value("v", "i", 3)
    again = pickle.loads(pickle.dumps(v))
    again.value = 11
    assert v.value == 11
    lock = pickle.loads(pickle.dumps(v.get_lock()))
    with lock:
        assert v.get_lock().locked()


# ---- Array -------------------------------------------------------------------------------

def test_array_like_multiprocessing(zone):
    a = zone.array("a", "i", [1, 2, 3, 4])
    assert isinstance(a, Array)
    assert len(a) == 4 and a[0] == 1 and a[-1] == 4 and a[1:3] == [2, 3]
    a[0] = 10
    a[1:3] = [20, 30]
    assert a[:] == [10, 20, 30, 4] and list(a) == [10, 20, 30, 4] and a.tolist() == a[:]
    with pytest.raises(IndexError):
        a[4]
    z = zone.array("z", "d", 3)
    assert z[:] == [0.0, 0.0, 0.0]
    assert zone.array("a", "i", 4)[:] == [10, 20, 30, 4]
    with pytest.raises(shmkit.ObjectMismatchError):
        zone.array("a", "i", 5)
    with pytest.raises(ObjectTypeError):
        zone.array("a", "d", 4)
    s = zone.array("s", "c", b"hello\0\0\0")
    assert s.value == b"hello" and s.raw == b"hello\0\0\0"
    s.value = b"hi"
    assert s.value == b"hi"
    empty = zone.array("empty", "i", 0)
    assert len(empty) == 0 and empty[:] == []
    assert a.statistics().length == 4 and a.statistics().nbytes == 16


def _array_worker(a, index, n):
    for _ in range(n):
        with a.get_lock():
            a[index] += 1
            a[0] += 1


def test_array_across_processes(ctx, zone, procs):
    a = zone.array("a", "q", 4)
    ps = [ctx.Process(target=_array_worker, args=(a, i, 2000)) for i in (1, 2, 3)]
    procs.extend(ps)
    for p in ps:
        p.start()
    for p in ps:
        p.join(120)
        assert p.exitcode == 0
    assert a[:] == [6000, 2000, 2000, 2000]


def test_handles_close(zone):
    a = zone.array("a", "i", 2)
    a.close()
    assert a.closed
    c = zone.counter("c")
    c.close()
    with pytest.raises(shmkit.ClosedError):
        c.inc()


def test_lost_update_example_runs():
    import subprocess
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    script = os.path.join(here, "..", "examples", "lost_update.py")
    r = subprocess.run([sys.executable, script, "--quick"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Counter" in r.stdout and "exact: True" in r.stdout and "lost" in r.stdout


def _use_value_with_named_lock(v, lock, out):
    named = int(v.get_lock().name == "guard" and type(v.get_lock()) is shmkit.Lock)
    one_zone = int(v.zone is lock.zone)     # the zone is mapped once in the child
    out.set(named + 10 * one_zone)


def test_value_with_named_lock_pickles_with_it(zone, procs):
    import multiprocessing as mp
    lock = zone.lock("guard")
    v = zone.value("g", "i", 0, lock=lock)
    again = pickle.loads(pickle.dumps(v))
    assert again.get_lock().name == "guard"
    out = zone.counter("out")
    p = mp.get_context("spawn").Process(target=_use_value_with_named_lock, args=(v, lock, out))
    procs.append(p)
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert out.get() == 11
