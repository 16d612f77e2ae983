"""The benchmark harness (benchmarks/, `shmkit bench`): it runs, reports every case, and
writes well-formed JSON, charts and pages.  Speed is never asserted here."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `make sanitize` preloads libasan into every interpreter, the benchmark's too; the anchors'
# C++ extensions (matplotlib's) then abort in ASan's __cxa_throw interceptor.  These tests
# are about the harness, not shmkit's memory safety, which the rest of the suite checks.
pytestmark = pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                                reason="benchmarks are not run under a preloaded ASan runtime")

# every scenario BENCHMARKS.md lists must exist under these names
EXPECTED = {
    "queue_64B", "queue_64B_batched", "queue_1KiB", "queue_64KiB", "queue_1MiB",
    "pingpong_sleep", "pingpong_spin", "lock_1p", "lock_2p", "counter_1p", "counter_2p",
    "dict_get_1p", "dict_get_2p", "dict_set_1p", "dict_set_2p", "handoff_100MB",
    "board_1080p", "board_read_unchanged", "zone_alloc", "redis_backend",
}


def bench(*args, timeout=180, env=None, pre=""):
    """Run the harness in a fresh interpreter (``pre`` runs first, e.g. to hide a package)."""
    code = pre + "\nimport sys\nfrom benchmarks.__main__ import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish(proc, timeout=180):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"benchmark did not finish in {timeout}s:\n{out}\n{err}")
    return proc.returncode, out, err


def leftovers(pid):
    prefix = f"shmkit-bench-{pid}-"
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))


def test_list_names_every_scenario():
    rc, out, err = finish(bench("--list"), timeout=60)
    assert rc == 0, err
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert EXPECTED <= names, f"missing: {sorted(EXPECTED - names)}"


def test_unknown_scenario_is_a_usage_error():
    rc, out, err = finish(bench("--only", "no_such_scenario"), timeout=60)
    assert rc == 2
    assert "no_such_scenario" in err


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run of two small scenarios with posix_ipc hidden, shared by the tests
    below: zone_alloc (shmkit's allocator exists) and lock_1p (its posix_ipc anchor must
    then be reported as missing, not dropped)."""
    d = tmp_path_factory.mktemp("bench")
    out_json, out_png = d / "run.json", d / "run.png"
    args = ["--quick", "--reps", "3", "--only", "zone_alloc,lock_1p", "--json", str(out_json)]
    if importlib.util.find_spec("matplotlib") is not None:
        args += ["--plot", str(out_png)]
    else:
        out_png = None
    hide = "import sys\nsys.modules['posix_ipc'] = None  # as if not installed\n"
    proc = bench(*args, pre=hide)
    try:
        rc, out, err = finish(proc)
    finally:
        for name in leftovers(proc.pid):
            os.unlink(f"/dev/shm/{name}")
    return {"rc": rc, "out": out, "err": err, "json": out_json, "png": out_png, "pid": proc.pid,
            "dir": d}


def test_quick_run_writes_valid_json(quick_run):
    from benchmarks.schema import validate

    assert quick_run["rc"] == 0, quick_run["out"] + quick_run["err"]
    doc = json.loads(quick_run["json"].read_text())
    assert validate(doc) == []
    assert doc["options"]["reps"] == 3 and doc["options"]["quick"] is True
    assert [s["name"] for s in doc["scenarios"]] == ["lock_1p", "zone_alloc"]
    assert "--only zone_alloc,lock_1p" in doc["command"]
    for key in ("cpu_model", "cores", "kernel", "python", "memory_bytes", "loadavg_start", "loadavg_end"):
        assert key in doc["machine"], key
    # every anchor package has a version entry, None when it is not installed
    for dist in ("faster-fifo", "posix_ipc", "UltraDict", "lmdb", "redis", "numpy", "matplotlib"):
        assert dist in doc["versions"]


