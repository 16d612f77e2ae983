"""Zero-copy NumPy arrays living in a zone.

::

    a = shmkit.ndarray("frame", (1080, 1920, 3), "uint8")    # find or create
    a[:] = 255                                                 # every process sees it

    # in another process: the same name gives a view of the same memory
    a = shmkit.ndarray("frame", (1080, 1920, 3), "uint8")
    a = shmkit.ndarray("frame")                                # attach: shape/dtype recorded

The array's shape and dtype are recorded in shared memory when it is created (new
arrays are zero-filled); declaring the name with another shape or dtype raises
ObjectMismatchError naming both.  What you get is a :class:`SharedNDArray`, an
``numpy.ndarray`` subclass whose elements are the shared memory itself: no copy is ever
made, in any process.  Synchronise concurrent writers yourself (e.g. ``zone.lock()``),
or use a :class:`shmkit.Board` to hand over whole arrays.

Pickling (passing it to a spawned or forkserver child, a Pool task, ...) sends the
zone and the name, not the data: the child attaches to the same memory.  Slices and
other views into the shared memory pickle the same way and come back as the same view;
arrays computed from it (``a + 1``) are ordinary arrays and pickle by value.

The memory stays mapped while any array (or view of one) exists: ``zone.close()`` with
arrays alive detaches the zone but defers the unmap until the last of them is gone, so
an array never points at unmapped memory.  ``zone.destroy(name)`` frees the memory:
do not destroy an array other processes still use.

NumPy is an optional dependency: without it these calls raise ImportError saying
``pip install shmkit[numpy]``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import _core
from ._errors import CorruptedError, ObjectMismatchError
from ._checks import check_object_name
from ._dtypes import dtype_descr, dtype_from_descr, numpy_or_hint
from .zone import Zone, default_zone

if TYPE_CHECKING:
    import numpy
    from numpy.typing import DTypeLike

    class SharedNDArray(numpy.ndarray[Any, Any]):
        """A NumPy array whose elements live in a shmkit zone (see shmkit.ndarray)."""

        _shm: tuple[Zone, str, int, int] | None

        @property
        def shm_name(self) -> str | None: ...
        @property
        def shm_zone(self) -> Zone | None: ...

__all__ = ["ndarray", "SharedNDArray"]

# struct shk_ndarray_head (layout.h): magic, ndim, data_off, nbytes, itemsize, shape[32],
# descr[160], reserved
_MAX_DIMS = _core.NDARRAY_MAX_DIMS
_HEAD = struct.Struct(f"=IIQQQ{_MAX_DIMS}Q{_core.NDARRAY_DESCR_MAX}s64x")
assert _HEAD.size == _core.NDARRAY_HEAD_SIZE

_shared_class: type[SharedNDArray] | None = None


def _cls() -> type[SharedNDArray]:
    """SharedNDArray, defined on first use so that importing shmkit needs no NumPy."""
    global _shared_class
    if _shared_class is not None:
        return _shared_class
    np = numpy_or_hint("shmkit.ndarray")
    try:
        byte_bounds = np.lib.array_utils.byte_bounds
    except AttributeError:  # NumPy < 2
        byte_bounds = np.byte_bounds

    ndarray_base: Any = np.ndarray   # typed as SharedNDArray under TYPE_CHECKING above

    class SharedNDArray(ndarray_base):  # type: ignore[misc]  # a base of type Any
        """A NumPy array whose elements live in a shmkit zone (see shmkit.ndarray).

        ``shm_name`` and ``shm_zone`` name the shared block it belongs to.  Pickles by
        reference (zone, name, offset, shape, strides) while its elements lie inside that
        block, by value otherwise."""

        _shm: tuple[Zone, str, int, int] | None = None  # (zone, name, base address here, nbytes)

        def __array_finalize__(self, obj: Any) -> None:
            self._shm = getattr(obj, "_shm", None)

        @property
        def shm_name(self) -> str | None:
            return self._shm[1] if self._shm else None

        @property
        def shm_zone(self) -> Zone | None:
            return self._shm[0] if self._shm else None

        def _shared_offset(self) -> int | None:
            info = self._shm
            if info is None:
                return None
            _, _, base, nbytes = info
            lo, hi = byte_bounds(self)
            if self.size and base <= lo and hi <= base + nbytes:
                return int(self.__array_interface__["data"][0]) - base
            if not self.size and base <= self.__array_interface__["data"][0] <= base + nbytes:
                return int(self.__array_interface__["data"][0]) - base
            return None

        def __reduce_ex__(self, protocol: Any) -> Any:
            off = self._shared_offset()
            if off is None:  # not (entirely) shared memory: an ordinary array
                return self.view(np.ndarray).__reduce_ex__(protocol)
            assert self._shm is not None  # (off is None otherwise)
            zone, name, _, _ = self._shm
            return (_rebuild_view, (zone, name, off, self.shape, self.strides,
                                    dtype_descr(self.dtype)))

        def __reduce__(self) -> Any:
            return self.__reduce_ex__(2)

        def __array_wrap__(self, arr: Any, context: Any = None, return_scalar: bool = False) -> Any:
            # results of computations are new memory: hand them back as plain arrays
            if return_scalar and arr.ndim == 0:
                return arr[()]
            if isinstance(arr, SharedNDArray) and arr._shared_offset() is not None:
                return arr
            return arr.view(np.ndarray)

        def __repr__(self) -> str:
            return f"shmkit.{np.ndarray.__repr__(self.view(np.ndarray))}"

    SharedNDArray.__module__ = __name__
    _shared_class = SharedNDArray
    return SharedNDArray


if not TYPE_CHECKING:
    def __getattr__(name: str) -> Any:
        if name == "SharedNDArray":
            return _cls()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _normalise_shape(shape: object) -> tuple[int, ...]:
    if not isinstance(shape, bool) and hasattr(shape, "__index__"):
        shape = (shape,)  # an int, or a NumPy integer
    try:
        dims: tuple[Any, ...] = tuple(shape)  # type: ignore[arg-type]  # TypeError: said below
    except TypeError:
        raise TypeError(f"shape must be an int or a sequence of ints, not {shape!r}") from None
    for d in dims:
        if not isinstance(d, int) or isinstance(d, bool):
            try:
                d = d.__index__()
            except (AttributeError, TypeError):
                raise TypeError(f"shape must contain ints, not {d!r}") from None
        if d < 0:
            raise ValueError(f"shape must not contain negative sizes: {shape!r}")
    dims = tuple(int(d) for d in dims)
    if len(dims) > _MAX_DIMS:
        raise ValueError(f"at most {_MAX_DIMS} dimensions are supported, not {len(dims)}")
    return dims


def _pack_head(shape: tuple[int, ...], dt: numpy.dtype[Any]) -> bytes:
    descr = dtype_descr(dt)
    if len(descr) >= _core.NDARRAY_DESCR_MAX:
        raise ValueError(f"the dtype's descriptor takes {len(descr)} bytes; at most "
                         f"{_core.NDARRAY_DESCR_MAX - 1} fit in the array's head: {dt}")
    nbytes = math.prod(shape) * dt.itemsize
    if nbytes >= 1 << 63 or any(d >= 1 << 63 for d in shape):
        raise ValueError(f"an array of shape {shape} of {dt} would take {nbytes} bytes: more "
                         "than any zone can hold")
    return _HEAD.pack(_core.NDARRAY_MAGIC, len(shape), _core.NDARRAY_HEAD_SIZE, nbytes,
                      dt.itemsize, *shape, *([0] * (_MAX_DIMS - len(shape))), descr)


def _unpack_head(head: bytes) -> tuple[tuple[int, ...], numpy.dtype[Any]]:
    f = _HEAD.unpack(head)
    ndim = f[1]
    shape = tuple(f[5:5 + ndim])
    descr = f[5 + _MAX_DIMS].split(b"\0", 1)[0]
    dt = dtype_from_descr(descr)
    if math.prod(shape) * dt.itemsize != f[3]:
        raise CorruptedError(f"array head: shape {shape} of {dt} does not make {f[3]} bytes")
    return shape, dt


def ndarray(name: str, shape: int | Iterable[int] | None = None, dtype: DTypeLike = "float64", *,
            zone: Zone | None = None, create: bool = True) -> SharedNDArray:
    """Find or create the shared NumPy array ``name`` in ``zone`` (default:
    ``shmkit.default_zone()``) and return a :class:`SharedNDArray` over its memory.

    ``shape`` and ``dtype`` describe the array to create (zero-filled); an existing
    array must match them (ObjectMismatchError otherwise).  ``shape=None`` attaches to
    an existing array whatever its shape and dtype (ObjectNotFoundError if there is
    none); so does ``create=False`` while still checking a given shape and dtype.
    Arrays of Python objects cannot be shared (TypeError).
    """
    np = numpy_or_hint("shmkit.ndarray")
    name = check_object_name(name)
    if zone is None:
        zone = default_zone()
    head = None
    want = None
    if shape is not None:
        shape = _normalise_shape(shape)
        try:
            dt = np.dtype(dtype)
        except UnicodeError:  # numpy lets this one out of a str with a lone surrogate
            raise TypeError(f"dtype {dtype!r} is not a NumPy dtype") from None
        if dt.hasobject:
            raise TypeError(f"arrays of Python objects cannot live in shared memory: {dt}")
        want = (shape, dt)
        head = _pack_head(shape, dt)
    mv, stored, created, _ = _core.ndarray_open(zone._live(), name, head if create else None)
    got_shape, got_dt = _unpack_head(stored)
    if want is not None and (got_shape, got_dt) != want:
        raise ObjectMismatchError(
            f"shared array {name!r} exists with shape {got_shape} and dtype {got_dt}, "
            f"not shape {want[0]} and dtype {want[1]}")
    return _view(np, mv, zone, name, got_shape, got_dt, 0, None)


def _view(np: Any, mv: memoryview, zone: Zone, name: str, shape: tuple[int, ...],
          dt: numpy.dtype[Any], offset: int, strides: tuple[int, ...] | None) -> SharedNDArray:
    """A SharedNDArray over part of the block `mv` (all of it: offset 0, strides None)."""
    cls = _cls()
    arr: SharedNDArray = np.ndarray(shape, dt, buffer=mv, offset=offset, strides=strides).view(cls)
    base = arr.__array_interface__["data"][0] - offset
    arr._shm = (zone, name, base, mv.nbytes)
    return arr


def _rebuild_view(zone: Zone, name: str, offset: int, shape: tuple[int, ...],
                  strides: tuple[int, ...], descr: bytes) -> SharedNDArray:
    """Unpickle a SharedNDArray: the same view of the same shared block."""
    np = numpy_or_hint("shmkit.ndarray")
    mv, stored, _, _ = _core.ndarray_open(zone._live(), name, None)
    _unpack_head(stored)  # validates
    return _view(np, mv, zone, name, shape, dtype_from_descr(descr), offset, strides)
