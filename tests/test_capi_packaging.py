"""The wheel carries the C API: shmkit/include/shmkit.h, shmkit/lib/libshmkit.so and the
relocatable shmkit/lib/pkgconfig/shmkit.pc; a C program builds and runs against the
unpacked wheel through pkg-config alone.  (`pip install -e .` and `setup.py build_ext
--inplace` are what `make` itself uses: every other C API test runs on them.)"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from capi_support import CSRC, ROOT, facts, need
from conftest import unique

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _source_copy(dest: str) -> str:
    """The checkout's tracked files (and the working copies of them), so that building
    the wheel writes nothing into the checkout."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    src = os.path.join(dest, "src")
    for f in filter(None, files):
        if not os.path.exists(os.path.join(ROOT, f)):
            continue
        os.makedirs(os.path.join(src, os.path.dirname(f)), exist_ok=True)
        with open(os.path.join(ROOT, f), "rb") as i, open(os.path.join(src, f), "wb") as o:
            o.write(i.read())
    return src


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("wheel"))
    src = _source_copy(tmp)
    out = os.path.join(tmp, "dist")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "SHMKIT_SANITIZE")}
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", out, src], capture_output=True, text=True, env=env,
                       timeout=800)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = [f for f in os.listdir(out) if f.endswith(".whl")]
    assert len(wheels) == 1, wheels
    return os.path.join(out, wheels[0])


def test_wheel_contains_header_library_and_pc(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("shmkit/include/shmkit.h", "shmkit/lib/libshmkit.so",
              "shmkit/lib/pkgconfig/shmkit.pc", "shmkit/_capi.py"):
        assert f in names, f"{f} is not in {os.path.basename(wheel)}"


def test_program_builds_against_the_unpacked_wheel_with_pkg_config(wheel, tmp_path):
    need("cc")
    need("pkg-config")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    os.chmod(site / "shmkit" / "lib" / "libshmkit.so", 0o755)
    pcdir = site / "shmkit" / "lib" / "pkgconfig"
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD",)}
    env["PKG_CONFIG_PATH"] = str(pcdir)
    cmd = f"cc -o prog {os.path.join(CSRC, 'minimal.c')} $(pkg-config --cflags --libs shmkit)"
    r = subprocess.run(["sh", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    # the run path points into the unpacked wheel: no LD_LIBRARY_PATH needed
    ldd = subprocess.run(["ldd", str(tmp_path / "prog")], capture_output=True, text=True,
                         env=env).stdout
    found = [ln.split("=>")[1].split()[0] for ln in ldd.splitlines() if "libshmkit.so" in ln]
    assert found and os.path.realpath(found[0]) == \
        os.path.realpath(site / "shmkit" / "lib" / "libshmkit.so"), ldd
    name = unique("shmkit-capi-wheel")
    try:
        r = subprocess.run([str(tmp_path / "prog"), name], capture_output=True, text=True,
                           timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        assert facts(r.stdout) == {"version": "0.1.0", "counter": "2"}
    finally:
        if os.path.exists(f"/dev/shm/{name}"):
            os.unlink(f"/dev/shm/{name}")
    nm = subprocess.run(["nm", "-D", "--defined-only", str(site / "shmkit/lib/libshmkit.so")],
                        capture_output=True, text=True, check=True).stdout
    assert all(line.split()[-1].startswith("shmkit_") for line in nm.splitlines()
               if line.split()[1:2] == ["T"])
