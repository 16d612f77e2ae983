"""The reaper: removes one segment when its lifecycle says so, even after SIGKILL.

Started by the creator of a segment whose lifecycle is not ``persist`` (see
``_lifecycle.spawn_reaper``), in its own session, with the segment's fd (for SysV: the
registry record's fd) as fd 3 or 4.  It reopens that file through /proc/self/fd to get an
open file description of its own, drops the inherited one, and then *blocks* on an OFD
write lock - no polling:

- ``unlink_on_creator_exit``: the write lock on LOCKBYTE_CREATOR, granted once the
  creator's handle is gone (closed, exited, killed);
- ``unlink_on_last_close``: the write lock on LOCKBYTE_ATTACH, granted once no handle
  holds its read lock any more.

Holding the lock, it removes the name if the name still refers to the same object, and
exits.  Holding the lock also keeps a process that is opening the segment at that very
moment waiting, and that process then sees the name gone and retries.

Run by hand: ``python -m shmkit._reaper '<json spec>'`` (fd number in the spec).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    inherited = int(spec["fd"])
    # nothing else of the parent's may stay open here: an inherited fd of another
    # segment would hold that segment's locks for as long as we live
    os.closerange(inherited + 1, os.sysconf("SC_OPEN_MAX"))
    for fd in range(3, inherited):
        try:
            os.close(fd)
        except OSError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # not the terminal's to stop

    from shmkit import _core, _lifecycle

    try:
        fd = os.open(f"/proc/self/fd/{inherited}", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    os.close(inherited)  # from now on the creator's locks are its own
    st = os.fstat(fd)
    byte = (_core.LOCKBYTE_CREATOR if spec["when"] == "unlink_on_creator_exit"
            else _core.LOCKBYTE_ATTACH)
    _core.ofd_lock(fd, byte, fcntl.F_WRLCK, True)  # blocks until the lifecycle says "go"
    backend = spec["backend"]
    if backend == "sysv":
        _lifecycle.remove_if_same("sysv", spec["shmid"], None, ctime=spec["ctime"],
                                  record_fd=fd)
    else:
        _lifecycle.remove_if_same(backend, spec["ident"], st)
    os.close(fd)


if __name__ == "__main__":
    main(sys.argv[1:])
