"""``shmkit.open_zone(spec)``: one line of configuration moves a program from one
machine (a local Zone) to many (a RedisZone).

The layer that chooses a backend (docs/ARCHITECTURE.md): above both backends, below the
public API; it imports each of them only when a spec names it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .redis import RedisZone
    from .zone import Zone

__all__ = ["open_zone", "ZONE_URL_ENV"]

#: the environment variable open_zone() reads when it is given no spec
ZONE_URL_ENV = "SHMKIT_ZONE_URL"

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_zone(spec: str | None = None, **options: Any) -> Zone | RedisZone:
    """A zone from a name or a URL.

    - ``"redis://host:6379/0?zone=app"``, ``"rediss://..."`` (TLS) or ``"unix://..."``:
      a :class:`shmkit.RedisZone` named by the ``zone`` query parameter (default
      ``"default"``) on that server or cluster; ``options`` go to RedisZone (``lease=``,
      ``password=``, ...).  Needs the extra ``shmkit[redis]``.
    - any other text: the local :class:`shmkit.Zone` of that name, attached if it exists,
      else created (``options`` go to Zone; the size defaults to the default zone's).
    - None: the spec in the environment variable ``SHMKIT_ZONE_URL`` if it is set, else
      ``shmkit.default_zone()``.

    Objects are then made with the same calls on either: ``zone.queue("jobs")``,
    ``zone.dict("cache")``, ``zone.lock("leader")``...
    """
    if spec is None:
        spec = os.environ.get(ZONE_URL_ENV) or None
        if spec is None:
            from .zone import default_zone
            if options:
                raise TypeError("options need a spec (the default zone takes none)")
            return default_zone()
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"spec must be a zone name or a redis:// URL, not {spec!r}")
    if spec.startswith(_REDIS_SCHEMES):
        from .redis import RedisZone
        from .redis._zone import split_url
        url, name = split_url(spec)
        return RedisZone(name or "default", url, **options)
    if "://" in spec:
        raise ValueError(f"unknown scheme in {spec!r}: use redis://, rediss:// or unix:// "
                         "for Redis, or a plain zone name")
    from .zone import DEFAULT_ZONE_MAX_SIZE, DEFAULT_ZONE_SIZE, Zone
    if "size" in options:
        return Zone(spec, **options)
    try:
        return Zone(spec, 0, **options)
    except FileNotFoundError:
        options.setdefault("max_size", DEFAULT_ZONE_MAX_SIZE)
        return Zone(spec, DEFAULT_ZONE_SIZE, **options)
