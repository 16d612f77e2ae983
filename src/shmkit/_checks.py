"""Argument checks shared by the façade modules: one rule and one message per mistake,
whichever object the mistake is made with.

Bottom layer (imports only ``_core`` and ``_errors``); see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _core
from ._errors import InvalidNameError

if TYPE_CHECKING:
    from ._types import SerializerArg

__all__ = ["check_object_name", "check_posix_name", "check_int", "check_serializer",
           "check_dict_serializer"]


def check_object_name(name: object) -> str:
    """The name of an object in a zone: a str of 1 to OBJ_NAME_MAX bytes (UTF-8), no NUL.
    Returns it; TypeError or InvalidNameError (a ValueError) saying what is wrong."""
    if not isinstance(name, str):
        raise TypeError(f"object name must be a str, not {type(name).__name__}")
    try:
        b = name.encode()
    except UnicodeError:
        raise InvalidNameError(f"object name {name!r} is not valid UTF-8 text (it holds a "
                               "lone surrogate); names in a zone's directory are UTF-8") from None
    if not b:
        raise InvalidNameError("object name is empty")
    if len(b) > _core.OBJ_NAME_MAX:
        raise InvalidNameError(f"object name is {len(b)} bytes long; at most "
                               f"{_core.OBJ_NAME_MAX} are allowed")
    if "\0" in name:
        raise InvalidNameError("object name contains a NUL byte")
    return name


def check_posix_name(name: object) -> str:
    """A POSIX segment name (a leading '/' is dropped): a file name in /dev/shm, at most
    250 bytes.  Returns it; TypeError or InvalidNameError."""
    if not isinstance(name, str):
        raise TypeError(f"segment name must be a str, not {type(name).__name__}")
    if name.startswith("/"):
        name = name[1:]
    if not name:
        raise InvalidNameError("segment name is empty")
    if "/" in name:
        raise InvalidNameError(f"segment name {name!r} contains '/'")
    if "\0" in name:
        raise InvalidNameError(f"segment name {name!r} contains a NUL byte")
    try:
        # a file name in /dev/shm: encoded as os.open would (surrogateescape), so that
        # names listed by os.listdir open as they are
        encoded = os.fsencode(name)
    except UnicodeError:
        raise InvalidNameError(f"segment name {name!r} cannot be encoded as a file "
                               "name") from None
    if len(encoded) > 250:
        raise InvalidNameError(f"segment name is {len(encoded)} bytes long; at most 250 are allowed")
    if name in (".", ".."):
        raise InvalidNameError(f"segment name {name!r} is reserved")
    return name


def check_int(what: str, value: object, minimum: int = 0, maximum: int | None = None,
              too_large: type[Exception] = ValueError) -> int:
    """``value`` as an int >= ``minimum`` (bool is not an int here) and <= ``maximum``
    (what a shared object can hold); TypeError, ValueError or ``too_large`` naming
    ``what``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise too_large(f"{what} must be <= {maximum} in shared memory, not {value}")
    return value


def check_serializer(serializer: SerializerArg | None) -> tuple[
        Callable[..., Any] | None, Callable[..., Any] | None]:
    """``serializer=`` of a queue (shmkit.Queue, RedisQueue): an object with ``dumps``
    and ``loads`` (like the pickle module) or a ``(dumps, loads)`` pair -> the two
    functions; None -> (None, None).  TypeError for anything else."""
    if serializer is None:
        return None, None
    dumps: Any
    loads: Any
    if isinstance(serializer, tuple) and len(serializer) == 2:
        dumps, loads = serializer
    else:
        dumps = getattr(serializer, "dumps", None)
        loads = getattr(serializer, "loads", None)
    if not callable(dumps) or not callable(loads):
        raise TypeError("serializer must have callable dumps() and loads() (like the pickle "
                        "module), or be a (dumps, loads) pair")
    return dumps, loads


def check_dict_serializer(serializer: object) -> tuple[
        Callable[..., Any] | None, Callable[..., Any] | None]:
    """``serializer=`` of a dict (shmkit.Dict, RedisDict): an object with ``dumps`` and
    ``loads`` (like the pickle module) -> the two functions; None -> (None, None).
    TypeError for anything else."""
    if serializer is None:
        return None, None
    dumps = getattr(serializer, "dumps", None)
    loads = getattr(serializer, "loads", None)
    if not callable(dumps) or not callable(loads):
        raise TypeError("serializer must have dumps(obj) -> bytes and loads(bytes) -> obj "
                        f"(like the pickle module), not {serializer!r}")
    return dumps, loads
