"""The measuring machinery.

A *scenario* (say "queue throughput, 64 B messages") has several *cases*: one per
implementation measured (multiprocessing.Queue, faster-fifo, shmkit.Queue, ...).  A case
names the *roles* it needs (a producer and a consumer, an initiator and a responder, one
or two workers) as module-level functions; each role runs in its own process started
with the ``spawn`` method, so both sides of every IPC measurement are real, freshly
started interpreters, and the parent only orchestrates.

A role function looks like this::

    def producer(ctl, queue, size):
        payload = b"x" * size          # set-up, not timed
        put = queue.put
        for n in ctl.reps():           # one iteration per run the parent asks for
            t0 = time.perf_counter()
            for _ in range(n):
                put(payload)
            ctl.report(t0=t0)          # whatever the case's compute() needs

``ctl.reps()`` waits for the parent's order, then lines all roles of the case up on a
barrier so they start together.  The parent first *calibrates* (runs of growing size
until one takes a good part of the target time; these runs are the warm-up), does one
more warm-up run at the final size, then the measured repetitions.  Times come from
``time.perf_counter()`` (CLOCK_MONOTONIC, comparable across processes on Linux).

Nothing is dropped silently: a case whose anchor package is missing, whose shmkit part
is not built yet, that cannot run here, or that failed, is reported with its status and
a note, in the tables and in the JSON.
"""

from __future__ import annotations

import importlib
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from typing import Any, Callable

# statuses of a case, the case kinds and Unavailable live in .outcome (redis_server needs
# them too, and the harness imports redis_server): re-exported here, where scenarios look
from .outcome import (ANCHOR, ERROR, KINDS, MISSING, NOT_YET, OK, REFERENCE, SHMKIT,  # noqa: F401
                      SKIPPED, Unavailable)


class CaseFailed(Exception):
    """A case ran and failed; the message goes into the report."""


# -- availability helpers used by the scenario modules ----------------------------------

