"""Every program in examples/ runs with no arguments, in seconds, and exits 0 only if
its claim held (each ends with an "OK: ..." line, or "FAILED: ..." and exit 1); each is
listed in examples/README.md; none leaves anything in /dev/shm or SysV IPC.

A missing optional tool (php, gcc, OpenCV, NumPy) skips an example on a developer's
machine, saying what to install; in CI (CI=1, set by .ci/run, which installs them all)
it fails instead: nothing may be skipped there.  `make sanitize` leaves these out
(marker "examples"): they are end-to-end programs, and they run in `make test`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES_DIR = os.path.join(os.path.dirname(HERE), "examples")

#: example (path under examples/) -> what it needs besides shmkit
EXAMPLES = {
    "nginx_zone.py": [],
    "php_shmop/daemon.py": ["php"],
    "c_peers/run.py": ["gcc"],
    "c_api/run.py": ["gcc"],
    "qt_images.py": ["numpy", "cv2"],
    "ashmem_fd.py": [],
    "udp_frontend.py": [],
    "fork_children.py": [],
    "shared_config.py": [],
    "multiprocessing_port.py": [],
    "lost_update.py": [],
    "stdlib_shared_memory.py": [],
    "ksm_merging.py": [],
    "camera_frames.py": ["numpy"],
    "queue_pipeline.py": ["numpy"],
    "worker_pool_cache.py": [],
}

INSTALL = {"php": "apt-get install php-cli (with shmop)", "gcc": "apt-get install gcc",
           "numpy": "pip install shmkit[numpy]", "cv2": "pip install shmkit[images]"}

pytestmark = [pytest.mark.examples, pytest.mark.timeout(180)]


def _missing(needs: list[str]) -> list[str]:
    out = []
    for need in needs:
        if need == "php":
            if not shutil.which("php") or subprocess.run(
                    ["php", "-r", 'echo function_exists("shmop_open") ? "yes" : "no";'],
                    capture_output=True, text=True, timeout=30, env=_env()).stdout != "yes":
                out.append(need)
        elif need == "gcc":
            if not shutil.which(need):
                out.append(need)
        elif importlib.util.find_spec(need) is None:
            out.append(need)
    return out


def _env() -> dict:
    # not the sanitizer runtime a sanitizer run preloads: php, gcc and the C peers are not
    # built for it
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def _shm_names() -> set[str]:
    return set(os.listdir("/dev/shm"))


def _sysv_created_by(pid: int) -> list[str]:
    with open("/proc/sysvipc/shm") as f:
        header = f.readline().split()
        rows = [dict(zip(header, line.split())) for line in f if line.strip()]
    return [r["shmid"] for r in rows if int(r["cpid"]) == pid]


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_example_runs_and_its_claim_holds(example, tmp_path):
    missing = _missing(EXAMPLES[example])
    if missing:
        how = "; ".join(INSTALL[m] for m in missing)
        if os.environ.get("CI"):
            pytest.fail(f"{example} needs {', '.join(missing)} ({how}): CI must have it")
        pytest.skip(f"{example} needs {', '.join(missing)} ({how})")
    path = os.path.join(EXAMPLES_DIR, example)
    p = subprocess.Popen([sys.executable, path], cwd=tmp_path, env=_env(), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=150)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    report = f"exit {p.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert p.returncode == 0, report
    assert out.rstrip().splitlines()[-1].startswith("OK: "), report
    assert "FAILED" not in out + err, report
    assert "Traceback" not in err, report
    left = [n for n in _shm_names() if str(p.pid) in n]
    assert not left, f"{example} left {left} in /dev/shm\n{report}"
    assert not _sysv_created_by(p.pid), f"{example} left SysV segments\n{report}"


def test_every_example_is_indexed_and_tested():
    with open(os.path.join(EXAMPLES_DIR, "README.md")) as f:
        index = f.read()
    on_disk = set()
    for entry in os.listdir(EXAMPLES_DIR):
        full = os.path.join(EXAMPLES_DIR, entry)
        if entry.endswith(".py"):
            on_disk.add(entry)
        elif os.path.isdir(full) and not entry.startswith((".", "__")):
            runs = [n for n in ("run.py", "daemon.py") if os.path.exists(os.path.join(full, n))]
            assert runs, f"examples/{entry}/ has no run.py (or daemon.py) to run it"
            on_disk.add(f"{entry}/{runs[0]}")
    assert on_disk == set(EXAMPLES), "tests/test_examples.py's EXAMPLES and examples/ differ"
    for example in EXAMPLES:
        assert f"examples/{example}" in index, f"examples/README.md does not list {example}"
