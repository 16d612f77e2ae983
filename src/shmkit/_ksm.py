"""What Linux's same-page merging (KSM) can and cannot do here (for ``shmkit doctor``).

KSM's daemon, ksmd, scans the pages of memory areas that were marked mergeable -
``madvise(MADV_MERGEABLE)``, or a whole process with ``prctl(PR_SET_MEMORY_MERGE)`` -
and merges identical ones into one copy-on-write page.  It only ever considers
*private anonymous* memory: the kernel refuses to mark a shared mapping mergeable
(``madvise`` returns 0 and does nothing), so no shmkit segment, nothing in /dev/shm, no
SysV or memfd segment, no file mapping is ever merged.  Shared memory needs no merging:
one copy mapped by every process already is the deduplication.

Everything here is read from /sys/kernel/mm/ksm (Documentation/admin-guide/mm/ksm.rst)
and /proc/cpuinfo; nothing is changed.
"""

from __future__ import annotations

import os
from typing import Any

KSM_DIR = "/sys/kernel/mm/ksm"

#: run's values (ksm.rst)
RUN_STATES = {0: "off", 1: "running", 2: "unmerging"}

#: the figures worth a line each, in the order ksm.rst lists them
FIGURES = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
           "pages_skipped", "full_scans", "general_profit", "ksm_zero_pages",
           "stable_node_chains", "stable_node_dups")

CAN = ("merges identical pages of private anonymous memory that a process marked "
       "mergeable (madvise MADV_MERGEABLE, or prctl PR_SET_MEMORY_MERGE for a whole "
       "process): many private copies of the same data become one copy-on-write page")
CANNOT = ("never merges shared memory: the kernel refuses to mark a shared mapping "
          "mergeable (MAP_SHARED: every shmkit segment, /dev/shm, SysV, memfd, files), "
          "so two segments holding the same bytes stay two copies")
INSTEAD = ("one copy in shared memory is already the deduplication: put the data once in "
           "a shmkit segment (Board, SharedConfig, ndarray, Dict) and map it in every "
           "process instead of a private copy per process")


def read_text(path: str) -> str | None:
    """A /proc or /sys file's text, stripped; None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _under_hypervisor() -> bool:
    """The CPU reports a hypervisor (the "hypervisor" cpuinfo flag)."""
    text = read_text("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("flags"):
            return "hypervisor" in line.split()
    return False


def report() -> dict[str, Any]:
    """KSM's state and live figures, what it can do for shared memory, and advice.

    Keys: ``available`` (this kernel has KSM), ``run`` (0/1/2 or None), ``state``
    ("off", "running", "unmerging", "absent"), ``figures`` (every numeric file of
    /sys/kernel/mm/ksm), ``saved_bytes`` (pages_sharing x page size: what merging saves
    now), ``can_start`` (this process may write ``run``), ``hypervisor``, and the texts
    ``can``, ``cannot``, ``instead``, ``here`` (what that means on this machine)."""
    page = os.sysconf("SC_PAGESIZE")
    out: dict[str, Any] = {"path": KSM_DIR, "available": os.path.isdir(KSM_DIR), "run": None,
                 "state": "absent", "figures": {}, "saved_bytes": 0, "can_start": False,
                 "hypervisor": _under_hypervisor(), "can": CAN, "cannot": CANNOT,
                 "instead": INSTEAD}
    # the flat keys `shmkit doctor --json` has always had
    out.update(pages_shared=None, pages_sharing=None)
    if out["available"]:
        try:
            names = sorted(os.listdir(KSM_DIR))
        except OSError:
            names = []
        for n in names:
            v = _int(read_text(os.path.join(KSM_DIR, n)))
            if v is not None:
                out["figures"][n] = v
        out["run"] = out["figures"].get("run")
        out["state"] = RUN_STATES.get(out["run"], "absent" if out["run"] is None
                                      else f"run={out['run']}")
        out["pages_shared"] = out["figures"].get("pages_shared")
        out["pages_sharing"] = out["figures"].get("pages_sharing")
        out["saved_bytes"] = (out["pages_sharing"] or 0) * page
        out["can_start"] = os.access(os.path.join(KSM_DIR, "run"), os.W_OK)
    out["here"] = _here(out)
    return out


def _here(r: dict[str, Any]) -> str:
    if not r["available"]:
        return ("this kernel has no KSM (CONFIG_KSM is off): nothing is merged, and "
                "madvise(MADV_MERGEABLE) fails with EINVAL")
    if r["state"] == "running":
        text = (f"ksmd is running: {r['pages_sharing'] or 0} pages currently share "
                f"{r['pages_shared'] or 0} merged pages (all of them private memory)")
    elif r["state"] == "unmerging":
        text = "ksmd is unmerging everything it merged and will then stop"
    else:
        text = ("ksmd is off: nothing new is merged"
                + ("; pages_shared/pages_sharing are as ksmd left them when it stopped (they "
                   "are not updated while it is off)" if r["pages_sharing"] else "")
                + "; " + ("this user may start it (echo 1 > /sys/kernel/mm/ksm/run)"
                          if r["can_start"] else "only root can start it"))
    if r["hypervisor"]:
        text += ("; this is a virtual machine: KSM here merges within this guest only (the "
                 "host may merge guests' memory with its own KSM, invisibly from here)")
    return text
