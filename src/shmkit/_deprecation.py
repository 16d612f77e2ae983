"""Old spellings that keep working for a while, with a DeprecationWarning.

``deprecated(message)`` is the run-time twin of ``typing_extensions.deprecated`` (PEP 702):
modules import that one under TYPE_CHECKING, so type checkers flag the old spelling too,
and this one otherwise, so calling it warns.  ``renamed(module, old_names)`` builds the
module ``__getattr__`` that serves an old class name.

Bottom layer (imports nothing of shmkit).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["deprecated", "renamed"]

F = TypeVar("F", bound=Callable[..., Any])


def deprecated(message: str) -> Callable[[F], F]:
    """Decorate a function or method whose every call warns ``message``."""
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def warn_then_call(*args: Any, **kwargs: Any) -> Any:
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            return fn(*args, **kwargs)

        warn_then_call.__deprecated__ = message  # type: ignore[attr-defined]  # as PEP 702 does
        return warn_then_call  # type: ignore[return-value]

    return decorate


def renamed(module: str, old_names: Mapping[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving each old name (old -> (new name, object)) with a
    DeprecationWarning, and AttributeError for anything else."""
    def __getattr__(name: str) -> Any:
        try:
            new, value = old_names[name]
        except KeyError:
            raise AttributeError(f"module {module!r} has no attribute {name!r}") from None
        warnings.warn(f"{module}.{name} is deprecated; use {module}.{new} (the same class)",
                      DeprecationWarning, stacklevel=2)
        return value

    return __getattr__
