"""Argument checks shared by the façade modules: one rule and one message per mistake,
whichever object the mistake is made with.

Bottom layer (imports only ``_core`` and ``_errors``); see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _core
from ._errors import InvalidNameError

if TYPE_CHECKING:
    from ._types import SerializerArg

__all__ = ["check_object_name", "check_int", "check_serializer"]


def check_object_name(name: object) -> str:
    """The name of an object in a zone: a str of 1 to OBJ_NAME_MAX bytes (UTF-8), no NUL.
    Returns it; TypeError or InvalidNameError (a ValueError) saying what is wrong."""
    if not isinstance(name, str):
        raise TypeError(f"object name must be a str, not {type(name).__name__}")
    b = name.encode()
    if not b:
        raise InvalidNameError("object name is empty")
    if len(b) > _core.OBJ_NAME_MAX:
        raise InvalidNameError(f"object name is {len(b)} bytes long; at most "
                               f"{_core.OBJ_NAME_MAX} are allowed")
    if "\0" in name:
        raise InvalidNameError("object name contains a NUL byte")
    return name


def check_int(what: str, value: object, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum`` (bool is not an int here); TypeError or
    ValueError naming ``what``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, not {value}")
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
