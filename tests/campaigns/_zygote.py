"""A process that forks fresh trial processes on request (``python -m
tests.campaigns._zygote``).

A campaign that runs thousands of trials cannot start an interpreter for each (~60 ms
here), and must not fork its own process, which has built templates and holds handles.
The zygote has imported shmkit (and what the trials need) and opened nothing: a child
forked from it is a fresh process as far as shared memory goes.  Started with the
sanitizer's environment (LD_PRELOAD of libasan and an ASan build of shmkit on
PYTHONPATH), its children run against that build.

Protocol: one JSON object per line on stdin, ``{"call": "module:function", "args":
[...], "timeout": seconds}``; one JSON line back per request on stdout:

    {"how": "ok" | "exit" | "signal" | "hang", "code": exit code or signal number,
     "result": the function's return value (JSON) or null,
     "progress": the last lines the child reported, "stderr": the end of its stderr}

The child gets ``progress`` (a function writing one line to the parent, unbuffered) as
its first argument: before each step it says what it is doing, so a child that dies or
hangs is attributed to the step it was in.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import sys
import time


def _child(call: str, args: list, progress_fd: int, result_fd: int) -> None:
    mod, func = call.split(":")
    fn = getattr(importlib.import_module(mod), func)

    def progress(line: str) -> None:
        os.write(progress_fd, (line.replace("\n", " ")[:500] + "\n").encode())

    result = fn(progress, *args)
    os.write(result_fd, json.dumps(result, default=str).encode())


def run_one(call: str, args: list, timeout: float) -> dict:
    pr, pw = os.pipe()     # progress lines
    rr, rw = os.pipe()     # the result
    er, ew = os.pipe()     # stderr
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(pr), os.close(rr), os.close(er)
            os.dup2(ew, 2)
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _child(call, args, pw, rw)
        except BaseException as e:  # an escape from the trial function itself
            try:
                os.write(2, f"zygote child: {type(e).__name__}: {e}\n".encode())
            except OSError:
                pass
            code = 70
        os._exit(code)
    for fd in (pw, rw, ew):
        os.close(fd)
    bufs = {pr: bytearray(), rr: bytearray(), er: bytearray()}
    open_fds = set(bufs)
    deadline = time.monotonic() + timeout
    hung = False
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            hung = True
            break
        ready, _, _ = select.select(list(open_fds), [], [], left)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
            elif len(bufs[fd]) < (1 << 20):
                bufs[fd] += chunk
    if hung:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    for fd in bufs:
        os.close(fd)
    progress = bufs[pr].decode(errors="replace").splitlines()
    try:
        result = json.loads(bufs[rr]) if bufs[rr] else None
    except ValueError:
        result = None
    out = {"progress": progress[-8:], "stderr": bufs[er].decode(errors="replace")[-4000:],
           "result": result}
    if hung:
        out.update(how="hang", code=None)
    elif os.WIFSIGNALED(status):
        out.update(how="signal", code=os.WTERMSIG(status))
    else:
        code = os.WEXITSTATUS(status)
        out.update(how="ok" if code == 0 else "exit", code=code)
    return out


def main() -> None:
    preload = os.environ.get("SHMKIT_ZYGOTE_PRELOAD", "")
    for mod in filter(None, preload.split(",")):
        importlib.import_module(mod)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        req = json.loads(line)
        res = run_one(req["call"], req.get("args", []), float(req.get("timeout", 10)))
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


class Zygote:
    """The campaign's side: start a zygote (with an environment) and run trials in it."""

    def __init__(self, env: dict | None = None, preload: tuple = (), cwd: str | None = None):
        import subprocess
        env = dict(os.environ if env is None else env)
        env["SHMKIT_ZYGOTE_PRELOAD"] = ",".join(preload)
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.campaigns._zygote"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=cwd, bufsize=1)
        first = self.proc.stdout.readline()
        if first.strip() != "ready":
            self.close()
            raise RuntimeError(f"the zygote did not start: {first!r}")

    def run(self, call: str, args: list, timeout: float) -> dict:
        self.proc.stdin.write(json.dumps({"call": call, "args": args, "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote died ({self.proc.poll()})")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    main()
