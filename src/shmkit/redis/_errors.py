"""Exceptions of the Redis backend that have no local counterpart.

Everything else a RedisZone object raises is the same class the local object raises
(``shmkit._errors``): QueueEmpty is a queue.Empty, timeouts are ShmkitTimeoutError (a
TimeoutError), release by a non-owner is NotOwnerError, and so on.  These two describe
situations that cannot happen on one machine::

    ShmkitError
    ├── BackendConnectionError   (also ConnectionError) the Redis server cannot be reached
    └── LeaseLostError           a lease this process held ran out and was reclaimed
"""

from __future__ import annotations

from .._errors import ShmkitError

__all__ = ["BackendConnectionError", "LeaseLostError"]


class BackendConnectionError(ShmkitError, ConnectionError):
    """The connection to Redis broke, or could not be made (server restarting, network
    partition, wrong address).

    The call that raised it may or may not have taken effect on the server (a put may
    have been stored, a task_done counted): shmkit never sends a command twice behind
    your back.  The next call reconnects by itself.  Blocking waits (get, join, wait,
    acquire, wait_newer) ride through a restart: they reconnect until their timeout and
    raise this only if the server is still unreachable then.  See docs/redis.md,
    "Connection loss".
    """


class LeaseLostError(ShmkitError):
    """A lease this handle held expired and was reclaimed by another process: the
    process was stopped, partitioned from Redis or too slow to renew for longer than
    ``lease`` seconds.  For a queue consumer: the messages it held were redelivered
    (at-least-once) or its tasks released (at-most-once), so its task_done() cannot
    count any more.  Take a new message; make the work idempotent.
    """
