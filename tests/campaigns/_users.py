"""A second user, created for a run and removed at its end, and code run as that user.

Permission checks need a real second user: ``TempUser`` creates one with ``useradd``
(a system user without a home or a login shell, named ``shmkt<pid><random>``) and
removes it with ``userdel`` when the block ends, also on failure and, as a last resort,
at interpreter exit.  Only root can do this; ``skip_reason()`` says why it cannot be done
here.

The interpreter may live where that user cannot read (``/root/.pyenv`` is 0700 here), so
code is not exec'ed as the user: ``run_as`` forks this (root) process, drops the child to
the user's uid and gid (no supplementary groups), and calls a function there.  Anything
the function imports must be imported before (``preload()``): after the switch the
child may not be able to read the standard library any more.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass


def skip_reason() -> str | None:
    """None if a temporary user can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root to create a second user (useradd)"
    for tool in ("useradd", "userdel"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


_live_users: set = set()


def _remove_user(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)  # the -U group, if still there
    _live_users.discard(name)


@atexit.register
def _remove_leftovers():
    for name in list(_live_users):
        _remove_user(name)


class TempUser:
    """``with TempUser() as u: ...`` - a user that exists for the block (u.name, u.uid,
    u.gid)."""

    def __init__(self):
        self.name = f"shmkt{os.getpid()}{secrets.token_hex(2)}"[:31]
        self.uid = self.gid = None

    def __enter__(self) -> "TempUser":
        why = skip_reason()
        if why:
            raise RuntimeError(why)
        r = subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                            "--shell", "/usr/sbin/nologin", self.name],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"useradd {self.name} failed: {r.stderr.strip()}")
        _live_users.add(self.name)
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        return self

    def __exit__(self, *exc):
        _remove_user(self.name)


def preload() -> None:
    """Import what shmkit's CLI and library use lazily, so that a child running as
    another user does not need to read the standard library or shmkit's files."""
    import argparse, dataclasses, datetime, errno, fcntl, fnmatch, grp, json  # noqa: E401,F401
    import multiprocessing, platform, selectors, socket, struct, tempfile  # noqa: E401,F401
    import threading, weakref, pickle, queue, ctypes, collections  # noqa: E401,F401

    import shmkit  # noqa: F401
    import shmkit.cli, shmkit.inventory, shmkit.segment, shmkit.zone  # noqa: E401,F401
    import shmkit._lifecycle, shmkit._errors, shmkit.sync, shmkit.queue  # noqa: E401,F401
    import shmkit.dict, shmkit.board, shmkit.config  # noqa: E401,F401


@dataclass
class Result:
    how: str        #: "ok" (it ended: see code), "signal" (killed by one), "hang" (killed)
    code: int       #: the child's exit code (the function's int result, else 0) or signal
    out: str        #: what it wrote to stdout and stderr


def run_as(user: TempUser, func, *args, timeout: float = 30.0) -> Result:
    """Call ``func(*args)`` in a forked child running as ``user``.  An int result is the
    child's exit code; output to fds 1 and 2 is captured."""
    preload()
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(r)
            os.dup2(w, 1)
            os.dup2(w, 2)
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
            sys.stderr = sys.stdout
            res = func(*args)
            code = res if isinstance(res, int) else 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
        except BaseException as e:  # reported, and a distinct code
            print(f"run_as: {type(e).__name__}: {e}", flush=True)
            code = 99
        try:
            sys.stdout.flush()
        finally:
            os._exit(code)
    os.close(w)
    out = bytearray()
    deadline = time.monotonic() + timeout
    hung = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            hung = True
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([r], [], [], left)
        if ready:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    if hung:
        return Result("hang", -1, text)
    if os.WIFSIGNALED(status):
        return Result("signal", os.WTERMSIG(status), text)
    return Result("ok", os.WEXITSTATUS(status), text)