def need_module(module: str, pip_name: str | None = None):
    """Import an anchor's module, or raise Unavailable(MISSING) naming the package."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(MISSING, f"pip install {pip_name or module} ({exc})") from None


def need_shmkit(name: str, *methods: str):
    """``shmkit.<name>`` (e.g. "Queue"), checking that it has ``methods``; raises
    Unavailable(NOT_YET) when the primitive or one of the methods does not exist yet."""
    try:
        import shmkit
    except ImportError as exc:  # the extension is not built
        raise Unavailable(NOT_YET, f"import shmkit failed: {exc}") from None
    try:
        obj = getattr(shmkit, name)
    except (ImportError, AttributeError) as exc:
        raise Unavailable(NOT_YET, f"shmkit.{name} is not there yet ({exc})") from None
    missing = [m for m in methods if not hasattr(obj, m)]
    if missing:
        raise Unavailable(NOT_YET, f"shmkit.{name} has no {', '.join(missing)} yet")
    return obj


def shmkit_call(what: str, fn, *args, **kw):
    """Call a shmkit constructor whose exact signature may still change while the
    primitives are being written: an ImportError/AttributeError, or a TypeError about
    arguments, becomes Unavailable(NOT_YET) with the message; anything else propagates."""
    try:
        return fn(*args, **kw)
    except (ImportError, AttributeError, NotImplementedError) as exc:
        raise Unavailable(NOT_YET, f"{what}: {type(exc).__name__}: {exc}") from None
    except TypeError as exc:
        if "argument" in str(exc):
            raise Unavailable(NOT_YET, f"{what}: API differs: {exc}") from None
        raise


# -- definitions ------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """One figure a scenario reports.  ``unit`` is what the numbers are in."""

    name: str
    unit: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class Role:
    """A function run in a spawned process: ``fn(ctl, *args)``."""

    fn: Callable
    args: tuple = ()


@dataclass
class Case:
    """One implementation measured in a scenario.

    ``setup(env)`` runs in the parent, creates what the roles share (queues, segments,
    names), registers its clean-up with ``env.defer`` and returns the list of Roles; it
    raises Unavailable when the case cannot run.  ``compute(n, reports)`` turns one run's
    reports (one dict per role, in role order) into ``{metric name: value}``.
    ``verify(total_n, reports)`` may raise CaseFailed after each run (e.g. a counter
    that lost increments).  ``n`` is the size of one run (messages, round trips,
    operations): calibrated from ``n0`` up to ``n_max`` unless ``fixed_n`` is set.
    """

    label: str
    kind: str
    setup: Callable[["Env"], list]
    compute: Callable[[int, list], dict]
    n0: int = 1000
    n_max: int = 10_000_000
    fixed_n: int | None = None
    verify: Callable[[int, list], None] | None = None
    note: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"case kind must be one of {KINDS}, not {self.kind!r}")


@dataclass(frozen=True)
class Bar:
    """The aim for a scenario (from BENCHMARKS.md).  ``check(result, results)`` returns
    True/False when the bar can be judged from this run, None when it cannot."""

    text: str
    check: Callable[["ScenarioResult", dict], bool | None] | None = None


@dataclass
class Scenario:
    name: str
    group: str
    title: str
    description: str
    metrics: list[Metric]
    cases: Callable[["Options"], list[Case]]
    bar: Bar | None = None
    needs: tuple[str, ...] = ()        # e.g. ("numpy",): informational

    @property
    def primary(self) -> Metric:
        return self.metrics[0]


@dataclass
class Options:
    quick: bool = False
    reps: int = 5
    target: float = 0.25        # seconds one measured run should take
    timeout: float = 60.0       # seconds one run may take before the case is failed
    verbose: bool = False


# -- results ----------------------------------------------------------------------------

@dataclass
class Figure:
    median: float
    min: float
    max: float
    values: list[float]

    @classmethod
    def of(cls, values: list[float]) -> "Figure":
        return cls(statistics.median(values), min(values), max(values), list(values))


@dataclass
class CaseResult:
    label: str
    kind: str
    status: str = OK
    note: str = ""
    n: int | None = None
    figures: dict[str, Figure] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)   # shmkit rows: vs best anchor
    seconds: float = 0.0                                      # wall time spent on the case


@dataclass
class ScenarioResult:
    scenario: Scenario
    rows: list[CaseResult] = field(default_factory=list)
    best_anchor: dict[str, CaseResult] = field(default_factory=dict)
    bar_met: bool | None = None

    def best(self, metric: Metric, kind: str) -> CaseResult | None:
        rows = [r for r in self.rows if r.kind == kind and r.status == OK and metric.name in r.figures]
        if not rows:
            return None
        key = lambda r: r.figures[metric.name].median  # noqa: E731
        return max(rows, key=key) if metric.higher_is_better else min(rows, key=key)

    def row(self, label: str) -> CaseResult | None:
        for r in self.rows:
            if r.label == label:
                return r
        return None


def ratio(metric: Metric, value: float, anchor: float) -> float:
    """How many times better ``value`` is than ``anchor`` (> 1: better), whichever way
    the metric points."""
    if value <= 0 or anchor <= 0 or math.isnan(value) or math.isnan(anchor):
        return float("nan")
    return value / anchor if metric.higher_is_better else anchor / value


# -- what earlier runs left behind ------------------------------------------------------

def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_segments() -> list[str]:
    """Remove what a benchmark killed with SIGKILL left in /dev/shm (its clean-up never
    ran): segments named ``shmkit-bench-<pid>-*`` whose benchmark process no longer
    exists and that no process has mapped or holds open.  A live pid (another run, or an
    unrelated process that got the number) keeps its segments: when in doubt, leave it.
    Returns the names removed."""
    import re

    from shmkit import inventory

    removed = []
    for info in inventory.list_segments("shmkit-bench-*", sysv=False):
        m = re.match(r"shmkit-bench-(\d+)-", info.name or "")
        if not m or _process_exists(int(m.group(1))) or info.nattch or info.handles:
            continue
        try:
            inventory.remove_segment(info)
        except OSError:
            continue  # gone meanwhile, or replaced: not ours to judge
        removed.append(info.name)
    return removed


# -- the environment handed to setup() --------------------------------------------------

class Env:
    """What a case's set-up needs: the spawn context, unique names, a temporary
    directory, shmkit zones that are removed afterwards, the Redis server."""

    def __init__(self, options: Options):
        import multiprocessing

        self.options = options
        self.quick = options.quick
        self.ctx = multiprocessing.get_context("spawn")
        self.tmpdir = tempfile.mkdtemp(prefix="shmkit-bench-")
        self._cleanups: list[Callable[[], None]] = []
        self._redis = None
        self.prefix = f"shmkit-bench-{os.getpid()}"

    def unique(self, what: str = "obj") -> str:
        return f"{self.prefix}-{what}-{uuid.uuid4().hex[:8]}"

    def defer(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` when the current case is over (also when it failed)."""
        self._cleanups.append(fn)

    def end_case(self) -> list[str]:
        problems = []
        while self._cleanups:
            fn = self._cleanups.pop()
            try:
                fn()
            except Exception as exc:  # clean-up must go on
                problems.append(f"clean-up {getattr(fn, '__name__', fn)}: {exc}")
        return problems

    def zone(self, size: int, max_size: int | None = None):
        """A fresh shmkit zone, closed and unlinked when the case ends."""
        Zone = need_shmkit("Zone")
        name = self.unique("zone")
        z = Zone(name, size, max_size=max_size)

        def drop_zone():
            try:
                z.close()
            finally:
                try:
                    z.unlink()
                except FileNotFoundError:
                    pass

        self.defer(drop_zone)
        return z

    def redis_port(self) -> int:
        """The port of a private redis-server (started on first use, stopped by close())."""
        from .redis_server import RedisServer

        if self._redis is None:
            self._redis = RedisServer.start(self.tmpdir)
        if isinstance(self._redis, Unavailable):
            raise self._redis
        return self._redis.port

    def redis_version(self) -> str | None:
        return None if self._redis is None or isinstance(self._redis, Unavailable) else self._redis.version

    def close(self) -> None:
        self.end_case()
        if self._redis is not None and not isinstance(self._redis, Unavailable):
            self._redis.stop()
        import shutil

        shutil.rmtree(self.tmpdir, ignore_errors=True)


