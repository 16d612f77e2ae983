"""shmkit.ndarray: find-or-create, recorded shape/dtype, zero-copy sharing with spawn,
forkserver and fork children (and plain subprocesses), views that pickle as views,
mappings that outlive zone.close(), corruption reported."""

from __future__ import annotations

import gc
import multiprocessing as mp
import pickle
import struct

import numpy as np
import pytest

import shmkit
from shmkit import (CorruptedError, ObjectMismatchError, ObjectNotFoundError, ObjectTypeError,
                    Zone)

from conftest import run_python


def test_create_and_attach(zone):
    a = zone.ndarray("a", (3, 4), "float32")
    assert isinstance(a, np.ndarray) and isinstance(a, shmkit.SharedNDArray)
    assert a.shape == (3, 4) and a.dtype == np.float32 and a.flags.writeable
    assert (a == 0).all()  # new arrays are zero-filled
    a[1, 2] = 7.5
    b = shmkit.ndarray("a", zone=zone)  # attach: shape and dtype come from the zone
    assert b.shape == (3, 4) and b.dtype == np.float32 and b[1, 2] == 7.5
    b[0, 0] = 1
    assert a[0, 0] == 1  # the same memory
    assert a.shm_name == "a" and a.shm_zone is zone
    info = zone.find("a")
    assert info.type == "ndarray" and info.size == 512 + a.nbytes


def test_mismatch_and_errors(zone):
    zone.ndarray("a", (3, 4), "float32")
    with pytest.raises(ObjectMismatchError, match=r"shape \(3, 4\) and dtype float32, not shape \(4, 3\)"):
        zone.ndarray("a", (4, 3), "float32")
    with pytest.raises(ObjectMismatchError, match="float64"):
        zone.ndarray("a", (3, 4), "float64")
    with pytest.raises(ObjectNotFoundError):
        shmkit.ndarray("missing", zone=zone)
    with pytest.raises(ObjectNotFoundError):
        zone.ndarray("missing", (2,), create=False)
    assert zone.ndarray("a", (3, 4), "float32", create=False).shape == (3, 4)
    with pytest.raises(TypeError, match="Python objects"):
        zone.ndarray("o", 3, object)
    with pytest.raises(ValueError, match="negative"):
        zone.ndarray("n", (2, -1))
    with pytest.raises(TypeError):
        zone.ndarray("n", (2, "x"))
    with pytest.raises(ValueError, match="dimensions"):
        zone.ndarray("n", (1,) * 33)
    with pytest.raises(TypeError):
        zone.ndarray("n", (2,), "no-such-dtype")
    zone.board("brd", 100)
    with pytest.raises(ObjectTypeError):
        zone.ndarray("brd", (2,))
    with pytest.raises(shmkit.ZoneFullError):
        zone.ndarray("huge", (1 << 30,), "uint8")


@pytest.mark.parametrize("shape,dtype", [
    (5, "int8"), ((), "complex128"), ((0, 3), "uint16"), ((2, 3, 4), ">f4"),
    ((2,), [("x", "<i4"), ("y", "<f8", (2,))]), ((3,), "datetime64[ns]"), ((4,), "S5"),
    (np.int64(6), "bool"),
])
def test_shapes_and_dtypes_round_trip(zone, shape, dtype):
    a = zone.ndarray("a", shape, dtype)
    b = shmkit.ndarray("a", zone=zone)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    assert zone.ndarray("a", shape, dtype).shape == a.shape


def test_zero_copy_pickling(zone):
    a = zone.ndarray("big", (1 << 18,), "float64")  # 2 MB
    data = pickle.dumps(a)
    assert len(data) < 1000  # a reference, not the data
    b = pickle.loads(data)
    b[12345] = 3.0
    assert a[12345] == 3.0
    # views into the shared memory pickle as the same view
    a2 = zone.ndarray("m", (6, 8), "int32")
    a2[:] = np.arange(48).reshape(6, 8)
    for view in (a2[2:5, 1:7:2], a2[::-1], a2.T, a2[3], a2[1:1], a2[4, 5:6]):
        back = pickle.loads(pickle.dumps(view))
        np.testing.assert_array_equal(back, view)
        assert type(back) is shmkit.SharedNDArray
        if view.size:
            first = (0,) * view.ndim
            back[first] = -1  # written through the unpickled view...
            assert view[first] == -1  # ...lands in the same place
        a2[:] = np.arange(48).reshape(6, 8)
    # results of computations are ordinary arrays and pickle by value
    c = a2 + 1
    assert type(c) is np.ndarray
    assert type(a2.sum()) is not shmkit.SharedNDArray
    copied = pickle.loads(pickle.dumps(np.array(a2)))
    copied[0, 0] = 100
    assert a2[0, 0] == 0


