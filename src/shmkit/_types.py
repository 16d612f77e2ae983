"""Types that several public signatures share, for type checkers and readers.

Bottom layer: imports nothing of shmkit.  Names only type checkers need (``Buffer``)
are imported under TYPE_CHECKING by the modules that use them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, Union

if TYPE_CHECKING:
    from typing_extensions import Buffer as Buffer, TypeAlias

__all__ = ["Key", "Serializer", "SerializerArg", "StrPath", "Timeout"]


class Serializer(Protocol):
    """What ``serializer=`` takes: an object with ``dumps`` and ``loads``, like the pickle
    module."""

    def dumps(self, obj: Any, /) -> bytes: ...

    def loads(self, data: Any, /) -> Any: ...


#: ``serializer=`` of a Queue: a Serializer, or a (dumps, loads) pair
SerializerArg: TypeAlias = Union[Serializer, "tuple[Callable[[Any], bytes], Callable[[Any], Any]]"]

#: a file system path
StrPath: TypeAlias = Union[str, "os.PathLike[str]"]

#: seconds to wait; None waits forever
Timeout: TypeAlias = Union[float, None]

#: a key of a Dict or RedisDict: "a" and b"a" are different keys
Key: TypeAlias = Union[str, bytes]
