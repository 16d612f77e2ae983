"""The wheel: what it installs, and that what it installs works on its own.

One wheel is built from a copy of the files git tracks (what a fresh clone has), with the
same pip and build settings as a user's ``pip install``.  Its file list must have no
top-level package but ``shmkit`` (the benchmark suite goes in as ``shmkit._bench``), every
package of the source tree, the typing markers (``py.typed``, ``_core.pyi``) and the
compiled module; unpacked alone (no checkout, no editable install on the path), ``shmkit
bench --list`` and ``python -m shmkit._bench --list`` run, and ``benchmarks`` does not
import.  Building compiles the extension: ~30-60 s, so the test is marked slow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                       reason="builds a normal extension; the sanitizer run checks memory"),
]


def _tracked_files() -> list[str]:
    r = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, timeout=60)
    if r.returncode != 0:
        pytest.skip(f"not a git checkout: {r.stderr.decode(errors='replace').strip()}")
    return [f for f in r.stdout.decode().split("\0") if f]


def _source_packages() -> set[str]:
    """Every package the wheel must carry, as paths inside it."""
    out = set()
    for init in (ROOT / "src").rglob("__init__.py"):
        out.add(init.parent.relative_to(ROOT / "src").as_posix())
    for init in (ROOT / "benchmarks").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT / "benchmarks").as_posix()
        out.add("shmkit/_bench" + ("" if rel == "." else "/" + rel))
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src-copy"
    for rel in _tracked_files():
        if not (ROOT / rel).is_file():
            continue  # deleted in the work tree, not yet committed
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    # compile on both cores (this copy only; the project's own build is untouched)
    (src / "setup.cfg").write_text("[build_ext]\nparallel = 2\n")
    out = tmp / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(out), str(src)], capture_output=True, text=True,
                       timeout=540)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = list(out.glob("shmkit-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_file_list(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"shmkit"}, sorted(top)
    assert not any(n.startswith("benchmarks/") for n in names)
    for required in ("shmkit/py.typed", "shmkit/_core.pyi", "shmkit/__init__.py",
                     "shmkit/_bench/__init__.py", "shmkit/_bench/__main__.py",
                     "shmkit/_bench/scenarios/__init__.py", "shmkit/demo/__init__.py"):
        assert required in names, required
    assert any(n.startswith("shmkit/_core.") and n.endswith(".so") for n in names)
    packages = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    missing = _source_packages() - packages
    assert not missing, f"packages of the source tree missing from the wheel: {sorted(missing)}"
    top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level[0]).decode().split() == ["shmkit"]


def test_the_installed_package_runs_alone(wheel, tmp_path):
    """Unpacked into an empty directory and run with site-packages off (-S: no editable
    install, no checkout on the path): the bench command finds its suite inside shmkit."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    run = tmp_path / "cwd"
    run.mkdir()

    def py(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-S", *args], cwd=run, env=env,
                              capture_output=True, text=True, timeout=120)

    r = py("-c", "import shmkit, shmkit._core; print(shmkit.__file__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(site / "shmkit" / "__init__.py")
    for argv in (["-m", "shmkit", "bench", "--list"], ["-m", "shmkit._bench", "--list"]):
        r = py(*argv)
        assert r.returncode == 0, r.stderr
        assert "queue_64B" in r.stdout and "zone_alloc" in r.stdout, r.stdout
    r = py("-c", "import benchmarks")
    assert r.returncode != 0 and "No module named 'benchmarks'" in r.stderr
