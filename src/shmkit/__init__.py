"""shmkit: shared memory for Python processes on Linux, done properly.

Segments of every kind Linux offers, zones with a slab allocator and named objects,
synchronisation that survives crashed processes, and the structures people pass
between processes.  Public names are listed in ``__all__``; each lives in its own
module and is imported when first used.
"""

from __future__ import annotations

import importlib

from ._errors import *  # noqa: F401,F403
from ._errors import __all__ as _errors_all

# typing.TYPE_CHECKING without importing typing (and re, enum, ... with it): mypy and
# pyright take any name TYPE_CHECKING for True; at run time it is False
TYPE_CHECKING = False

__version__ = "0.1.0"

# public name -> module that defines it, imported on first access: importing shmkit stays
# cheap (no ctypes, multiprocessing, pickle ... until used) and optional dependencies such
# as NumPy are only needed when used.  Type checkers read the same names from the imports
# under TYPE_CHECKING below; tests/test_layers.py keeps the two lists equal.
_LAZY = {
    "Segment": "segment",
    "SegmentStat": "segment",
    "ftok": "segment",
    "send_fd": "segment",
    "recv_fd": "segment",
    "Zone": "zone",
    "ZoneStats": "zone",
    "SlabClassStats": "zone",
    "ObjectInfo": "zone",
    "default_zone": "zone",
    "Lock": "sync",
    "RLock": "sync",
    "RWLock": "sync",
    "Semaphore": "sync",
    "BoundedSemaphore": "sync",
    "Event": "sync",
    "Condition": "sync",
    "Barrier": "sync",
    "Value": "sync",
    "Array": "sync",
    "Counter": "sync",
    "LockStats": "sync",
    "RWLockStats": "sync",
    "SemaphoreStats": "sync",
    "EventStats": "sync",
    "ConditionStats": "sync",
    "BarrierStats": "sync",
    "ValueStats": "sync",
    "CounterStats": "sync",
    "Queue": "queue",
    "QueueStats": "queue",
    "Dict": "dict",
    "DictStats": "dict",
    "ndarray": "shared_array",
    "SharedNDArray": "shared_array",
    "Board": "board",
    "BoardStats": "board",
    "SharedConfig": "config",
    "attach_shared_memory": "interop",
    "open_zone": "_backends",
    "RedisZone": "redis",
    "aio_configure": "_aio",
    "aio_statistics": "_aio",
    "get_include": "_capi",
    "get_library_dir": "_capi",
}

if TYPE_CHECKING:
    from typing import Any

    from ._aio import aio_configure as aio_configure, aio_statistics as aio_statistics
    from ._backends import open_zone as open_zone
    from ._capi import get_include as get_include, get_library_dir as get_library_dir
    from .board import Board as Board, BoardStats as BoardStats
    from .config import SharedConfig as SharedConfig
    from .dict import Dict as Dict, DictStats as DictStats
    from .interop import attach_shared_memory as attach_shared_memory
    from .queue import Queue as Queue, QueueStats as QueueStats
    from .redis import RedisZone as RedisZone
    from .segment import (Segment as Segment, SegmentStat as SegmentStat, ftok as ftok,
                          recv_fd as recv_fd, send_fd as send_fd)
    from .shared_array import SharedNDArray as SharedNDArray, ndarray as ndarray
    from .sync import (Array as Array, Barrier as Barrier, BarrierStats as BarrierStats,
                       BoundedSemaphore as BoundedSemaphore, Condition as Condition,
                       ConditionStats as ConditionStats, Counter as Counter,
                       CounterStats as CounterStats, Event as Event, EventStats as EventStats,
                       Lock as Lock, LockStats as LockStats, RLock as RLock, RWLock as RWLock,
                       RWLockStats as RWLockStats, Semaphore as Semaphore,
                       SemaphoreStats as SemaphoreStats, Value as Value, ValueStats as ValueStats)
    from .zone import (ObjectInfo as ObjectInfo, SlabClassStats as SlabClassStats, Zone as Zone,
                       ZoneStats as ZoneStats, default_zone as default_zone)

__all__ = [
    "Array", "Barrier", "BarrierStats", "Board", "BoardStats", "BoundedSemaphore",
    "BrokenBarrierError", "ClosedError", "Condition", "ConditionStats", "CorruptedError",
    "Counter", "CounterStats", "Dict", "DictStats", "Event", "EventStats",
    "InvalidArgumentError", "InvalidFreeError", "InvalidNameError", "Lock", "LockStats",
    "NoSpaceError", "NotOwnerError", "ObjectExistsError", "ObjectInfo", "ObjectMismatchError",
    "ObjectNotFoundError", "ObjectTypeError", "OwnerDiedError", "Queue", "QueueEmpty",
    "QueueFull", "QueueStats", "RLock", "RWLock", "RWLockStats", "RedisZone", "Segment",
    "SegmentExistsError", "SegmentNotFoundError", "SegmentPermissionError", "SegmentStat",
    "Semaphore", "SemaphoreStats", "SharedConfig", "SharedNDArray", "ShmkitError",
    "ShmkitOSError", "ShmkitTimeoutError", "SlabClassStats", "TooLargeError", "Value",
    "ValueStats", "VersionMismatchError", "Zone", "ZoneFullError", "ZoneInitError",
    "ZoneMismatchError", "ZoneStats", "__version__", "aio_configure", "aio_statistics",
    "attach_shared_memory", "default_zone", "ftok", "get_include", "get_library_dir",
    "ndarray", "open_zone", "recv_fd", "send_fd",
]

if not TYPE_CHECKING:
    # hidden from type checkers, which would otherwise accept any attribute of shmkit
    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'shmkit' has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return __all__


del TYPE_CHECKING  # (not a public name of shmkit)
