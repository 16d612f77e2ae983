"""Building and running the C side of the C API tests (tests/test_capi*.py).

C programs are built with exactly the command docs/c.md gives (the line after its
``<!-- build-command`` marker), run by a shell whose PATH finds this checkout's
``shmkit`` command first.  In CI (CI=1) a missing compiler fails instead of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOC = os.path.join(ROOT, "docs", "c.md")
CSRC = os.path.join(HERE, "capi")


def documented_commands() -> list[str]:
    """The build command lines of docs/c.md's marked block(s), in order."""
    with open(DOC) as f:
        text = f.read()
    blocks = re.findall(r"<!-- build-command[^>]*-->\s*```\w*\n(.*?)```", text, re.S)
    lines = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip()]
    if not lines:
        raise AssertionError("docs/c.md has no <!-- build-command --> block")
    return lines


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = os.path.dirname(sys.executable) + os.pathsep + e.get("PATH", "")
    return e


def need(tool: str) -> None:
    if shutil.which(tool):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{tool} is needed for the C API tests, and CI must have it")
    pytest.skip(f"{tool} is not installed")


def build(source: str, workdir: str, *, command: str | None = None) -> str:
    """Build source (a path) with the documented command (the line that compiles
    prog.c, or prog.cpp for C++ sources) in workdir; returns the executable's path."""
    cxx = source.endswith((".cpp", ".cc"))
    ext = ".cpp" if cxx else ".c"
    if command is None:
        matches = [c for c in documented_commands() if f"prog{ext}" in c.split()]
        assert matches, f"docs/c.md gives no build command for prog{ext}"
        command = matches[0]
    need(command.split()[0])
    d = os.path.join(workdir, "build-" + os.path.splitext(os.path.basename(source))[0])
    os.makedirs(d, exist_ok=True)
    shutil.copy(source, os.path.join(d, "prog" + ext))
    r = subprocess.run(["sh", "-c", command], cwd=d, env=env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"{command!r} failed:\n{r.stdout}\n{r.stderr}"
    return os.path.join(d, "prog")


def facts(out: str) -> dict[str, str]:
    """The "key value" lines a C peer prints, as a dict."""
    d = {}
    for line in out.splitlines():
        k, _, v = line.partition(" ")
        d[k] = v
    return d


def run(exe: str, *args, timeout: float = 120.0, check: bool = True) -> dict[str, str]:
    r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{exe} {args} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return facts(r.stdout)
