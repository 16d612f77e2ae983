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

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access, so that importing
# shmkit stays cheap and optional dependencies such as NumPy are only needed when used)
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
}

__all__ = sorted(list(_LAZY) + list(_errors_all) + ["__version__"])


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shmkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
