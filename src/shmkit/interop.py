"""Python's own ``multiprocessing.shared_memory`` on shmkit segments, safely.

``multiprocessing.shared_memory.SharedMemory(name)`` registers every segment it
*attaches to* with the resource tracker, and the tracker unlinks whatever is still
registered when the process exits (printing "leaked shared_memory objects").  On a
segment that other processes still use - any shmkit segment or zone - that removes the
name under them: they keep their mapping, but every process that opens the name from
then on finds nothing (CPython gh-82300).  Python 3.13 added ``track=False``; before
3.13 there is no opt-out.  So, on every version::

    shm = shmkit.attach_shared_memory("frames")     # a SharedMemory, never tracked
    shm.buf[:5] = b"hello"
    shm.close()                                     # the name stays

``shmkit ls`` and ``shmkit doctor`` report a shmkit segment whose name was removed this
way while processes still use it (status ``vanished``).  See docs/segments.md.
"""

from __future__ import annotations

import sys
import threading
from multiprocessing import resource_tracker, shared_memory
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .segment import Segment

__all__ = ["attach_shared_memory"]

_HAS_TRACK = sys.version_info >= (3, 13)
_untracked = threading.local()      # set while this thread attaches without tracking
_install_lock = threading.Lock()


def _install_register_filter() -> None:
    """Before 3.13, SharedMemory.__init__ calls ``resource_tracker.register(name,
    "shared_memory")`` (looked up on the module at call time).  Wrap it once so that the
    call made while *this thread* runs attach_shared_memory is dropped: no tracker
    process is started and nothing is registered, not even for a moment (registering
    and unregistering right after would leave a window in which a SIGKILL makes the
    tracker unlink the segment).  Every other call goes through unchanged."""
    with _install_lock:
        current = resource_tracker.register
        if getattr(current, "_shmkit_filter", False):
            return

        def register(name: Any, rtype: str) -> None:
            if rtype == "shared_memory" and getattr(_untracked, "active", False):
                return None
            return current(name, rtype)

        register._shmkit_filter = True  # type: ignore[attr-defined]
        register.__wrapped__ = current  # type: ignore[attr-defined]
        register.__doc__ = current.__doc__
        resource_tracker.register = register


class _UntrackedSharedMemory(shared_memory.SharedMemory):
    """A SharedMemory attached to an existing segment without the resource tracker.
    It pickles as itself, so a child that receives it attaches untracked too."""

    def __init__(self, name: str, create: bool = False, size: int = 0) -> None:
        if create:
            raise ValueError("attach_shared_memory() attaches to an existing segment; create "
                             "segments with shmkit.Segment")
        if _HAS_TRACK:
            super().__init__(name, track=False)  # type: ignore[call-arg,unused-ignore]  # 3.13+
            return
        _install_register_filter()
        _untracked.active = True
        try:
            super().__init__(name)
        finally:
            _untracked.active = False

    def unlink(self) -> None:
        """Remove the name (better: ``shmkit.Segment.unlink()`` or ``shmkit rm``, which
        keep shmkit's records right).  Never tells the resource tracker, which was never
        told about this segment."""
        from multiprocessing import shared_memory as _sm
        _sm._posixshmem.shm_unlink(self._name)  # type: ignore[attr-defined]


def attach_shared_memory(name: str | Segment) -> shared_memory.SharedMemory:
    """``multiprocessing.shared_memory.SharedMemory`` attached to the existing POSIX
    segment ``name`` (a str, or a posix ``shmkit.Segment``), never registered with the
    resource tracker, on every Python version: when this process exits, the segment
    stays for the others.

    On 3.13+ this is ``SharedMemory(name, track=False)``.  Before, the tracker's
    registration call is dropped for this attach only (see ``_install_register_filter``).
    Raises FileNotFoundError if there is no such segment, like SharedMemory.  Remove
    segments with shmkit (``Segment.unlink()``, ``shmkit rm``), not ``shm.unlink()``.
    """
    from .segment import Segment
    target: object = name
    if isinstance(target, Segment):
        if target.backend != "posix":
            raise TypeError(f"multiprocessing.shared_memory opens POSIX segments only, not "
                            f"{target.backend} ones")
        target = target.name
    if not isinstance(target, str):
        raise TypeError(f"segment name must be a str or a posix shmkit.Segment, not "
                        f"{type(target).__name__}")
    bare = target[1:] if target.startswith("/") else target
    if not bare or "/" in bare or "\0" in bare:
        from ._errors import InvalidNameError
        raise InvalidNameError(f"not a POSIX segment name: {target!r}")
    return _UntrackedSharedMemory(bare)
