"""Python's multiprocessing.shared_memory against shmkit segments: the resource tracker
unlinks what a process attached to when it exits (every version by default; no opt-out
before 3.13), shmkit.attach_shared_memory() never lets it, and `shmkit ls` / `shmkit
doctor` report a shmkit segment whose name vanished that way.  Real second processes
that exit (or are SIGKILLed), real /dev/shm."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pytest

import shmkit
from shmkit import inventory
from shmkit import InvalidNameError, Segment, Zone
from conftest import kill_hard, wait_until
from segment_helpers import read_line, spawn_python

pytestmark = pytest.mark.timeout(120)

PLAIN_ATTACH = textwrap.dedent("""
    import sys
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(name=sys.argv[1])   # the stdlib's default
    print(bytes(shm.buf[:5]).decode())
    shm.close()
""")

SAFE_ATTACH = textwrap.dedent("""
    import sys
    import shmkit
    from multiprocessing import resource_tracker
    shm = shmkit.attach_shared_memory(sys.argv[1])
    print(bytes(shm.buf[:5]).decode(), type(shm).__mro__[1].__name__,
          resource_tracker._resource_tracker._pid)       # None: no tracker was started
    shm.buf[100:112] = b"stdlib wrote"
    shm.close()
""")


def shmkit_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "shmkit", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


def test_attach_shared_memory_leaves_the_segment_to_the_others(name):
    with Segment(name, "x", 4096) as seg:
        seg.write(b"hello", 0)
        r = subprocess.run([sys.executable, "-W", "always", "-c", SAFE_ATTACH, name],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["hello", "SharedMemory", "None"]
        assert "leaked" not in r.stderr and "resource_tracker" not in r.stderr, r.stderr
        assert exists(name) and not seg.removed          # the child exited; the name stayed
        assert seg.read(100, 12) == b"stdlib wrote"
        assert not any(i.vanished for i in inventory.list_segments(name))
        seg.unlink()


def test_the_stdlib_default_unlinks_a_shmkit_segment_and_ls_and_doctor_say_so(name):
    """The bug the helper avoids, on this Python: the attaching process exits, its
    resource tracker unlinks the name while we still have the segment mapped."""
    with Segment(name, "x", 4096) as seg:
        seg.write(b"hello", 0)
        r = subprocess.run([sys.executable, "-W", "always", "-c", PLAIN_ATTACH, name],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "hello", r.stderr
        assert "leaked shared_memory" in r.stderr          # the tracker says what it did
        assert not exists(name) and seg.removed
        assert seg.read(0, 5) == b"hello"                  # our mapping lives on

        ls = shmkit_cli("ls", name, "--json")
        assert ls.returncode == 0, ls.stderr
        [row] = json.loads(ls.stdout)
        assert row["name"] == name and row["status"] == ["vanished", "in-use"]
        assert row["kind"] == "segment" and row["lifecycle"] == "persist"
        assert row["cpid"] == os.getpid() and row["handles"] == 1 and row["size"] == 4096
        text = shmkit_cli("ls", name)
        assert "vanished" in text.stdout and "resource" in text.stderr
        assert "attach_shared_memory" in text.stderr

        doc = shmkit_cli("doctor", "--json")
        assert doc.returncode == 1, doc.stderr
        d = json.loads(doc.stdout)
        assert [v["name"] for v in d["facts"]["vanished"] if v["name"] == name] == [name]
        assert any(name in p and "resource tracker" in p for p in d["problems"])
    # once nobody uses it, nothing is left to report (its record was an xattr)
    assert not inventory.vanished_segments(name)


def test_a_vanished_zone_is_reported_as_a_zone(name):
    z = Zone(name, 1 << 20)
    try:
        z.counter("hits").add(5)
        r = subprocess.run([sys.executable, "-c", PLAIN_ATTACH, name], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        [v] = inventory.vanished_segments(name)
        assert v.kind == "zone" and v.vanished and v.in_use
        assert z.counter("hits").get() == 5                # still usable here
    finally:
        z.close()
    assert not exists(name)


def test_shmkits_own_removals_are_not_reported(name):
    a = Segment(name, "x", 4096)
    b = Segment(name + "-rm", "x", 4096)
    try:
        a.unlink()                                          # shmkit removed it: fine
        r = shmkit_cli("rm", "--force", name + "-rm")      # so did `shmkit rm`
        assert r.returncode == 0, r.stderr
        assert not exists(name) and not exists(name + "-rm")
        found = [v.name for v in inventory.vanished_segments(name + "*")]
        assert found == []
    finally:
        a.close()
        b.close()


def test_a_lifecycle_removal_is_not_reported(name, procs):
    """unlink_on_creator_exit removes the name while another process still uses the
    segment: shmkit did it, so it is not 'vanished'."""
    seg = Segment(name, "x", 4096, lifecycle="unlink_on_creator_exit")
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys
        from shmkit import Segment
        s = Segment(sys.argv[1], "w")
        print("ready", flush=True)
        sys.stdin.readline()
        s.close()
    """), name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    procs.append(p)
    try:
        assert read_line(p) == "ready"
        seg.close()                                   # the creator leaves: the name goes
        assert not exists(name)
        assert inventory.vanished_segments(name) == []
        out, err = p.communicate("go\n", timeout=60)
        assert p.returncode == 0, err
    finally:
        seg.close()


