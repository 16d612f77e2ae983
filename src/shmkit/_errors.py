"""Exceptions raised by shmkit.

The tree (every class is importable from ``shmkit``)::

    ShmkitError
    ├── CorruptedError              shared bytes failed a consistency check
    ├── VersionMismatchError        made by an incompatible shmkit layout
    ├── ZoneMismatchError           (also ValueError) zone exists with another size/tag
    ├── ZoneFullError               (also MemoryError) no room left in the zone
    ├── ZoneInitError               the process initialising a zone died or failed
    ├── ObjectNotFoundError         (also LookupError) no object of that name in the zone
    ├── ObjectExistsError           (also FileExistsError) exclusive create of an existing name
    ├── ObjectTypeError             (also TypeError) the name exists with another type
    ├── ObjectMismatchError         (also ValueError) the name exists with other parameters
    ├── InvalidFreeError            (also ValueError) free of something not allocated
    ├── InvalidNameError            (also ValueError) a name that cannot be used
    ├── TooLargeError               (also ValueError) more than a structure can ever hold
    ├── ClosedError                 (also ValueError) use after close()
    ├── OwnerDiedError              a lock's previous owner died (see Lock)
    ├── NotOwnerError               (also RuntimeError) release of a lock not held
    ├── BrokenBarrierError          (also threading.BrokenBarrierError)
    ├── ShmkitTimeoutError          (also TimeoutError) a wait ran out of time
    ├── QueueEmpty                  (also queue.Empty)
    ├── QueueFull                   (also queue.Full)
    └── ShmkitOSError               (also OSError) a system call failed; errno says why
        ├── SegmentNotFoundError    (also FileNotFoundError)
        ├── SegmentExistsError      (also FileExistsError)
        ├── SegmentPermissionError  (also PermissionError)
        ├── InvalidArgumentError    (also ValueError) EINVAL: a size or mode the system refuses
        └── NoSpaceError            the file system (e.g. /dev/shm) or a SysV limit is full

Every class pickles (they keep their constructor arguments in ``args``), so errors
raised in a child process reach the parent intact.
"""

from __future__ import annotations

import queue as _queue
import threading as _threading

__all__ = [
    "ShmkitError",
    "CorruptedError",
    "VersionMismatchError",
    "ZoneMismatchError",
    "ZoneFullError",
    "ZoneInitError",
    "ObjectNotFoundError",
    "ObjectExistsError",
    "ObjectTypeError",
    "ObjectMismatchError",
    "InvalidFreeError",
    "InvalidNameError",
    "TooLargeError",
    "ClosedError",
    "OwnerDiedError",
    "NotOwnerError",
    "BrokenBarrierError",
    "ShmkitTimeoutError",
    "QueueEmpty",
    "QueueFull",
    "ShmkitOSError",
    "SegmentNotFoundError",
    "SegmentExistsError",
    "SegmentPermissionError",
    "NoSpaceError",
    "InvalidArgumentError",
]


class ShmkitError(Exception):
    """Base class of every error shmkit raises on purpose."""


class CorruptedError(ShmkitError):
    """Bytes in shared memory failed a consistency check.

    Raised instead of following a bad offset.  The structure may have been overwritten
    by a stray write or by a process that is not shmkit.  ``zone.check()`` lists what is
    wrong; the data cannot be trusted.
    """


class VersionMismatchError(ShmkitError):
    """The zone was made by a shmkit build with an incompatible byte layout.

    The message names both format words.  Use the same shmkit version in every process
    that shares the zone, or give the new version another zone name.
    """


class ZoneMismatchError(ShmkitError, ValueError):
    """A zone of that name exists with a different size or tag.

    Zones are identified by (name, size, tag), as nginx's shared zones are.  Declare it
    with the values the message names, or with size 0 to attach to whatever exists.
    """


class ZoneFullError(ShmkitError, MemoryError):
    """The zone has no room for the allocation (and cannot grow any further).

    The message says how many bytes were asked for and which limit was hit.  Free
    something, give the zone a larger ``max_size``, or use a bigger zone.
    """


class ZoneInitError(ShmkitError):
    """The process initialising the zone died (or its init failed) before it was ready.

    Declaring the zone again re-initialises it.
    """


class ObjectNotFoundError(ShmkitError, LookupError):
    """No object of that name exists in the zone (and creation was not asked for)."""


class ObjectExistsError(ShmkitError, FileExistsError):
    """Exclusive creation of an object whose name is already taken."""


class ObjectTypeError(ShmkitError, TypeError):
    """The name exists in the zone, but as an object of another type."""


class ObjectMismatchError(ShmkitError, ValueError):
    """The name exists in the zone with the right type but other parameters: an array of
    another shape or dtype, a board of another size.

    Objects are identified by name and parameters, as zones are by (name, size, tag).
    The message names both; declare the object with the values it was created with (or
    leave them out to attach to whatever exists), or use another name.
    """


class InvalidFreeError(ShmkitError, ValueError):
    """free() of an offset that is not a live allocation (outside the zone, inside a
    chunk, or already free).  Nothing was changed."""


class InvalidNameError(ShmkitError, ValueError):
    """A segment, zone or object name that cannot be used (empty, too long, '/')."""


class TooLargeError(ShmkitError, ValueError):
    """More than the structure can ever hold (e.g. a message larger than the queue)."""


class ClosedError(ShmkitError, ValueError):
    """The handle was closed; it cannot be used any more."""


class OwnerDiedError(ShmkitError):
    """The previous owner of a lock died while holding it.

    Only raised where documented; shmkit's locks recover and report the death through
    their statistics instead.
    """


class NotOwnerError(ShmkitError, RuntimeError):
    """release() of a lock that the caller does not hold."""


class BrokenBarrierError(ShmkitError, _threading.BrokenBarrierError):
    """The barrier was aborted, a wait timed out, or a party died while waiting."""


class ShmkitTimeoutError(ShmkitError, TimeoutError):
    """A blocking call ran out of time."""


class QueueEmpty(ShmkitError, _queue.Empty):
    """get() found nothing (non-blocking, or the timeout passed).  Also queue.Empty."""


class QueueFull(ShmkitError, _queue.Full):
    """put() found no room (non-blocking, or the timeout passed).  Also queue.Full."""


class ShmkitOSError(ShmkitError, OSError):
    """A system call failed.  ``errno`` and ``strerror`` say why; the message names the
    call and the object."""


class SegmentNotFoundError(ShmkitOSError, FileNotFoundError):
    """The segment, file or SysV key does not exist."""


class SegmentExistsError(ShmkitOSError, FileExistsError):
    """Exclusive creation of a segment that already exists."""


class SegmentPermissionError(ShmkitOSError, PermissionError):
    """Not allowed: the mode bits, the owner, or a seal forbids it."""


class InvalidArgumentError(ShmkitOSError, ValueError):
    """The system refused an argument (EINVAL): a size outside the limits, a segment
    smaller than asked for, a zone below the minimum size.  The message says which."""


class NoSpaceError(ShmkitOSError):
    """No room to create or grow the segment: the file system holding it (/dev/shm for
    POSIX segments) is full, or a SysV limit (shmall, shmmni) is reached.  The message
    says how much was asked for and how much is free."""
