"""Images handed between processes by key, the way Qt's QSharedMemory does it.

    python examples/qt_images.py            (needs OpenCV and NumPy: pip install shmkit[images])

Qt's "Shared Memory Example": one dialog loads an image and puts it in shared memory
under a key - create(size), lock(), copy, unlock() - and another process gets it -
attach(), lock(), read, unlock(), detach().  The memory is freed when the last process
detaches.  Here the same steps run on shmkit, with a small QSharedMemory class below:

- the key becomes a POSIX name exactly as Qt makes it (``qipc_sharedmemory_`` + the
  key's letters + the SHA-1 of the key); the segment is a zone with lifecycle
  ``unlink_on_last_close`` (Qt's "freed at the last detach") holding the data and the
  lock (a shmkit Lock: a holder that dies is noticed, ``owner_died``);
- a real image is drawn with OpenCV and travels twice: PNG-encoded (``cv2.imencode``,
  copied in and out, decoded by the reader with ``cv2.imdecode``), and as raw pixels
  drawn by OpenCV *directly in shared memory* and read by the other process through a
  NumPy view of its own mapping - zero copies.  CRC-32s prove both arrived intact; the
  reader then draws into the shared pixels and the writer sees it;
- a process SIGKILLed while holding the lock does not block the others.

The reader and the lock holder are separate programs (this file, run with --reader or
--hold-lock).  Exits 0 only if every checksum matched and each segment was freed at its
last detach.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import struct
import subprocess
import sys
import zlib
from typing import Any

try:
    import cv2  # pyright: ignore[reportMissingImports]  # (the [images] extra)
    import numpy as np
except ImportError as e:                      # the example's only optional dependencies
    print(f"FAILED: this example needs OpenCV and NumPy ({e.name} is missing): "
          "pip install shmkit[images]", file=sys.stderr)
    sys.exit(1)

import shmkit

SHAPE = (480, 640, 3)                         # height, width, channels (BGR)
PIXELS_HEAD = struct.Struct("<III")           # the raw image's header: height, width, channels
PIXELS_AT = 64                                # pixels start here (64-byte aligned)
SQUARE = ((40, 40), (120, 100), (0, 255, 255))   # what the reader draws: corners, colour


class QSharedMemory:
    """The part of Qt's QSharedMemory this job needs, on shmkit."""

    def __init__(self, key: str) -> None:
        self.key = key
        letters = "".join(c for c in key if c.isascii() and c.isalpha())
        self.native_key = ("qipc_sharedmemory_" + letters
                           + hashlib.sha1(key.encode()).hexdigest())   # as Qt builds it
        self.error: str | None = None
        self.owner_died = False
        self._zone: shmkit.Zone | None = None
        self._lock: shmkit.Lock | None = None
        self._data: memoryview | None = None

    def create(self, size: int) -> bool:
        """Create the segment and attach to it; False (error "AlreadyExists") if it exists."""
        made: list[bool] = []

        def init(zone: shmkit.Zone) -> None:
            zone.lock("lock")
            zone.create("data", size)
            made.append(True)
        room = -(-size // 4096) * 4096 + (256 << 10)      # the data, plus the zone's own pages
        try:
            zone = shmkit.Zone(self.native_key, room, init=init,
                               lifecycle="unlink_on_last_close")
        except shmkit.ZoneMismatchError:
            self.error = "AlreadyExists"
            return False
        if not made:
            zone.close()
            self.error = "AlreadyExists"
            return False
        self._attached(zone)
        return True

    def attach(self) -> bool:
        """Attach to an existing segment; False (error "NotFound") if there is none."""
        try:
            zone = shmkit.Zone(self.native_key, 0, create=False)
        except FileNotFoundError:
            self.error = "NotFound"
            return False
        self._attached(zone)
        return True

    def _attached(self, zone: shmkit.Zone) -> None:
        self._zone = zone
        self._lock = zone.lock("lock")
        info = zone.find("data")
        self._data = zone.view(info.offset, info.size)

    def is_attached(self) -> bool:
        return self._zone is not None

    def _attached_parts(self) -> tuple[shmkit.Lock, memoryview]:
        if self._lock is None or self._data is None:
            raise RuntimeError(f"{self.key!r}: not attached")
        return self._lock, self._data

    def lock(self) -> bool:
        lock, _ = self._attached_parts()
        got = bool(lock.acquire(timeout=10))
        self.owner_died = got and bool(lock.owner_died)
        return got

    def unlock(self) -> None:
        self._attached_parts()[0].release()

    def data(self) -> memoryview:
        return self._attached_parts()[1]

    def size(self) -> int:
        return len(self.data())

    def detach(self) -> bool:
        """Detach; the last process to detach frees the memory (and its name)."""
        if self._zone is None:
            return False
        zone = self._zone
        if self._data is not None:
            self._data.release()             # nothing of ours may keep the mapping alive
        self._zone = self._lock = self._data = None
        zone.close()
        return True


def pixels(mem: QSharedMemory) -> np.ndarray:
    """The raw image in shared memory as a NumPy array: a view, not a copy."""
    h, w, c = PIXELS_HEAD.unpack(mem.data()[:PIXELS_HEAD.size])
    view: np.ndarray = np.ndarray((h, w, c), np.uint8, buffer=mem.data(), offset=PIXELS_AT)
    return view


def draw_scene(img: np.ndarray) -> None:
    """A real picture, drawn by OpenCV into ``img`` wherever it lives."""
    h, w = img.shape[:2]
    img[:] = np.dstack([np.linspace(40, 200, w, dtype=np.uint8)[None, :].repeat(h, 0),
                        np.linspace(200, 40, h, dtype=np.uint8)[:, None].repeat(w, 1),
                        np.full((h, w), 90, np.uint8)])
    rnd = np.random.default_rng(17)
    img += rnd.integers(0, 12, img.shape, dtype=np.uint8)            # sensor noise
    for i in range(12):
        cv2.circle(img, (int(40 + 50 * i), int(h / 2 + 120 * np.sin(i / 2))), 18 + 2 * i,
                   (255 - 20 * i, 30 * (i % 8), 20 * i), -1, cv2.LINE_AA)
    cv2.putText(img, "shmkit", (170, 270), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 6,
                cv2.LINE_AA)


def crc(buf: Any) -> int:
    return zlib.crc32(memoryview(buf).cast("B"))


# -- the other process (Qt's second dialog: loadFromMemory) -------------------------------

def reader(png_key: str, raw_key: str) -> int:
    def say(*words: object) -> None:
        print(*words, flush=True)
    png_mem, raw_mem = QSharedMemory(png_key), QSharedMemory(raw_key)
    if not png_mem.attach() or not raw_mem.attach():
        say("error", png_mem.error, raw_mem.error)
        return 1
    png_mem.lock()
    encoded = bytes(png_mem.data())                  # copy out, as Qt's QBuffer does
    png_mem.unlock()
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        say("error", "the PNG did not decode")
        return 1
    say("png", f"{crc(image):08x}", *image.shape)

    raw_mem.lock()
    img = pixels(raw_mem)                            # no copy: our mapping's bytes
    base = ctypes.addressof(ctypes.c_char.from_buffer(raw_mem.data()))
    say("raw", f"{crc(img):08x}", img.ctypes.data - base, *img.shape)
    cv2.rectangle(img, SQUARE[0], SQUARE[1], SQUARE[2], -1)   # drawn into shared memory
    del img
    raw_mem.unlock()
    png_mem.detach()
    say("drew")
    sys.stdin.readline()                             # the writer says when to let go
    raw_mem.detach()
    say("detached")
    return 0


def hold_lock(raw_key: str) -> int:
    mem = QSharedMemory(raw_key)
    if not mem.attach():
        return 1
    mem.lock()
    print("locked", flush=True)
    sys.stdin.readline()                             # never returns: SIGKILLed holding it
    return 0


# -- the writer (Qt's first dialog: loadFromFile) -----------------------------------------

def main() -> int:
    png_key = f"shmkit example image (png) {os.getpid()}"
    raw_key = f"shmkit example image (raw) {os.getpid()}"
    png_mem, raw_mem = QSharedMemory(png_key), QSharedMemory(raw_key)
    problems = []
    children: list[subprocess.Popen[str]] = []

    def child(role: str, *keys: str) -> subprocess.Popen[str]:
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), role, *keys],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append(p)
        return p

    try:
        original = np.zeros(SHAPE, np.uint8)
        draw_scene(original)
        ok, encoded = cv2.imencode(".png", original)
        if not ok:
            raise SystemExit("FAILED: OpenCV could not encode the image")
        if not png_mem.create(len(encoded)):
            raise SystemExit(f"FAILED: create: {png_mem.error}")
        png_mem.lock()
        png_mem.data()[:] = encoded.tobytes()        # copy in
        png_mem.unlock()
        print(f"writer: {SHAPE[1]}x{SHAPE[0]} image, PNG {len(encoded)} bytes under key "
              f"{png_key!r} -> /dev/shm/{png_mem.native_key}")

        if not raw_mem.create(PIXELS_AT + original.nbytes):
            raise SystemExit(f"FAILED: create: {raw_mem.error}")
        raw_mem.lock()
        raw_mem.data()[:PIXELS_HEAD.size] = PIXELS_HEAD.pack(*SHAPE)
        shared = pixels(raw_mem)
        draw_scene(shared)                           # OpenCV draws straight into shared memory
        raw_mem.unlock()
        want = crc(original)
        print(f"writer: the same image drawn directly in shared memory, {shared.nbytes} bytes "
              f"of pixels, crc32 {want:08x}")
        if crc(shared) != want:
            problems.append("drawing in shared memory gave another image")

        r = child("--reader", png_key, raw_key)
        assert r.stdout is not None
        png_line, raw_line, drew = (r.stdout.readline().split() for _ in range(3))
        print(f"reader {r.pid}: PNG copied out and decoded: crc32 {' '.join(png_line[1:2])}, "
              f"shape {'x'.join(png_line[2:])}")
        print(f"reader {r.pid}: raw pixels through a NumPy view of its own mapping: crc32 "
              f"{' '.join(raw_line[1:2])}, at byte {' '.join(raw_line[2:3])} of the data "
              "(0 copies)")
        if png_line[:2] != ["png", f"{want:08x}"] or png_line[2:] != ["480", "640", "3"]:
            problems.append(f"the PNG did not arrive intact: {png_line}")
        if raw_line[:3] != ["raw", f"{want:08x}", str(PIXELS_AT)]:
            problems.append(f"the raw pixels did not arrive intact: {raw_line}")

        # the reader drew into the pixels we share: we see it, without any copy
        raw_mem.lock()
        expected = original.copy()
        cv2.rectangle(expected, SQUARE[0], SQUARE[1], SQUARE[2], -1)
        seen = crc(shared) == crc(expected)
        raw_mem.unlock()
        print(f"writer: the reader's yellow square is in the shared pixels: {seen}")
        if drew != ["drew"] or not seen:
            problems.append("the reader's drawing did not show up in shared memory")

        png_mem.detach()                             # the reader detached already: freed
        freed_png = not os.path.exists(f"/dev/shm/{png_mem.native_key}")
        print(f"writer: detached the PNG segment, the last to do so; freed: {freed_png}")

        # a process dies holding the lock: the next lock() still succeeds, and says so
        h = child("--hold-lock", raw_key)
        assert h.stdout is not None
        if h.stdout.readline().strip() != "locked":
            problems.append("the lock holder did not start")
        os.kill(h.pid, signal.SIGKILL)
        h.wait(30)
        got = raw_mem.lock()
        print(f"writer: lock() after its holder was SIGKILLed: {got}, owner_died "
              f"{raw_mem.owner_died}")
        if not (got and raw_mem.owner_died):
            problems.append("the lock of a dead holder was not recovered")
        else:
            if crc(shared) != crc(expected):
                problems.append("the pixels changed under the dead holder")
            raw_mem.unlock()

        del shared
        raw_mem.detach()                             # the reader still has it: not freed yet
        still = os.path.exists(f"/dev/shm/{raw_mem.native_key}")
        out, _ = r.communicate("detach\n", timeout=30)
        freed_raw = not os.path.exists(f"/dev/shm/{raw_mem.native_key}")
        print(f"writer: detached the raw segment while the reader was attached: still there "
              f"{still}; the reader detached ({out.strip()}): freed {freed_raw}")
        if not (freed_png and still and freed_raw and r.returncode == 0):
            problems.append("a segment was not freed exactly at its last detach")
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
            c.wait(10)
        for mem in (png_mem, raw_mem):
            if mem.is_attached():
                mem.detach()
    if problems:
        for why in problems:
            print(f"FAILED: {why}", file=sys.stderr)
        return 1
    print("OK: an OpenCV image went by key to another process as PNG (copied) and as raw "
          "pixels (zero-copy), CRC-32s matched both ways, a dead lock holder was recovered, "
          "each segment was freed at its last detach")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reader"]:
        sys.exit(reader(*sys.argv[2:4]))
    if sys.argv[1:2] == ["--hold-lock"]:
        sys.exit(hold_lock(sys.argv[2]))
    sys.exit(main())
