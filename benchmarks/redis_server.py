"""A private redis-server for the Redis anchors: 127.0.0.1, a free port, no persistence,
started by the benchmark and stopped when it ends (and by the kernel if the benchmark is
killed)."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time

from .outcome import SKIPPED, Unavailable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the benchmark dies, even by SIGKILL, so
    no redis-server outlives it (prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)   # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, proc: subprocess.Popen, port: int, version: str | None):
        self.proc = proc
        self.port = port
        self.version = version

    @classmethod
    def start(cls, workdir: str):
        """A running server, or an Unavailable(SKIPPED) saying why there is none (the
        caller keeps it, so every Redis case reports the same note)."""
        exe = shutil.which("redis-server")
        if exe is None:
            return Unavailable(SKIPPED, "redis-server is not installed (apt-get install redis-server)")
        version = None
        try:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
            m = re.search(r"v=(\S+)", out)
            version = m.group(1) if m else out.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        last_error = ""
        for _ in range(3):  # the free port may be taken between probe and bind
            port = free_port()
            args = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                    "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
                    "--dir", workdir, "--loglevel", "warning", "--maxmemory", "2gb"]
            log_path = f"{workdir}/redis-{port}.log"  # a file, not a pipe nobody drains
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=workdir,
                                        preexec_fn=_die_with_parent)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                if _ping(port):
                    return cls(proc, port, version)
                time.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            with open(log_path, errors="replace") as log:
                lines = log.read().strip().splitlines()
            last_error = lines[-1] if lines else f"exit code {proc.returncode}, no output"
        return Unavailable(SKIPPED, f"redis-server did not start: {last_error}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __repr__(self):
        return f"<RedisServer 127.0.0.1:{self.port} pid={self.proc.pid} v{self.version}>"


__all__ = ["RedisServer", "free_port"]