def test_figures_are_medians_of_the_runs(quick_run):
    doc = json.loads(quick_run["json"].read_text())
    zone = next(s for s in doc["scenarios"] if s["name"] == "zone_alloc")
    assert [m["name"] for m in zone["metrics"]] == ["64 B", "1 KiB", "64 KiB"]
    rows = {r["label"]: r for r in zone["rows"]}
    shm = rows["shmkit Zone.alloc/free"]
    assert shm["status"] == "ok", shm["note"]
    for name, f in shm["figures"].items():
        vals = sorted(f["values"])
        assert len(vals) == 3 and f["median"] == vals[1] and f["min"] == vals[0] and f["max"] == vals[2]
        assert f["median"] > 0
        best = zone["best_anchor"][name]["median"]
        assert shm["ratio_to_best_anchor"][name] == pytest.approx(f["median"] / best)
    # the reference row is never the best anchor
    assert all(v["label"] != "bytearray (private memory)" for v in zone["best_anchor"].values())
    summary = {r["scenario"]: r for r in doc["summary"]}
    assert summary["zone_alloc"]["shmkit_label"] == "shmkit Zone.alloc/free"


def test_missing_anchor_is_reported_not_dropped(quick_run):
    doc = json.loads(quick_run["json"].read_text())
    lock = next(s for s in doc["scenarios"] if s["name"] == "lock_1p")
    rows = {r["label"]: r for r in lock["rows"]}
    assert rows["posix_ipc.Semaphore"]["status"] == "missing"
    assert "pip install posix_ipc" in rows["posix_ipc.Semaphore"]["note"]
    assert rows["multiprocessing.Lock"]["status"] == "ok"
    assert "shmkit.Lock" in rows  # present, whatever its state
    assert "posix_ipc.Semaphore" in quick_run["out"] and "missing" in quick_run["out"]


def test_no_warnings_or_tracebacks(quick_run):
    assert "Traceback" not in quick_run["err"], quick_run["err"]
    assert "resource_tracker" not in quick_run["err"], quick_run["err"]


def test_ultradict_does_not_untrack_other_segments():
    """UltraDict switches the resource tracker off when imported; a stdlib segment the
    parent makes afterwards (board_read_unchanged's anchor) must still be tracked
    consistently: no 'leaked shared_memory' warning at exit."""
    pytest.importorskip("UltraDict")
    proc = bench("--quick", "--reps", "1", "--only", "dict_get_1p,board_read_unchanged")
    rc, out, err = finish(proc)
    assert rc == 0, out + err
    assert "resource_tracker" not in err, err
    assert leftovers(proc.pid) == []


def test_tables_and_summary_are_printed(quick_run):
    out = quick_run["out"]
    assert "== lock_1p:" in out and "== zone_alloc:" in out
    assert "== summary" in out
    assert "best anchor" in out


def test_nothing_left_in_dev_shm(quick_run):
    assert leftovers(quick_run["pid"]) == []