# -- worker side ------------------------------------------------------------------------

class Control:
    """The role's end of the conversation with the parent."""

    def __init__(self, conn, barrier):
        self._conn = conn
        self._barrier = barrier
        self._reported = True

    def reps(self):
        """Yield the size of each run the parent asks for, all roles starting together."""
        self._conn.send(("ready", None))
        while True:
            msg = self._conn.recv()
            if msg[0] == "stop":
                return
            n = msg[1]
            if self._barrier is not None:
                self._barrier.wait(timeout=120)
            self._reported = False
            yield n
            if not self._reported:
                self._conn.send(("report", {}))

    def report(self, **data: Any) -> None:
        self._reported = True
        self._conn.send(("report", data))


def _worker_main(conn, barrier, fn, args):
    try:
        fn(Control(conn, barrier), *args)
    except BaseException as exc:  # the parent reports it; never let a worker hang
        try:
            conn.send(("error", (type(exc).__name__, str(exc), traceback.format_exc())))
        except Exception:
            pass
        raise SystemExit(1)
    finally:
        try:
            conn.close()
        except Exception:
            pass


class WorkerError(Exception):
    def __init__(self, exc_type: str, message: str, tb: str = ""):
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message
        self.tb = tb


class Workers:
    """The spawned processes of one case."""

    def __init__(self, ctx, roles: list[Role], tag: str):
        self.procs = []
        self.conns = []
        # kept referenced: a spawned child opens the barrier's semaphores by name, and they
        # are unlinked when the parent's object is collected
        self.barrier = barrier = ctx.Barrier(len(roles)) if len(roles) > 1 else None
        self.roles = roles
        try:
            for i, role in enumerate(roles):
                parent_end, child_end = ctx.Pipe()
                p = ctx.Process(target=_worker_main, args=(child_end, barrier, role.fn, role.args),
                                name=f"bench-{tag}-{i}", daemon=True)
                p.start()
                child_end.close()
                self.procs.append(p)
                self.conns.append(parent_end)
        except BaseException:
            self.stop()
            raise

    def collect(self, kind: str, timeout: float) -> list:
        """One message of ``kind`` from every worker, in role order."""
        deadline = time.monotonic() + timeout
        got: dict[int, Any] = {}
        while len(got) < len(self.conns):
            waiting = [i for i in range(len(self.conns)) if i not in got]
            left = deadline - time.monotonic()
            if left <= 0:
                raise CaseFailed(f"timed out after {timeout:.0f} s waiting for "
                                 f"{', '.join(self.procs[i].name for i in waiting)}")
            objs = [self.conns[i] for i in waiting] + [self.procs[i].sentinel for i in waiting]
            ready = mp_connection.wait(objs, timeout=left)
            for i in waiting:
                conn = self.conns[i]
                if conn in ready or conn.poll():
                    try:
                        tag, payload = conn.recv()
                    except EOFError:
                        raise CaseFailed(f"{self.procs[i].name} died "
                                         f"(exit code {self._exitcode(i)})") from None
                    if tag == "error":
                        raise WorkerError(*payload)
                    if tag != kind:
                        raise CaseFailed(f"{self.procs[i].name} sent {tag!r}, expected {kind!r}")
                    got[i] = payload
                elif self.procs[i].sentinel in ready:
                    # dead: drain a last message (its error) if there is one
                    if conn.poll(0.2):
                        continue
                    raise CaseFailed(f"{self.procs[i].name} died (exit code {self._exitcode(i)})")
        return [got[i] for i in range(len(self.conns))]

    def _exitcode(self, i):
        self.procs[i].join(0.5)
        return self.procs[i].exitcode

    def run(self, n: int, timeout: float) -> tuple[list, float]:
        t0 = time.perf_counter()
        for c in self.conns:
            c.send(("run", n))
        reports = self.collect("report", timeout)
        return reports, time.perf_counter() - t0

    def stop(self) -> None:
        for c in self.conns:
            try:
                c.send(("stop", None))
            except Exception:
                pass
        deadline = time.monotonic() + 5
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        for c in self.conns:
            c.close()
        self.procs, self.conns = [], []


