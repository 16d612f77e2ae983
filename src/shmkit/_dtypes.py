"""NumPy on demand, and dtypes as text in shared memory.

NumPy is optional: nothing here imports it until a caller needs it, and then a missing
NumPy is an ImportError that names the extra to install.  Boards and shared arrays both
record a dtype in shared memory as the text of ``numpy.lib.format``'s descriptor (it
round-trips structured dtypes); both directions are cached.

Bottom layer (imports only ``_errors``); see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
import sys
from typing import TYPE_CHECKING, Any, TypeGuard

from ._errors import CorruptedError

if TYPE_CHECKING:
    import numpy

__all__ = ["NUMPY_HINT", "numpy_or_hint", "is_ndarray", "dtype_descr", "dtype_from_descr"]

NUMPY_HINT = "pip install shmkit[numpy]"


def numpy_or_hint(what: str = "this") -> Any:
    """The numpy module, or an ImportError that says how to get it."""
    try:
        import numpy
    except ImportError as err:
        raise ImportError(f"{what} needs NumPy, an optional dependency of shmkit: "
                          f"{NUMPY_HINT}") from err
    return numpy


def is_ndarray(value: object) -> TypeGuard[numpy.ndarray[Any, Any]]:
    """True for a numpy.ndarray, without importing NumPy (if it is not imported, nothing
    can be one)."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


_descr_of: dict[Any, bytes] = {}
_dtype_of: dict[bytes, numpy.dtype[Any]] = {}


def dtype_descr(dtype: Any) -> bytes:
    """The text recorded in shared memory for a dtype (round-trips structured dtypes)."""
    d = _descr_of.get(dtype)
    if d is None:
        np = numpy_or_hint()
        d = repr(np.lib.format.dtype_to_descr(np.dtype(dtype))).encode()
        _descr_of[dtype] = d
    return d


def dtype_from_descr(text: bytes) -> numpy.dtype[Any]:
    """The dtype recorded as ``text``; CorruptedError if the text is not a descriptor."""
    dt = _dtype_of.get(text)
    if dt is None:
        np = numpy_or_hint()
        try:
            dt = np.lib.format.descr_to_dtype(ast.literal_eval(text.decode()))
        except (ValueError, SyntaxError, TypeError, UnicodeDecodeError) as err:
            raise CorruptedError(f"unreadable dtype descriptor {text[:80]!r}") from err
        _dtype_of[text] = dt
    return dt
