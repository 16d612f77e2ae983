"""shmkit's structures on Redis: ``shmkit.RedisZone`` (see docs/redis.md).

Needs redis-py, the optional extra ``shmkit[redis]``.  Everything else is shmkit's own:
the same method names, arguments, return values and exceptions as the local objects,
with the differences that crossing machines forces listed in docs/redis.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

try:
    import redis as _redis_py  # noqa: F401
except ImportError as err:
    raise ImportError("shmkit.RedisZone needs redis-py, an optional dependency of shmkit: "
                      "pip install shmkit[redis]") from err

from .._deprecation import renamed
from ._board import RedisBoard, RedisBoardStats, RedisConfig
from ._dict import RedisDict, RedisDictStats
from ._errors import BackendConnectionError, LeaseLostError
from ._queue import DELIVERY_MODES, RedisQueue, RedisQueueStats
from ._sync import (RedisBoundedSemaphore, RedisCounter, RedisCounterStats, RedisEvent,
                    RedisEventStats, RedisLock, RedisLockStats, RedisRLock, RedisSemaphore,
                    RedisSemaphoreStats)
from ._zone import DEFAULT_LEASE, DEFAULT_URL, RedisObjectInfo, RedisZone

__all__ = [
    "RedisZone", "RedisObjectInfo", "DEFAULT_URL", "DEFAULT_LEASE", "DELIVERY_MODES",
    "RedisQueue", "RedisQueueStats", "RedisDict", "RedisDictStats",
    "RedisLock", "RedisRLock", "RedisLockStats", "RedisSemaphore", "RedisBoundedSemaphore",
    "RedisSemaphoreStats", "RedisEvent", "RedisEventStats", "RedisCounter",
    "RedisCounterStats", "RedisBoard", "RedisBoardStats", "RedisConfig",
    "BackendConnectionError", "LeaseLostError",
]

# the name RedisQueueStats had when the Redis backend was merged (issue 14): every
# statistics class is <Thing>Stats
if TYPE_CHECKING:
    RedisQueueStatistics = RedisQueueStats
else:
    __getattr__ = renamed(__name__, {"RedisQueueStatistics": ("RedisQueueStats", RedisQueueStats)})