def test_shared_with_children(name, ctx, procs):
    z = Zone(name, 8 << 20)
    a = z.ndarray("shared", (100, 100), "float64")
    q = ctx.Queue()
    back = ctx.Queue()
    p = ctx.Process(target=_child_writes, args=(a, q, back))  # `a` travels by reference
    p.start()
    procs.append(p)
    total = q.get(timeout=60)
    assert total == float(np.arange(10000).sum())
    np.testing.assert_array_equal(a, np.arange(10000, dtype=np.float64).reshape(100, 100))
    a[0, 0] = -42
    back.put("go")
    assert q.get(timeout=60) == -42
    p.join(timeout=30)
    assert p.exitcode == 0
    z.close()


def _child_writes(arr, q, back):
    arr[:] = np.arange(arr.size, dtype=arr.dtype).reshape(arr.shape)
    q.put(float(arr.sum()))
    back.get(timeout=60)
    q.put(float(arr[0, 0]))


def test_plain_subprocess_attaches_by_name(zone):
    a = zone.ndarray("s", (4,), "int64")
    a[:] = [1, 2, 3, 4]
    code = ("import sys, shmkit\n"
            "z = shmkit.Zone(sys.argv[1])\n"
            "a = shmkit.ndarray('s', zone=z)\n"
            "print(a.sum()); a[0] = 100\n")
    assert run_python(code, zone.name).stdout.strip() == "10"
    assert a[0] == 100


def test_mapping_outlives_zone_close(name):
    z = Zone(name, 4 << 20)
    a = z.ndarray("a", (1000,), "int32")
    a[:] = 5
    seg = z.segment._seg
    z.close()
    assert z.closed
    assert a.sum() == 5000  # still mapped: the array holds the mapping
    a[:] = 6
    assert not seg.closed or seg.exports > 0
    with pytest.raises(shmkit.ClosedError):
        z.ndarray("b", 4)
    del a
    gc.collect()
    assert seg.exports == 0 and seg.closed  # unmapped when the last array went


def test_corrupted_head_is_reported(zone):
    zone.ndarray("a", (3, 4), "float32")
    off = zone.find("a").offset
    head = zone.view(off, 512)
    saved = bytes(head)
    head[32:40] = struct.pack("=Q", 1000)  # shape[0] no longer matches nbytes
    with pytest.raises(CorruptedError):
        shmkit.ndarray("a", zone=zone)
    head[:] = saved
    head[288:296] = b"\xff" * 8  # garbage dtype descriptor
    with pytest.raises(CorruptedError):
        shmkit.ndarray("a", zone=zone)
    head[:] = saved
    assert shmkit.ndarray("a", zone=zone).shape == (3, 4)


def test_top_level_name_is_callable_in_any_import_order(zone):
    code = ("import sys, shmkit\n"
            "z = shmkit.Zone(sys.argv[1])\n"
            "a = z.ndarray('t', 3)\n"              # imports the submodule first
            "b = shmkit.ndarray('t', 3, zone=z)\n"  # then the top-level name
            "from shmkit import ndarray\n"
            "c = ndarray('t', zone=z)\n"
            "print(type(b).__name__, c.shape)\n")
    assert run_python(code, zone.name).stdout.split() == ["SharedNDArray", "(3,)"]


def test_without_numpy(zone):
    code = ("import sys; sys.modules['numpy'] = None\n"
            "import shmkit\n"
            "z = shmkit.Zone(sys.argv[1])\n"
            "try:\n    z.ndarray('x', 3)\n"
            "except ImportError as e:\n    print(e)\n"
            "try:\n    shmkit.ndarray('x', 3, zone=z)\n"
            "except ImportError as e:\n    print(e)\n")
    out = run_python(code, zone.name).stdout.splitlines()
    assert len(out) == 2 and all("pip install shmkit[numpy]" in line for line in out)