# -- running ----------------------------------------------------------------------------

def _calibrate(workers: Workers, case: Case, opts: Options, verify) -> int:
    """Runs of growing size until one takes at least a third of the target time (these
    are the warm-up); returns the size that should take about the target time."""
    if case.fixed_n is not None:
        return case.fixed_n
    n = max(1, min(case.n0, case.n_max))
    while True:
        _, wall = verify(n, *workers.run(n, opts.timeout))
        if wall >= opts.target / 3 or n >= case.n_max:
            break
        grow = opts.target / max(wall, 1e-6)
        n = min(case.n_max, max(n * 2, int(n * min(grow, 50))))
    n = int(n * opts.target / max(wall, 1e-6))
    return max(1, min(case.n_max, n))


def run_case(case: Case, scenario: Scenario, env: Env, log=None) -> CaseResult:
    opts = env.options
    result = CaseResult(case.label, case.kind, note=case.note)
    started = time.perf_counter()
    workers = None
    total = [0]

    def verify(n, reports, wall):
        total[0] += n
        if case.verify is not None:
            case.verify(total[0], reports)
        return reports, wall

    try:
        roles = case.setup(env)
        workers = Workers(env.ctx, roles, scenario.name)
        workers.collect("ready", opts.timeout)
        n = _calibrate(workers, case, opts, verify)
        verify(n, *workers.run(n, opts.timeout))  # warm-up at the final size
        samples: dict[str, list[float]] = {}
        for _ in range(opts.reps):
            reports, wall = verify(n, *workers.run(n, opts.timeout))
            for name, value in case.compute(n, reports).items():
                samples.setdefault(name, []).append(float(value))
        result.n = n
        result.figures = {name: Figure.of(vals) for name, vals in samples.items()}
    except Unavailable as u:
        result.status, result.note = u.status, u.note
    except WorkerError as w:
        if case.kind == SHMKIT and (w.exc_type in ("ImportError", "ModuleNotFoundError",
                                                    "AttributeError", "NotImplementedError")
                                    or (w.exc_type == "TypeError" and "argument" in w.message)):
            result.status, result.note = NOT_YET, f"{w.exc_type}: {w.message}"
        elif w.exc_type == "Unavailable":
            result.status, result.note = SKIPPED, w.message
        else:
            result.status, result.note = ERROR, f"{w.exc_type}: {w.message}"
        if opts.verbose and w.tb:
            print(w.tb, file=sys.stderr)
    except CaseFailed as exc:
        result.status, result.note = ERROR, str(exc)
    except Exception as exc:
        result.status, result.note = ERROR, f"{type(exc).__name__}: {exc}"
        if opts.verbose:
            traceback.print_exc()
    finally:
        if workers is not None:
            workers.stop()
        problems = env.end_case()
        if problems and result.status == OK:
            result.note = "; ".join(problems)
    result.seconds = time.perf_counter() - started
    return result