def test_sigkill_of_the_attaching_process_keeps_the_segment(name, procs):
    """No tracker was ever told: nothing unlinks when the attacher dies hard."""
    with Segment(name, "x", 4096) as seg:
        p = spawn_python(textwrap.dedent("""
            import sys, time, shmkit
            shm = shmkit.attach_shared_memory(sys.argv[1])
            print("attached", flush=True)
            time.sleep(60)
        """), name)
        procs.append(p)
        assert read_line(p) == "attached"
        kill_hard(p.pid)
        p.wait(30)
        assert p.returncode == -signal.SIGKILL
        assert exists(name) and not seg.removed
        seg.unlink()


def _child_attaches_pickled(shm, out_name):
    shm.buf[0:5] = b"child"
    with Segment(out_name, "w") as out:
        out.write(type(shm).__name__.encode(), 0)


def test_pickled_to_a_spawned_child_it_stays_untracked(name, procs):
    import multiprocessing as mp
    with Segment(name, "x", 4096) as seg, Segment(name + "-out", "x", 64) as out:
        shm = shmkit.attach_shared_memory(name)
        try:
            assert type(pickle.loads(pickle.dumps(shm))) is type(shm)
            p = mp.get_context("spawn").Process(target=_child_attaches_pickled,
                                                args=(shm, name + "-out"))
            procs.append(p)
            p.start()
            p.join(60)
            assert p.exitcode == 0
            assert seg.read(0, 5) == b"child" and exists(name)
            assert out.read(0, 22) == b"_UntrackedSharedMemory"
        finally:
            shm.close()
        seg.unlink()
        out.unlink()


def test_other_stdlib_segments_are_still_tracked(name):
    """The filter drops only attach_shared_memory's own registration: a segment the
    stdlib creates afterwards is cleaned up by the tracker as always."""
    code = textwrap.dedent("""
        import sys, shmkit
        from multiprocessing import shared_memory
        shmkit.attach_shared_memory(sys.argv[1]).close()
        made = shared_memory.SharedMemory(name=sys.argv[1] + "-std", create=True, size=4096)
        made.close()                          # exits without unlink(): the tracker's job
    """)
    with Segment(name, "x", 4096) as seg:
        r = subprocess.run([sys.executable, "-W", "always", "-c", code, name],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "leaked shared_memory" in r.stderr
        wait_until(lambda: not exists(name + "-std"), what="the tracker's cleanup")
        assert exists(name)
        seg.unlink()


def test_bad_arguments():
    with pytest.raises(FileNotFoundError):
        shmkit.attach_shared_memory("shmkit-test-no-such-segment-here")
    with pytest.raises(TypeError):
        shmkit.attach_shared_memory(42)
    for bad in ("", "/", "a/b", "x\0y"):
        with pytest.raises(InvalidNameError):
            shmkit.attach_shared_memory(bad)
    with Segment(None, "c", 4096, backend="memfd") as m, pytest.raises(TypeError, match="POSIX"):
        shmkit.attach_shared_memory(m)


def test_accepts_a_segment_and_a_leading_slash(name):
    with Segment(name, "x", 4096) as seg:
        seg.write(b"abc", 0)
        for target in (seg, "/" + name):
            shm = shmkit.attach_shared_memory(target)
            assert bytes(shm.buf[:3]) == b"abc" and shm.name == name
            shm.close()
        seg.unlink()


def test_registry_records_reveal_a_vanished_segment_after_everyone_left(name, tmp_path):
    """Where shmkit's records live in its registry (no user xattrs), a record outlives a
    name removed behind shmkit's back: ls reports it, gc removes the record."""
    env = dict(os.environ, SHMKIT_XATTR="0", SHMKIT_REGISTRY=str(tmp_path / "registry"))
    make = "import sys\nfrom shmkit import Segment\nSegment(sys.argv[1], 'x', 4096).close()"
    r = subprocess.run([sys.executable, "-c", make, name], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-c", PLAIN_ATTACH, name], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not exists(name), r.stderr
    ls = shmkit_cli("ls", name, "--json", env=env)
    [row] = json.loads(ls.stdout)
    assert row["status"] == ["vanished"] and row["nattch"] == 0 and row["kind"] == "segment"
    gc = shmkit_cli("gc", "--json", env=env)
    assert gc.returncode == 0, gc.stderr
    assert [a["action"] for a in json.loads(gc.stdout) if a["what"] == "record"] == ["removed"]
    assert json.loads(shmkit_cli("ls", name, "--json", env=env).stdout) == []
