"""``shmkit bench`` / ``python -m benchmarks``: run the scenarios, print the tables.

Exit codes: 0 the run completed (cases that could not run are reported, not fatal);
1 at least one case failed (crash, timeout, wrong result: see its note; tables and JSON
are still written); 2 usage error; 130 interrupted (partial results are still written).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shlex
import signal
import sys
import time
from datetime import datetime, timezone

from . import machine, report
from .harness import (ANCHOR, ERROR, KINDS, Env, Options, ScenarioResult, finish, run_case,
                      sweep_stale_segments)
from .scenarios import all_scenarios

QUICK_TARGET = 0.02      # seconds per measured run with --quick
FULL_TARGET = 0.25


def parse_args(argv, prog):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmarks: shmkit side by side with what users would pick instead "
                    "(multiprocessing, faster-fifo, posix_ipc, UltraDict, lmdb, redis, ...). "
                    "Real spawned processes on both sides; median of N runs after a warm-up.",
        epilog="Anchors come from the optional extra: pip install -e '.[bench]'. "
               "Exit codes: 0 done, 1 a case failed, 2 usage, 130 interrupted.")
    p.add_argument("--quick", action="store_true",
                   help=f"short runs ({QUICK_TARGET * 1000:.0f} ms each): a smoke run of everything in under 2 minutes")
    p.add_argument("--only", action="append", default=[], metavar="SCENARIO",
                   help="run only these scenarios: names, groups (e.g. 'queue') or glob patterns; "
                        "repeatable or comma-separated")
    p.add_argument("--reps", type=int, default=5, metavar="N",
                   help="measured repetitions per case (default 5; the median is reported)")
    p.add_argument("--json", metavar="FILE", help="write every figure, the machine and the versions as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG chart (needs matplotlib)")
    p.add_argument("--markdown", metavar="FILE.md",
                   help="write the benchmarks page (docs/benchmarks.md) with this run's tables")
    p.add_argument("--note", default="", help="a remark printed at the top of the --markdown page")
    p.add_argument("--from-json", metavar="FILE",
                   help="measure nothing: print the tables and write --plot/--markdown from a previous --json")
    p.add_argument("--spread", action="append", default=[], metavar="FILE",
                   help="with --markdown: a saved run (--json) whose medians are shown beside this run's "
                        "in the page's 'Spread over runs' section; repeatable")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--target", type=float, metavar="SECONDS",
                   help=f"duration of one measured run (default {FULL_TARGET}, {QUICK_TARGET} with --quick)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="fail a case when one run takes longer than this (default 60, 30 with --quick)")
    p.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of failed cases")
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error("--reps must be at least 1")
    if args.target is not None and args.target <= 0:
        p.error("--target must be positive")
    return p, args


def select(scenarios, patterns):
    """Scenarios matching any pattern (name, group or glob); raises KeyError on a pattern
    that matches nothing."""
    pats = [x.strip() for pat in patterns for x in pat.split(",") if x.strip()]
    if not pats:
        return list(scenarios)
    chosen = []
    for pat in pats:
        hits = [s for s in scenarios
                if s.name == pat or s.group == pat or fnmatch.fnmatchcase(s.name, pat)]
        if not hits:
            raise KeyError(pat)
        chosen.extend(h for h in hits if h not in chosen)
    order = {s.name: i for i, s in enumerate(scenarios)}
    return sorted(chosen, key=lambda s: order[s.name])


def run_scenario(sc, env, out, results):
    table = report.TextTable(sc, out, env.options.reps)
    table.header()
    res = ScenarioResult(sc)
    cases = sc.cases(env.options)
    # anchors first, so that every later row can be printed with its ratio at once
    cases.sort(key=lambda c: KINDS.index(c.kind))
    for case in cases:
        r = run_case(case, sc, env)
        res.rows.append(r)
        best = {}
        for m in sc.metrics:
            b = res.best(m, ANCHOR)
            if b is not None:
                best[m.name] = b
        table.row(r, best)
    finish(res, results)
    table.footer(res)
    return res


def _command(prog, argv):
    return " ".join([prog] + [shlex.quote(a) for a in argv])


def _default_prog():
    base = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    # python -m benchmarks from a checkout, python -m shmkit._bench where it is installed
    return "shmkit bench" if base == "shmkit" else f"python -m {__package__ or 'benchmarks'}"


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None, prog=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or _default_prog()
    parser, args = parse_args(argv, prog)
    scenarios = all_scenarios()
    if args.list:
        width = max(len(s.name) for s in scenarios)
        try:
            for s in scenarios:
                print(f"{s.name:<{width}}  [{s.group}]  {s.title}")
            sys.stdout.flush()
        except BrokenPipeError:        # `shmkit bench --list | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    try:
        selected = select(scenarios, args.only)
    except KeyError as exc:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: no scenario matches {exc.args[0]!r}; --list shows them", file=sys.stderr)
        return 2

    if args.from_json:
        return _from_json(args, scenarios, selected)

    opts = Options(quick=args.quick, reps=args.reps,
                   target=args.target or (QUICK_TARGET if args.quick else FULL_TARGET),
                   timeout=args.timeout or (30.0 if args.quick else 60.0),
                   verbose=args.verbose)
    started = time.time()
    meta = {
        "command": _command(prog, argv),
        "prog": prog,
        "argv": argv,
        "options": {"quick": opts.quick, "reps": opts.reps, "target_s": opts.target,
                    "timeout_s": opts.timeout, "only": [s.name for s in selected]},
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "versions": machine.versions(),
    }
    out = sys.stdout
    m = meta["machine"]
    out.write(f"shmkit bench: {len(selected)} scenario(s), {opts.reps} runs each of ~{opts.target * 1000:.0f} ms; "
              f"{m['cpu_model']}, {m['cores_usable']}/{m['cores']} cores, {m['kernel']}, Python {m['python']}, "
              f"load {m['loadavg_start']}\n")
    missing = [k for k, v in meta["versions"].items() if v is None and k in machine.ANCHOR_PACKAGES]
    if missing:
        out.write(f"anchor packages missing (pip install -e '.[bench]'): {', '.join(missing)}\n")

    stale = sweep_stale_segments()
    if stale:
        out.write(f"removed {len(stale)} segment(s) left in /dev/shm by benchmark runs that were "
                  f"killed: {', '.join(stale)}\n")
    old_term = signal.signal(signal.SIGTERM, _sigterm)
    env = Env(opts)
    results: list[ScenarioResult] = []
    by_name: dict[str, ScenarioResult] = {}
    interrupted = False
    try:
        for sc in selected:
            res = run_scenario(sc, env, out, by_name)
            results.append(res)
            by_name[sc.name] = res
    except KeyboardInterrupt:
        interrupted = True
        out.write("\ninterrupted: writing what was measured so far\n")
    finally:
        redis_version = env.redis_version()
        env.close()
        signal.signal(signal.SIGTERM, old_term)

    if redis_version:
        meta["versions"]["redis-server"] = redis_version
    meta["machine"]["loadavg_end"] = machine.loadavg()
    meta["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta["duration_s"] = round(time.time() - started, 1)
    meta["interrupted"] = interrupted
    if results:
        report.print_summary(results, out)
    out.write(f"\ndone in {meta['duration_s']:.0f} s\n")
    doc = report.to_json(meta, results)
    _outputs(args, doc, results, scenarios)
    if interrupted:
        return 130
    failed = any(r.status == ERROR for res in results for r in res.rows)
    return 1 if failed else 0


def _outputs(args, doc, results, all_sc):
    if args.json:
        report.write_json(args.json, doc)
        print(f"wrote {args.json}")
    if args.plot:
        from .plot import plot

        try:
            plot(results, args.plot, doc)
            print(f"wrote {args.plot}")
        except ImportError as exc:
            print(f"no chart: {exc} (pip install matplotlib)", file=sys.stderr)
    if args.markdown:
        from .markdown import write_page

        spread = []
        for path in getattr(args, "spread", []):
            with open(path) as f:
                spread.append(json.load(f))
        write_page(args.markdown, doc, results, all_sc, plot_path=args.plot, note=args.note, spread=spread)
        print(f"wrote {args.markdown}")


def _from_json(args, scenarios, selected):
    with open(args.from_json) as f:
        doc = json.load(f)
    by_name = {s.name: s for s in scenarios}
    results = report.results_from_json(doc, by_name)
    wanted = {s.name for s in selected} if args.only else None
    if wanted is not None:
        results = [r for r in results if r.scenario.name in wanted]
        doc = dict(doc, scenarios=[s for s in doc["scenarios"] if s["name"] in wanted])
    reps = doc.get("options", {}).get("reps", args.reps)
    for res in results:
        t = report.TextTable(res.scenario, sys.stdout, reps)
        t.header()
        for r in res.rows:
            t.row(r, res.best_anchor)
        t.footer(res)
    report.print_summary(results)
    doc["summary"] = report.to_json({}, results)["summary"]
    _outputs(argparse.Namespace(json=None, plot=args.plot, markdown=args.markdown, note=args.note,
                                spread=args.spread),
             doc, results, scenarios)
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main"]
