"""tests/typing/usage_ok.py is what make typecheck checks as a user's typed code; here it
runs, against a real zone, so its annotations are what actually happens.  Also: the
public names are real objects (not the lazy loader's placeholders) and importing shmkit
stays cheap."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import shmkit

TYPING = Path(__file__).resolve().parent / "typing"


def test_usage_ok_runs(zone):
    spec = importlib.util.spec_from_file_location("usage_ok", TYPING / "usage_ok.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.use(zone)


def test_every_public_name_resolves():
    for name in shmkit.__all__:
        assert getattr(shmkit, name) is not None, name
    assert sorted(dir(shmkit)) == sorted(shmkit.__all__)


def test_import_stays_lazy():
    """``import shmkit`` loads the exceptions only: no structure module, no ctypes,
    multiprocessing or pickle (they come with the first name that needs them)."""
    code = ("import sys, shmkit\n"
            "heavy = [m for m in ('shmkit.zone', 'shmkit.sync', 'shmkit.queue', 'shmkit.board',"
            " 'shmkit.segment', 'shmkit._core', 'ctypes', 'multiprocessing', 'pickle')"
            " if m in sys.modules]\n"
            "print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
