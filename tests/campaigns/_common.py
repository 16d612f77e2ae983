"""What every campaign shares: names it may clean up, a result table, JSON.

Every POSIX name a campaign creates starts with ``run_prefix()`` (``shmkit-camp-<pid>``)
and every SysV key it uses is one it tracks, so that ``Cleanup`` removes exactly what
the run made - also when it fails - and never anything else on a shared machine.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field

SHM_DIR = "/dev/shm"


def run_prefix() -> str:
    return f"shmkit-camp-{os.getpid()}"


def registry_path() -> str:
    return os.environ.get("SHMKIT_REGISTRY") or os.path.join(SHM_DIR, ".shmkit")


def sysv_rows() -> list[dict]:
    try:
        with open("/proc/sysvipc/shm") as f:
            header = f.readline().split()
            return [dict(zip(header, line.split())) for line in f if line.strip()]
    except OSError:
        return []


def sysv_ids_with_key(key: int) -> list[int]:
    k = key - (1 << 32) if key >= (1 << 31) else key
    return [int(r["shmid"]) for r in sysv_rows() if int(r["key"]) == k]


class Cleanup:
    """Removes, at the end of a run, every /dev/shm name starting with the run's prefix,
    every SysV segment with a key it handed out (and their registry records), and the
    files it was told about."""

    def __init__(self, prefix: str | None = None):
        self.prefix = prefix or run_prefix()
        self.keys: list[int] = []
        self.paths: list[str] = []
        self._n = 0

    def name(self, what: str = "seg") -> str:
        self._n += 1
        return f"{self.prefix}-{what}-{self._n}"

    def sysv_key(self, rnd: random.Random) -> int:
        while True:
            k = rnd.randint(0x10000000, 0x7ffffff0)
            if not sysv_ids_with_key(k):
                self.keys.append(k)
                return k

    def shm_names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(self.prefix))
        except OSError:
            return []

    def sysv_left(self) -> list[int]:
        return [i for k in self.keys for i in sysv_ids_with_key(k)]

    def records_left(self) -> list[str]:
        ids = {str(i) for i in self.sysv_left()}
        try:
            return [n for n in os.listdir(registry_path())
                    if n.startswith("sysv-") and n.split("-")[1] in ids]
        except OSError:
            return []

    def run(self) -> dict:
        """Remove what is left; returns what was found (the leftovers of the run)."""
        left = {"shm": self.shm_names(), "sysv": self.sysv_left()}
        for n in left["shm"]:
            p = os.path.join(SHM_DIR, n)
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    os.rmdir(p)
                else:
                    os.unlink(p)
            except OSError:
                pass
        for shmid in left["sysv"]:
            subprocess.run(["ipcrm", "-m", str(shmid)], capture_output=True)
            try:
                for rec in os.listdir(registry_path()):
                    if rec.startswith(f"sysv-{shmid}-"):
                        os.unlink(os.path.join(registry_path(), rec))
            except OSError:
                pass
        for p in self.paths:
            try:
                os.unlink(p)
            except OSError:
                pass
        return left


@dataclass
class Report:
    """What a campaign found: one row per kind of trial, findings, and the figures."""

    campaign: str
    seed: int
    seconds: float
    rows: list[dict] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)   # what must not happen
    notes: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict:
        return {"campaign": self.campaign, "seed": self.seed, "seconds": self.seconds,
                "elapsed": round(time.time() - self.started, 2), "ok": self.ok,
                "rows": self.rows, "findings": self.findings, "figures": self.figures,
                "notes": self.notes, "machine": machine()}

    def write_json(self, path: str | None) -> None:
        if path:
            with open(path, "w") as f:
                json.dump(self.as_dict(), f, indent=2, default=str)
                f.write("\n")

    def print_table(self, out=sys.stdout) -> None:
        d = self.as_dict()
        out.write(f"\n{self.campaign}: seed {self.seed}, {d['elapsed']:.1f} s\n")
        if self.rows:
            cols = []
            for r in self.rows:
                for k in r:
                    if k not in cols:
                        cols.append(k)
            cells = [[_cell(r.get(c, "")) for c in cols] for r in self.rows]
            widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
            out.write("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip() + "\n")
            for x in cells:
                out.write("  ".join(v.ljust(w) for v, w in zip(x, widths)).rstrip() + "\n")
        for k, v in self.figures.items():
            out.write(f"  {k}: {_cell(v)}\n")
        for n in self.notes:
            out.write(f"  note: {n}\n")
        if self.findings:
            out.write(f"  FINDINGS ({len(self.findings)}):\n")
            for f in self.findings[:30]:
                out.write(f"    {json.dumps(f, default=str)[:400]}\n")
        else:
            out.write("  no findings\n")
        out.flush()


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return " ".join(f"{k}={_cell(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ",".join(_cell(x) for x in v)
    return str(v)


def machine() -> dict:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpus": os.cpu_count(), "load": load, "kernel": platform.release(),
            "python": platform.python_version(),
            "sanitizer": bool(os.environ.get("LD_PRELOAD", "").count("asan"))}


def deadline_after(seconds: float) -> float:
    return time.monotonic() + seconds
