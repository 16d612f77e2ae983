"""What the page may change, when it was started with actions and a token: remove one
segment (with ``shmkit rm``'s policy and never ``--force``) and run ``gc``."""

from __future__ import annotations

__all__ = ["ActionRefused", "remove_segment_checked"]


class ActionRefused(Exception):
    """The action was not done; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def remove_segment_checked(name: str | None = None, *, shmid: int | None = None,
                           key: int | None = None) -> str:
    """Remove a segment shmkit created that no process has attached; as ``shmkit rm``
    without ``--force``.  Returns what was done; ActionRefused otherwise."""
    from .. import SegmentNotFoundError
    from ..inventory import find_segment, remove_segment
    try:
        info = find_segment(name, key=key, shmid=shmid)
    except SegmentNotFoundError as e:
        raise ActionRefused(404, str(e.strerror or e)) from None
    what = (f"POSIX segment {info.name!r}" if info.backend == "posix"
            else f"SysV segment {info.display_name} (id {info.shmid})")
    if not info.kind:
        raise ActionRefused(409, f"{what} was not created by shmkit: not removed from the page")
    if info.nattch or info.handles:
        raise ActionRefused(409, f"{what} is attached by {max(info.nattch, info.handles)} "
                            "process(es): not removed from the page")
    try:
        remove_segment(info)
    except SegmentNotFoundError as e:
        raise ActionRefused(404, str(e.strerror or e)) from None
    return f"removed {what}"
