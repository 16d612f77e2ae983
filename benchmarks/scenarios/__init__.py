"""Every scenario, in the order BENCHMARKS.md lists them.

Each module has a ``scenarios()`` function returning its Scenario objects; to add a
scenario, add it to its module (or add a module here).
"""

from __future__ import annotations

import importlib

MODULES = ("queue", "pingpong", "lock", "counter", "dict", "handoff", "board", "zone", "redis", "aio")


def all_scenarios():
    out = []
    for mod in MODULES:
        out.extend(importlib.import_module(f".{mod}", __name__).scenarios())
    names = [s.name for s in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuntimeError(f"duplicate scenario names: {sorted(dupes)}")
    return out
