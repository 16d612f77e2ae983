"""One configuration, loaded once, read by every worker: shmkit.SharedConfig.

    python examples/shared_config.py

A supervisor parses the configuration file once and publishes it in shared memory;
every worker reads the same immutable snapshot without parsing anything, and a reload
(what a SIGHUP handler would do) reaches all of them at once:

- the loader (this process) writes a TOML file, ``cfg.load(path)``, and *deletes the
  file* - so the workers provably never parse it themselves;
- four workers (spawned processes) attach by name, read the snapshot, report a digest
  of it, then block in ``cfg.wait_for_change()``;
- the loader writes a changed file and ``cfg.reload()``s it: every worker wakes with
  version 2 and reports again;
- snapshots are deep-frozen: a worker that tries to change one gets a TypeError.

Exits 0 only if every worker saw exactly what the loader parsed, both versions, loaded by
the loader's pid, and could not modify it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sys
import tempfile
import types
from typing import Any

import shmkit

if sys.version_info >= (3, 11):
    import tomllib
else:                                                   # 3.10: the same data as JSON
    tomllib = None

WORKERS = 4
CONFIG_V1 = """
[server]
listen = "127.0.0.1:8080"
workers = 4
timeout = 2.5

[database]
url = "postgresql://db.internal/app"
pool = { min = 2, max = 16 }

[features]
enabled = ["search", "thumbnails", "rate-limit"]
"""
CHANGE = ('timeout = 2.5', 'timeout = 5.0')             # what the reload changes


def plain(value: Any) -> Any:
    """A snapshot (mapping proxies, tuples) as plain JSON-able data."""
    if isinstance(value, (dict, types.MappingProxyType)):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def digest(config: Any) -> str:
    return hashlib.sha256(json.dumps(plain(config), sort_keys=True).encode()).hexdigest()[:16]


def worker(zone: shmkit.Zone, reports: shmkit.Queue, index: int) -> None:
    cfg = shmkit.SharedConfig("app", zone=zone)         # attach by name
    snap, version = cfg.read()
    try:
        snap["server"]["workers"] = 1                   # try to change what everyone reads
        frozen = False
    except TypeError:
        frozen = True
    info = cfg.info()
    reports.put((index, version, digest(snap), info.loader_pid, snap["server"]["timeout"],
                 frozen, os.path.exists(info.source or "")))
    snap, version = cfg.wait_for_change(version, timeout=60)   # sleeps until the reload
    reports.put((index, version, digest(snap), cfg.info().loader_pid,
                 snap["server"]["timeout"], True, False))
    cfg.close()


def write_config(path: str, text: str) -> dict[str, Any]:
    if tomllib is not None:
        with open(path, "w") as f:
            f.write(text)
        with open(path, "rb") as f:
            return tomllib.load(f)
    data = {"server": {"listen": "127.0.0.1:8080", "workers": 4,
                       "timeout": 5.0 if CHANGE[1] in text else 2.5},
            "database": {"url": "postgresql://db.internal/app", "pool": {"min": 2, "max": 16}},
            "features": {"enabled": ["search", "thumbnails", "rate-limit"]}}
    with open(path, "w") as f:
        json.dump(data, f)
    return data


def main() -> int:
    zone = shmkit.Zone(f"shared-config-{os.getpid()}", 4 << 20)
    ctx = mp.get_context("spawn")
    procs, problems = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "app.toml" if tomllib else "app.json")
            cfg = zone.config("app")
            parsed = write_config(path, CONFIG_V1)
            v1 = cfg.load(path)
            os.unlink(path)                             # nobody else can parse it now
            print(f"loader {os.getpid()}: parsed {os.path.basename(path)} once, published "
                  f"version {v1} (digest {digest(parsed)}), deleted the file")
            reports = zone.queue("reports", 1 << 16, mode="objects")
            procs = [ctx.Process(target=worker, args=(zone, reports, i)) for i in range(WORKERS)]
            for p in procs:
                p.start()
            first = sorted(reports.get(timeout=60) for _ in range(WORKERS))
            for r in first:
                print(f"  worker {r[0]}: version {r[1]}, digest {r[2]}, loaded by pid {r[3]}, "
                      f"timeout {r[4]}, snapshot frozen: {r[5]}, file there: {r[6]}")
            want = [(i, v1, digest(parsed), os.getpid(), 2.5, True, False)
                    for i in range(WORKERS)]
            if first != want:
                problems.append(f"version {v1} was not seen exactly by every worker")

            changed = write_config(path, CONFIG_V1.replace(*CHANGE))
            v2 = cfg.reload()                           # what a SIGHUP handler would do
            os.unlink(path)
            print(f"loader: reloaded: version {v2} (digest {digest(changed)}), timeout "
                  f"{cfg['server']['timeout']}")
            second = sorted(reports.get(timeout=60) for _ in range(WORKERS))
            for r in second:
                print(f"  worker {r[0]}: woke with version {r[1]}, digest {r[2]}, "
                      f"timeout {r[4]}")
            want = [(i, v2, digest(changed), os.getpid(), 5.0, True, False)
                    for i in range(WORKERS)]
            if second != want or v2 == v1:
                problems.append(f"version {v2} was not seen exactly by every worker")
            for p in procs:
                p.join(30)
                if p.exitcode != 0:
                    problems.append(f"worker {p.pid} exited with {p.exitcode}")
            st = cfg.statistics()
            print(f"config board: version {st.version}, {st.buffers} buffers")
            cfg.close()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
        zone.close()
        zone.unlink()
    if problems:
        for why in problems:
            print(f"FAILED: {why}", file=sys.stderr)
        return 1
    print(f"OK: the configuration was parsed once by the loader; {WORKERS} workers read the "
          "same frozen snapshot, and all of them woke to the reload with the new version")
    return 0


if __name__ == "__main__":
    sys.exit(main())
