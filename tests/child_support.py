"""Run a Python snippet in a fresh interpreter, optionally interrupting it with SIGINT
once it has said it is about to make the call under test.

A fixed delay before the SIGINT is not enough on a loaded machine: an interpreter still
importing shmkit a second later dies of the KeyboardInterrupt in an import, not in the
wait the test is about.  So the child prints a marker line (flushed) just before its call,
and the SIGINT goes `delay` seconds after that line arrived."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time


def run_child(code: str, *args: str, timeout: float, env: dict | None = None,
              cwd: str | None = None, sigint_after_line: str | None = None,
              delay: float = 1.0) -> tuple[int | None, str, str, bool]:
    """(returncode, stdout, stderr, hung).  hung: the child did not end within `timeout`
    (after the SIGINT, when one was asked for) and was killed."""
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, **(env or {})), cwd=cwd)
    out: list[str] = []
    err: list[str] = []
    said = threading.Event()

    def pump(stream, into: list[str], marker: str | None) -> None:
        for line in stream:
            into.append(line)
            if marker is not None and line.rstrip("\n") == marker:
                said.set()

    pumps = [threading.Thread(target=pump, args=(p.stdout, out, sigint_after_line), daemon=True),
             threading.Thread(target=pump, args=(p.stderr, err, None), daemon=True)]
    for t in pumps:
        t.start()
    hung = False
    try:
        if sigint_after_line is not None and said.wait(timeout) and p.poll() is None:
            time.sleep(delay)
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        hung = True
        p.kill()
        p.wait()
    finally:
        if p.poll() is None:  # the test itself failed or was interrupted: leave no child
            p.kill()
            p.wait()
        for t in pumps:
            t.join(5)
    return p.returncode, "".join(out), "".join(err), hung
