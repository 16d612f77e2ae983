"""The one wait helper runs signal handlers within one slice, whatever the wait.

A signal delivered to *another* thread interrupts no system call of the waiting main
thread: the kernel leaves its sleep alone, exactly as for a signal that lands just
before the sleep.  Before the one wait shape, such a signal was seen only when the wait
ended on its own (fixed three times, in three wait loops).  Now every blocking call
returns to the binding's helper before its first sleep and every 100 ms, and the
helper runs the handlers at each return: here, each blocked call must raise the
handler's exception well before its own timeout, and leave nothing held or registered.
"""

import signal
import threading
import time

import pytest

SLICE = 0.1         # core/wait.h: shk_wait_cfg.recheck_ns
DELAY = 0.3         # when the helper thread signals itself
TIMEOUT = 20.0      # the blocked call's own timeout: far beyond what the test allows


class Interrupted(Exception):
    pass


def _raise(signum, frame):
    raise Interrupted()


def _blocked(setup, block, name):
    """Run block() in the main thread while a helper thread, DELAY later, sends SIGUSR1
    to itself; return how long block() took to raise Interrupted."""
    assert threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGUSR1, _raise)
    try:
        state = setup()
        t = threading.Thread(target=lambda: (time.sleep(DELAY),
                                             signal.pthread_kill(threading.get_ident(),
                                                                 signal.SIGUSR1)))
        t0 = time.monotonic()
        t.start()
        with pytest.raises(Interrupted):
            block(state)
        took = time.monotonic() - t0
        t.join(5)
        return state, took
    finally:
        signal.signal(signal.SIGUSR1, old)


def _check(took):
    assert DELAY <= took < DELAY + 10 * SLICE, took


def test_lock(zone):
    def setup():
        lk = zone.lock("l")
        lk.acquire()
        return lk
    lk, took = _blocked(setup, lambda lk: lk.acquire(timeout=TIMEOUT), "lock")
    _check(took)
    assert lk.statistics().waiters == 0
    lk.release()
    assert lk.acquire(blocking=False)
    lk.release()


def test_semaphore(zone):
    s, took = _blocked(lambda: zone.semaphore("s", 0), lambda s: s.acquire(timeout=TIMEOUT), "sem")
    _check(took)
    s.release()
    assert s.acquire(blocking=False)


def test_event(zone):
    e, took = _blocked(lambda: zone.event("e"), lambda e: e.wait(TIMEOUT), "event")
    _check(took)
    assert e.statistics().waiters == 0


def test_condition(zone):
    def block(c):
        with c:
            c.wait(TIMEOUT)
    c, took = _blocked(lambda: zone.condition("c"), block, "condition")
    _check(took)
    assert c.acquire(blocking=False)   # the lock was re-acquired, then released by `with`
    c.release()


def test_barrier(zone):
    import shmkit
    b, took = _blocked(lambda: zone.barrier("b", 2), lambda b: b.wait(TIMEOUT), "barrier")
    _check(took)
    assert b.broken                    # the other party must not wait for us forever
    with pytest.raises(shmkit.BrokenBarrierError):
        b.wait(1)


def test_rwlock_writer_draining(zone):
    def setup():
        rw = zone.rwlock("rw")
        rw.acquire_read()
        return rw
    rw, took = _blocked(setup, lambda rw: rw.acquire_write(timeout=TIMEOUT), "rwlock")
    _check(took)
    # the interrupted writer let the writer word go: readers get in at once
    assert rw.acquire_read(blocking=False)
    rw.release_read()
    rw.release_read()
    assert rw.acquire_write(timeout=5)
    rw.release_write()


def test_board_wait_newer(zone):
    b, took = _blocked(lambda: zone.board("bd", 64), lambda b: b.wait_newer(0, TIMEOUT), "board")
    _check(took)
    assert b.statistics().waiters == 0


def test_zone_open_waiting_for_another_initialiser(name, procs):
    import subprocess
    import sys


    code = ("import sys, time, shmkit\n"
            "z = shmkit.Zone(sys.argv[1], 1 << 20, init=lambda z: (print('init', flush=True),"
            " time.sleep(60)))\n")
    p = subprocess.Popen([sys.executable, "-c", code, name], stdout=subprocess.PIPE, text=True)
    procs.append(p)
    assert p.stdout.readline().strip() == "init"

    def block(_):
        import shmkit
        shmkit.Zone(name, 1 << 20, timeout=TIMEOUT)

    _, took = _blocked(lambda: None, block, "zone")
    _check(took)
    p.kill()
    p.wait(10)
