"""shmkit.shmop: PHP's shmop_* shapes over SysV segments, with PHP's edge cases, and the
same segments shared with the real PHP (php-cli's shmop extension) in both directions."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from shmkit import ClosedError, SegmentExistsError, SegmentNotFoundError
from shmkit.shmop import (Shmop, shmop_close, shmop_delete, shmop_open, shmop_read,
                          shmop_size, shmop_write)
from conftest import run_python
from segment_helpers import sysv_exists, sysv_id_exists, sysv_key, sysv_keys  # noqa: F401

pytestmark = pytest.mark.timeout(60)


def test_php_round_trip(sysv_key):
    shm = shmop_open(sysv_key, "c", 0o644, 100)
    try:
        assert isinstance(shm, Shmop) and shmop_size(shm) == 100
        assert shmop_write(shm, b"test #1 of the shmop() extension", 0) == 32
        assert shmop_read(shm, 0, 32) == b"test #1 of the shmop() extension"
        assert shmop_write(shm, "str is utf-8", 40) == 12
        assert shmop_read(shm, 40, 12) == b"str is utf-8"
        # size 0 reads to the end, as PHP does
        assert len(shmop_read(shm, 90, 0)) == 10
        # another process (PHP, C or Python) sees the same bytes
        r = run_python("import sys\nfrom shmkit.shmop import *\n"
                       f"s = shmop_open({sysv_key}, 'a', 0, 0)\n"
                       "print(shmop_read(s, 0, 7).decode()); shmop_close(s)")
        assert r.stdout.strip() == "test #1"
        assert shm.segment.stat().mode == 0o644
        shmid = shm.shmid
        assert shmop_delete(shm) is True
        assert not sysv_exists(sysv_key)  # the key goes at once...
        assert sysv_id_exists(shmid)  # ...the memory when the last process detaches
    finally:
        shmop_close(shm)
    assert not sysv_id_exists(shmid)
    shmop_close(shm)  # twice is harmless


def test_php_modes(sysv_key):
    with pytest.raises(SegmentNotFoundError):
        shmop_open(sysv_key, "w", 0, 0)
    with pytest.raises(SegmentNotFoundError):
        shmop_open(sysv_key, "a", 0, 0)
    shm = shmop_open(sysv_key, "n", 0o600, 64)
    try:
        with pytest.raises(SegmentExistsError):
            shmop_open(sysv_key, "n", 0o600, 64)
        other = shmop_open(sysv_key, "c", 0o600, 64)  # "c" opens an existing one
        assert shmop_size(other) == 64
        shmop_close(other)
        ro = shmop_open(sysv_key, "a", 0, 0)
        with pytest.raises(PermissionError, match="read-only"):
            shmop_write(ro, b"x", 0)
        shmop_close(ro)
        rw = shmop_open(sysv_key, "w", 0, 0)
        shmop_write(rw, b"w", 0)
        assert shmop_read(shm, 0, 1) == b"w"
        shmop_close(rw)
        shmop_delete(shm)
    finally:
        shmop_close(shm)


def test_php_edge_cases(sysv_key):
    shm = shmop_open(sysv_key, "c", 0o600, 10)
    try:
        assert shmop_write(shm, b"0123456789abc", 5) == 5  # truncated at the end, like PHP
        assert shmop_read(shm, 5, 5) == b"01234"
        assert shmop_write(shm, b"", 10) == 0
        for off, size in [(-1, 1), (11, 0), (5, 6), (0, -1)]:
            with pytest.raises(ValueError):
                shmop_read(shm, off, size)
        for off in (-1, 11):
            with pytest.raises(ValueError, match="offset"):
                shmop_write(shm, b"x", off)
        shmop_delete(shm)
    finally:
        shmop_close(shm)
    with pytest.raises(ClosedError):
        shmop_read(shm, 0, 1)
    with pytest.raises(ClosedError):
        shmop_size(shm)


@pytest.mark.parametrize("args, match", [
    (("x", 0o600, 10), "access mode"),
    (("cw", 0o600, 10), "access mode"),
    (("c", 0o600, 0), "greater than 0"),
    (("n", 0o600, -1), ">= 0"),
])
def test_php_bad_arguments(sysv_key, args, match):
    with pytest.raises(ValueError, match=match):
        shmop_open(sysv_key, *args)
    with pytest.raises(TypeError):
        shmop_open("key", "c", 0o600, 10)
    with pytest.raises(TypeError):
        shmop_read(object(), 0, 1)


# -- the real PHP ----------------------------------------------------------------------------

# not the sanitizer runtime `make sanitize` preloads into Python: php is not built for it
PHP_ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


@pytest.fixture(scope="module")
def php():
    """The php binary, with its shmop extension (Debian: apt-get install php-cli)."""
    exe = shutil.which("php")
    if not exe:
        pytest.skip("php not installed (apt-get install php-cli; .ci/run installs it)")
    r = subprocess.run([exe, "-r", 'echo function_exists("shmop_open") ? "yes" : "no";'],
                       capture_output=True, text=True, timeout=30, env=PHP_ENV)
    if r.stdout.strip() != "yes":
        pytest.skip("php has no shmop extension")
    return exe


def run_php(php, code: str) -> str:
    r = subprocess.run([php, "-d", "display_errors=stderr", "-r", code], capture_output=True,
                       text=True, timeout=30, env=PHP_ENV)
    assert r.returncode == 0, f"php failed ({r.returncode}): {r.stderr}"
    return r.stdout


def test_real_php_reads_and_writes_back(php, sysv_key):
    shm = shmop_open(sysv_key, "n", 0o600, 256)
    try:
        shmop_write(shm, b"hello from Python", 0)
        out = run_php(php, f"""
            $s = shmop_open({sysv_key}, "w", 0, 0);
            echo shmop_read($s, 0, 17), "|", shmop_size($s);
            shmop_write($s, "PHP wrote back", 100);
        """)
        assert out == "hello from Python|256"
        assert shmop_read(shm, 100, 14) == b"PHP wrote back"
        assert shm.segment.stat().last_pid not in (None, os.getpid())  # PHP attached last
    finally:
        shmop_delete(shm)
        shmop_close(shm)
    assert not sysv_exists(sysv_key)


def test_shmkit_reads_what_real_php_created(php, sysv_key):
    run_php(php, f"""
        $s = shmop_open({sysv_key}, "n", 0644, 128);
        shmop_write($s, "made in PHP", 0);
    """)
    assert sysv_exists(sysv_key)
    with pytest.raises(SegmentExistsError):
        shmop_open(sysv_key, "n", 0o600, 128)  # exclusive create sees PHP's segment
    shm = shmop_open(sysv_key, "a", 0, 0)
    try:
        assert shmop_size(shm) == 128
        assert shmop_read(shm, 0, 11) == b"made in PHP"
        st = shm.segment.stat()
        assert st.mode & 0o777 == 0o644 and st.size == 128
        assert st.creator_pid != os.getpid() and not st.shmkit  # not ours: gc would leave it
    finally:
        shmop_close(shm)
    # removed from Python, PHP finds nothing under the key any more
    shmop_delete(shmop_open(sysv_key, "w", 0, 0))
    assert not sysv_exists(sysv_key)
    out = run_php(php, f'var_dump(@shmop_open({sysv_key}, "a", 0, 0));')
    assert out.strip() == "bool(false)"


def test_real_php_deletes_while_python_is_attached(php, sysv_key):
    shm = shmop_open(sysv_key, "c", 0o600, 64)
    try:
        shmop_write(shm, b"still mapped", 0)
        run_php(php, f'shmop_delete(shmop_open({sysv_key}, "w", 0, 0));')
        # IPC_RMID: the key is free at once, the memory lives until the last detach
        with pytest.raises(SegmentNotFoundError):
            shmop_open(sysv_key, "a", 0, 0)
        assert shmop_read(shm, 0, 12) == b"still mapped"
    finally:
        shmop_close(shm)
    assert not sysv_exists(sysv_key)
