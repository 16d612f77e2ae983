"""Validation of the JSON document ``--json`` writes (shape, not speed).

``python -m benchmarks.schema FILE [--strict]`` prints what it checked and exits 1 when
the document is malformed; with ``--strict`` also when a shmkit row failed (status
"error": a crash or a wrong result in shmkit is a bug, whereas an anchor's failure is
reported and tolerated).  CI and tests/test_bench.py use it.
"""

from __future__ import annotations

import json
import math
import sys

from .harness import ERROR, KINDS, MISSING, NOT_YET, OK, SHMKIT, SKIPPED

SCHEMA = "shmkit-bench/1"
STATUSES = (OK, MISSING, NOT_YET, SKIPPED, ERROR)
MACHINE_KEYS = ("cpu_model", "cores", "kernel", "python")


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate(doc) -> list[str]:
    """Every problem found in ``doc`` (an empty list when it is well formed)."""
    p: list[str] = []
    if not isinstance(doc, dict):
        return ["document is not a JSON object"]
    if doc.get("schema") != SCHEMA:
        p.append(f"schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("command", "argv", "options", "machine", "versions", "scenarios", "summary",
                "started_at", "duration_s"):
        if key not in doc:
            p.append(f"missing top-level key {key!r}")
    machine = doc.get("machine", {})
    for key in MACHINE_KEYS:
        if not machine.get(key):
            p.append(f"machine.{key} is missing or empty")
    versions = doc.get("versions", {})
    if not isinstance(versions, dict) or "python" not in versions:
        p.append("versions must map package -> version (with python)")
    scenarios = doc.get("scenarios", [])
    if not isinstance(scenarios, list) or not scenarios:
        p.append("no scenarios")
        return p
    for s in scenarios:
        where = f"scenario {s.get('name')!r}"
        metrics = s.get("metrics") or []
        if not metrics:
            p.append(f"{where}: no metrics")
        names = [m.get("name") for m in metrics]
        for m in metrics:
            if not m.get("unit") or not isinstance(m.get("higher_is_better"), bool):
                p.append(f"{where}: metric {m.get('name')!r} lacks unit or direction")
        rows = s.get("rows") or []
        if not rows:
            p.append(f"{where}: no rows")
        for r in rows:
            rw = f"{where} row {r.get('label')!r}"
            if r.get("kind") not in KINDS:
                p.append(f"{rw}: kind {r.get('kind')!r}")
            status = r.get("status")
            if status not in STATUSES:
                p.append(f"{rw}: status {status!r}")
            if status != OK:
                if not r.get("note"):
                    p.append(f"{rw}: status {status!r} without a note saying why")
                continue
            figures = r.get("figures") or {}
            if set(figures) != set(names):
                p.append(f"{rw}: figures {sorted(figures)} do not match metrics {sorted(names)}")
            for name, f in figures.items():
                vals = f.get("values") or []
                if not vals or not all(_is_num(v) for v in vals):
                    p.append(f"{rw}: {name}: values missing or not finite")
                    continue
                if not all(_is_num(f.get(k)) for k in ("median", "min", "max")):
                    p.append(f"{rw}: {name}: median/min/max missing")
                    continue
                if not f["min"] <= f["median"] <= f["max"]:
                    p.append(f"{rw}: {name}: min <= median <= max does not hold")
                if f["min"] != min(vals) or f["max"] != max(vals):
                    p.append(f"{rw}: {name}: min/max differ from the values")
            if not isinstance(r.get("n"), int) or r["n"] < 1:
                p.append(f"{rw}: n must be a positive int")
    if len(doc.get("summary", [])) != len(scenarios):
        p.append("summary must have one row per scenario")
    return p


def shmkit_errors(doc) -> list[str]:
    return [f"{s['name']}: {r['label']}: {r['note']}"
            for s in doc.get("scenarios", []) for r in s.get("rows", [])
            if r.get("kind") == SHMKIT and r.get("status") == ERROR]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    strict = "--strict" in argv
    paths = [a for a in argv if a != "--strict"]
    if len(paths) != 1:
        print("usage: python -m benchmarks.schema FILE.json [--strict]", file=sys.stderr)
        return 2
    try:
        with open(paths[0]) as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"{paths[0]}: cannot read JSON: {exc}", file=sys.stderr)
        return 1
    problems = validate(doc)
    rows = [r for s in doc.get("scenarios", []) for r in s.get("rows", [])]
    counts = {st: sum(1 for r in rows if r.get("status") == st) for st in STATUSES}
    print(f"{paths[0]}: {len(doc.get('scenarios', []))} scenarios, {len(rows)} rows: "
          + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    for r in rows:
        if r.get("status") == ERROR:
            print(f"  error: {r.get('kind')} {r.get('label')}: {r.get('note')}")
    errors = shmkit_errors(doc) if strict else []
    for prob in problems:
        print(f"  invalid: {prob}", file=sys.stderr)
    for e in errors:
        print(f"  shmkit failed: {e}", file=sys.stderr)
    return 1 if problems or errors else 0


if __name__ == "__main__":
    sys.exit(main())
