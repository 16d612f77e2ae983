"""Argument checks shared by the façade modules: one rule and one message per mistake,
whichever object the mistake is made with.

Bottom layer (imports only ``_core`` and ``_errors``); see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from . import _core
from ._errors import InvalidNameError

__all__ = ["check_object_name", "check_int"]


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