def test_plot_is_a_png(quick_run):
    if quick_run["png"] is None:
        pytest.skip("matplotlib is not installed")
    with open(quick_run["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_markdown_page_from_saved_json(quick_run):
    md = quick_run["dir"] / "page.md"
    rc, out, err = finish(bench("--from-json", str(quick_run["json"]), "--markdown", str(md),
                                "--note", "preliminary test run"), timeout=120)
    assert rc == 0, err
    text = md.read_text()
    assert "> **preliminary test run**" in text
    assert "## Latest run" in text and "### Summary" in text
    for name in EXPECTED:                       # the scenario list covers everything
        assert f"`{name}`" in text
    assert "| shmkit Zone.alloc/free | shmkit |" in text
    assert "missing: pip install posix_ipc" in text



def test_markdown_page_shows_the_spread_of_several_runs(quick_run, tmp_path):
    """--spread: each row's median in every run, the median of the medians and their range."""
    doc = json.loads(quick_run["json"].read_text())
    lock = next(s for s in doc["scenarios"] if s["name"] == "lock_1p")
    row = next(r for r in lock["rows"] if r["kind"] == "shmkit" and r["status"] == "ok")
    metric = lock["metrics"][0]["name"]
    base = row["figures"][metric]["median"]
    paths = []
    for i, factor in enumerate((2.0, 0.5, 4.0)):     # three more "runs" around the real one
        other = json.loads(json.dumps(doc))
        o_lock = next(s for s in other["scenarios"] if s["name"] == "lock_1p")
        o_row = next(r for r in o_lock["rows"] if r["label"] == row["label"])
        o_row["figures"][metric]["median"] = base * factor
        other["scenarios"] = [o_lock]                 # a run of one scenario (as --only)
        paths += ["--spread", str(tmp_path / f"run{i}.json")]
        (tmp_path / f"run{i}.json").write_text(json.dumps(other))
    md = tmp_path / "page.md"
    rc, out, err = finish(bench("--from-json", str(quick_run["json"]), "--markdown", str(md), *paths),
                          timeout=120)
    assert rc == 0, err
    from benchmarks import report

    section = md.read_text().split("## Spread over runs", 1)[1]
    assert "`zone_alloc`" not in section            # only what the other runs measured
    unit = lock["metrics"][0]["unit"]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {row['label']} |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # medians base, 2, 0.5, 4 x base: median of the four = 1.5 x base, range 0.5x-4x
    assert cells[2] == f"**{report.fmt(base * 1.5, unit)}**"
    assert cells[3] == f"{report.fmt(base * 0.5, unit)}–{report.fmt(base * 4.0, unit)}"
    assert cells[4:] == [report.fmt(base * f, unit) for f in (1.0, 2.0, 0.5, 4.0)]

FAILING = textwrap.dedent('''
    import time
    from benchmarks import harness as h

    def crasher(ctl):
        for n in ctl.reps():
            raise RuntimeError("boom in the worker")

    def sleeper(ctl):
        for n in ctl.reps():
            time.sleep(3600)

    def liar(ctl, value):
        for n in ctl.reps():
            for _ in range(n):
                with value.get_lock():
                    value.value += 2          # a broken counter: twice what was asked
            ctl.report(t0=0.0, t1=1.0)

    def compute(n, reports):
        return {"rate": 1.0}
''')


def test_failures_are_reported_and_workers_reaped(tmp_path):
    """A worker that raises, one that hangs and a wrong result: each becomes an 'error'
    row with a note, the hung worker is killed, and the exit status says a case failed."""
    (tmp_path / "failing_roles.py").write_text(FAILING)
    script = textwrap.dedent(f'''
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        sys.path.insert(0, {ROOT!r})  # benchmarks/ runs from the checkout (not installed)
        import failing_roles as f
        from benchmarks import harness as h

        if __name__ == "__main__":
            env = h.Env(h.Options(quick=True, reps=2, target=0.01, timeout=4))
            sc = h.Scenario("t", "t", "t", "t", [h.Metric("rate", "ops/s")], cases=lambda o: [])
            holder = {{}}
            def liar_setup(env):
                holder["v"] = env.ctx.Value("q", 0)
                return [h.Role(f.liar, (holder["v"],))]
            def verify(total, reports):
                if holder["v"].value != total:
                    raise h.CaseFailed(f"counter is {{holder['v'].value}}, expected {{total}}")
            cases = [
                h.Case("crasher", h.ANCHOR, lambda env: [h.Role(f.crasher)], f.compute),
                h.Case("sleeper", h.ANCHOR, lambda env: [h.Role(f.sleeper)], f.compute),
                h.Case("liar", h.SHMKIT, liar_setup, f.compute, n0=10, verify=verify),
            ]
            out = {{}}
            for case in cases:
                r = h.run_case(case, sc, env)
                out[r.label] = [r.status, r.note]
            env.close()
            import multiprocessing
            out["alive"] = [p.name for p in multiprocessing.active_children()]
            print(json.dumps(out))
    ''')
    (tmp_path / "run_failing.py").write_text(script)
    r = subprocess.run([sys.executable, str(tmp_path / "run_failing.py")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["crasher"][0] == "error" and "boom in the worker" in out["crasher"][1]
    assert out["sleeper"][0] == "error" and "timed out" in out["sleeper"][1]
    assert out["liar"][0] == "error" and "counter is 20, expected 10" in out["liar"][1]
    assert out["alive"] == []


def test_schema_rejects_malformed_documents(quick_run):
    from benchmarks.schema import main as schema_main, validate

    doc = json.loads(quick_run["json"].read_text())
    assert validate(doc) == []
    broken = json.loads(json.dumps(doc))
    row = next(r for s in broken["scenarios"] for r in s["rows"] if r["status"] == "ok")
    first = next(iter(row["figures"].values()))
    first["median"] = first["max"] + 1
    assert any("min <= median <= max" in p for p in validate(broken))
    broken = json.loads(json.dumps(doc))
    broken["scenarios"][0]["rows"][0]["status"] = "fine"
    assert validate(broken)
    assert validate({"schema": "other"})
    # --strict fails on a shmkit row in error, not on an anchor in error
    strict = json.loads(json.dumps(doc))
    shm = next(r for s in strict["scenarios"] for r in s["rows"] if r["kind"] == "shmkit")
    shm.update(status="error", note="crashed", figures={})
    path = quick_run["dir"] / "strict.json"
    path.write_text(json.dumps(strict))
    assert schema_main([str(path)]) == 0
    assert schema_main([str(path), "--strict"]) == 1


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_private_redis_server_starts_and_stops(tmp_path):
    from benchmarks.redis_server import RedisServer

    server = RedisServer.start(str(tmp_path))
    assert isinstance(server, RedisServer), server
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            assert s.recv(16).startswith(b"+PONG")
    finally:
        server.stop()
    assert server.proc.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_shmkit_bench_command(tmp_path):
    """`shmkit bench ARGS` is the same program, options passed through untouched."""
    if importlib.util.find_spec("shmkit.cli") is None:
        pytest.skip("shmkit.cli is not there yet")
    out = tmp_path / "cli.json"
    code = ("import sys\nfrom shmkit.cli import main\n"
            "sys.exit(main(['bench', '--quick', '--reps', '1', '--only', 'zone_alloc', "
            f"'--json', {str(out)!r}]))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert doc["command"].startswith("shmkit bench --quick")
    assert [s["name"] for s in doc["scenarios"]] == ["zone_alloc"]
    exe = os.path.join(os.path.dirname(sys.executable), "shmkit")
    if os.path.exists(exe):         # the installed console script
        r = subprocess.run([exe, "bench", "--list"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "queue_64B" in r.stdout and "zone_alloc" in r.stdout


def test_a_killed_runs_segments_are_swept_and_nothing_else():
    """What a SIGKILLed benchmark left in /dev/shm goes at the next run; segments of a
    live process, segments someone still maps, and other names stay."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    if harness_process_exists(gone.pid):
        pytest.skip("the pid was reused at once")
    tag = os.urandom(4).hex()
    stale = f"shmkit-bench-{gone.pid}-ud-{tag}"
    mapped = f"shmkit-bench-{gone.pid}-mapped-{tag}"
    live = f"shmkit-bench-{os.getpid()}-zone-{tag}"
    foreign = f"not-shmkit-bench-{gone.pid}-{tag}"
    names = [stale, mapped, live, foreign]
    holder = None
    try:
        for n in names:
            with open(f"/dev/shm/{n}", "wb") as f:
                f.write(b"\0" * 4096)
        holder = subprocess.Popen(
            [sys.executable, "-c", "import mmap, sys, time\n"
             f"f = open('/dev/shm/{mapped}', 'r+b'); m = mmap.mmap(f.fileno(), 4096)\n"
             "print('mapped', flush=True); time.sleep(120)"],
            stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "mapped"
        rc, out, err = finish(bench("--quick", "--reps", "1", "--only", "lock_1p"))
        assert rc == 0, out + err
        assert f"left in /dev/shm by benchmark runs that were killed" in out and stale in out
        assert not os.path.exists(f"/dev/shm/{stale}")
        for n in (mapped, live, foreign):
            assert os.path.exists(f"/dev/shm/{n}"), n
    finally:
        if holder:
            holder.kill()
            holder.wait()
        for n in names:
            try:
                os.unlink(f"/dev/shm/{n}")
            except FileNotFoundError:
                pass


def harness_process_exists(pid):
    from benchmarks.harness import _process_exists
    return _process_exists(pid)


def test_every_metric_has_a_unit_and_a_direction():
    """What `benchmarks.schema --strict` (CI) demands of every scenario, checked here on the
    declarations themselves, so that a scenario that never runs in the quick subset of
    this file cannot break CI's schema check."""
    from benchmarks.scenarios import all_scenarios
    bad = [(s.name, m.name) for s in all_scenarios() for m in s.metrics
           if not m.unit or not isinstance(m.higher_is_better, bool)]
    assert not bad, f"metrics without a unit or a direction: {bad}"