def finish(result: ScenarioResult, results: dict) -> None:
    """Best anchor per metric, ratios of the shmkit rows, the bar."""
    sc = result.scenario
    for metric in sc.metrics:
        best = result.best(metric, ANCHOR)
        if best is None:
            continue
        result.best_anchor[metric.name] = best
        for row in result.rows:
            if row.kind != ANCHOR and row.status == OK and metric.name in row.figures:
                row.ratios[metric.name] = ratio(metric, row.figures[metric.name].median,
                                                best.figures[metric.name].median)
    if sc.bar is not None and sc.bar.check is not None:
        try:
            result.bar_met = sc.bar.check(result, results)
        except Exception:
            result.bar_met = None


# -- helpers for compute() --------------------------------------------------------------

def span(reports: list, start: str = "t0", end: str = "t1") -> float:
    """From the earliest start to the latest end reported by any role."""
    starts = [r[start] for r in reports if start in r]
    ends = [r[end] for r in reports if end in r]
    return max(ends) - min(starts)


def rate(count: float, reports: list, start: str = "t0", end: str = "t1") -> float:
    return count / max(span(reports, start, end), 1e-12)


# -- bars -------------------------------------------------------------------------------

def bar_at_least(value: float, text: str, metric: str | None = None, label: str | None = None) -> Bar:
    """shmkit's best figure (or the row ``label``'s) >= value (<= for lower-is-better
    metrics)."""

    def check(res: ScenarioResult, _all):
        m = next((x for x in res.scenario.metrics if x.name == metric), res.scenario.primary)
        best = res.best(m, SHMKIT) if label is None else res.row(label)
        if best is None or best.status != OK or m.name not in best.figures:
            return None
        v = best.figures[m.name].median
        return v >= value if m.higher_is_better else v <= value

    return Bar(text, check)


def bar_ratio(factor: float, text: str, label: str | None = None) -> Bar:
    """shmkit's best figure >= factor x the best anchor (or the row ``label``)."""

    def check(res: ScenarioResult, _all):
        m = res.scenario.primary
        best = res.best(m, SHMKIT)
        other = res.row(label) if label else res.best(m, ANCHOR)
        if best is None or other is None or other.status != OK or m.name not in other.figures:
            return None
        return ratio(m, best.figures[m.name].median, other.figures[m.name].median) >= factor

    return Bar(text, check)


def bar_scales(one_process: str, text: str) -> Bar:
    """shmkit's figure with 2 processes >= its figure with 1 (same run)."""

    def check(res: ScenarioResult, results: dict):
        other = results.get(one_process)
        if other is None:
            return None
        m = res.scenario.primary
        a, b = res.best(m, SHMKIT), other.best(m, SHMKIT)
        if a is None or b is None:
            return None
        return a.figures[m.name].median >= b.figures[m.name].median

    return Bar(text, check)
