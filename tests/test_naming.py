"""One naming pattern: every object's counters come from ``statistics()``, as a frozen
dataclass named ``<Thing>Stats`` (``Redis<Thing>Stats`` on Redis); the former spellings
(``Zone.stats()``, ``QueueStatistics``, ``RedisQueueStatistics``) still work and warn."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import warnings

import pytest

import shmkit
from shmkit import Zone

LIBRARY_MODULES = ["shmkit.segment", "shmkit.zone", "shmkit.sync", "shmkit.queue", "shmkit.dict",
                   "shmkit.board", "shmkit.config", "shmkit.shared_array", "shmkit.inventory"]


def _objects(zone):
    yield zone
    yield zone.lock("l")
    yield zone.rlock("rl")
    yield zone.rwlock("rw")
    yield zone.semaphore("s")
    yield zone.bounded_semaphore("bs")
    yield zone.event("e")
    yield zone.condition("c")
    yield zone.barrier("b", 2)
    yield zone.value("v", "i", 3)
    yield zone.array("a", "i", 4)
    yield zone.counter("n")
    yield zone.queue("q", 1 << 16)
    yield zone.dict("d", 64 << 10)
    yield zone.board("bd", 4096)
    yield zone.config("cf", 4096)


def test_every_object_has_statistics_returning_a_frozen_stats_dataclass(zone):
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the new names never warn
        for obj in _objects(zone):
            st = obj.statistics()
            cls = type(st)
            assert dataclasses.is_dataclass(st) and cls.__dataclass_params__.frozen, cls
            assert cls.__name__.endswith("Stats") and not cls.__name__.endswith("Statistics"), cls
            seen.add(cls.__name__)
    assert {"ZoneStats", "QueueStats", "DictStats", "BoardStats", "LockStats"} <= seen


def test_no_public_name_uses_the_other_pattern():
    for modname in LIBRARY_MODULES:
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", ()):
            assert not name.endswith("Statistics"), f"{modname}.{name}"
    for name in shmkit.__all__:
        assert not name.endswith("Statistics"), name


def test_every_stats_class_is_a_public_name_of_shmkit():
    for modname in LIBRARY_MODULES:
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", ()):
            if name.endswith("Stats"):
                assert getattr(shmkit, name) is getattr(mod, name), name


def test_zone_stats_is_the_deprecated_spelling_of_statistics(zone):
    with pytest.warns(DeprecationWarning, match=r"Zone\.stats\(\) is deprecated; use Zone\.statistics\(\)"):
        old = zone.stats()
    assert old == zone.statistics()


def test_queue_statistics_is_the_deprecated_name_of_queue_stats(zone):
    from shmkit.queue import QueueStats

    with pytest.warns(DeprecationWarning, match="QueueStatistics is deprecated; use shmkit.queue.QueueStats"):
        from shmkit.queue import QueueStatistics
    assert QueueStatistics is QueueStats
    assert isinstance(zone.queue("q", 1 << 16).statistics(), QueueStatistics)
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        importlib.import_module("shmkit.queue").NoSuchThing


def test_cli_uses_the_new_names(zone):
    """`shmkit info` on a zone reads its statistics without a DeprecationWarning."""
    zone.queue("q", 1 << 16)
    r = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-m", "shmkit", "info",
                        zone.name, "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert '"free_bytes"' in r.stdout and "Deprecat" not in r.stderr


def test_anonymous_zone_too():
    with Zone(None, 1 << 20, backend="anonymous") as z:
        assert z.statistics().size == 1 << 20


# -- the Redis backend (a real redis-server: tests/redis_support.py) ----------------------------

def _redis_objects(zone):
    yield zone.queue("q")
    yield zone.dict("d")
    yield zone.lock("l")
    yield zone.rlock("rl")
    yield zone.semaphore("s")
    yield zone.bounded_semaphore("bs", 2)
    yield zone.event("e")
    yield zone.counter("n")
    yield zone.board("b", 4096)
    yield zone.config("c", 4096)


def test_every_redis_object_has_statistics_returning_a_frozen_stats_dataclass(redis_zone):
    import shmkit.redis

    zone = redis_zone()
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for obj in _redis_objects(zone):
            st = obj.statistics()
            cls = type(st)
            assert dataclasses.is_dataclass(st) and cls.__dataclass_params__.frozen, cls
            assert cls.__name__.startswith("Redis") and cls.__name__.endswith("Stats"), cls
            assert getattr(shmkit.redis, cls.__name__) is cls, cls
            seen.add(cls.__name__)
    assert {"RedisQueueStats", "RedisDictStats", "RedisBoardStats", "RedisLockStats"} <= seen
    assert not [n for n in shmkit.redis.__all__ if n.endswith("Statistics")]


def test_redis_queue_statistics_is_the_deprecated_name_of_redis_queue_stats(redis_zone):
    from shmkit.redis import RedisQueueStats

    with pytest.warns(DeprecationWarning, match="RedisQueueStatistics is deprecated; use "
                                                "shmkit.redis.RedisQueueStats"):
        from shmkit.redis import RedisQueueStatistics
    assert RedisQueueStatistics is RedisQueueStats
    assert isinstance(redis_zone().queue("q").statistics(), RedisQueueStatistics)
    # pickles made before the rename name the class in its module
    with pytest.warns(DeprecationWarning, match="RedisQueueStatistics is deprecated"):
        old = importlib.import_module("shmkit.redis._queue").RedisQueueStatistics
    assert old is RedisQueueStats
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        importlib.import_module("shmkit.redis").NoSuchThing

