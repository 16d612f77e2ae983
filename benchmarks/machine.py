"""What the figures were measured on: the machine, the system, every version involved."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata

#: distribution name -> module name, for every optional anchor package (the [bench] extra)
ANCHOR_PACKAGES = {
    "faster-fifo": "faster_fifo",
    "posix_ipc": "posix_ipc",
    "UltraDict": "UltraDict",
    "atomics": "atomics",
    "lmdb": "lmdb",
    "redis": "redis",
    "numpy": "numpy",
    "matplotlib": "matplotlib",
}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_bytes() -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def versions() -> dict[str, str | None]:
    """Version of shmkit, of Python, and of every anchor package (None when missing)."""
    out: dict[str, str | None] = {}
    try:
        import shmkit

        out["shmkit"] = shmkit.__version__
    except ImportError:
        out["shmkit"] = None
    out["shmkit_git"] = git_commit()
    out["python"] = platform.python_version()
    for dist in ANCHOR_PACKAGES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def git_commit() -> str | None:
    """The commit of the source tree the benchmark runs from (with '+dirty' when it has
    uncommitted changes), or None outside a git checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def describe() -> dict:
    uname = platform.uname()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory_bytes": memory_bytes(),
        "kernel": f"{uname.system} {uname.release}",
        "kernel_version": uname.version,
        "arch": uname.machine,
        "os": _os_name(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "loadavg_start": loadavg(),
    }


def _os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()
