"""`cas verify`'s check of a small blob in one open, fstat and read (the common case: a regular,
right-sized file whose bytes are right), shared by verify's own thread and its helper process.

A store of many small blobs is checked at the speed of the Python around each one, under one
GIL: a second thread of it was slower, not faster (ops/verify.py). So verify hands its small
blobs to a helper process, ``python -m casstore.ops.quickcheck BLOBS_DIR LARGE``, which reads
batches of ``hex<TAB>size`` lines on stdin (a blank line ends a batch) and answers each batch
with a line per blob that is not simply right (``R hex ino size mtime_ns``: right bytes, not
stamped, as seen; ``O hex``: anything else, which verify checks again itself to say what is
wrong), then a blank line. The helper only reads: verify stamps (only a blob still as the helper
saw it), reports and quarantines.
"""

from __future__ import annotations

import os
import stat
import sys

import blake3

from casstore.store.stamps import is_stamped

OK, RESTAMP, ODD = 0, 1, 2


def quick(path: str, h: str, size: int | None, large: int) -> tuple[int, os.stat_result | None]:
    """OK or RESTAMP (with the blob's stat) when ``path`` holds the bytes digest ``h`` names;
    ODD for anything else (missing, not a regular file, ``large`` or more, the wrong size or
    bytes), which the caller checks the slow way."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # never blocks on a FIFO
    except OSError:
        return ODD, None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size >= large or (size is not None and st.st_size != size):
            return ODD, None
        data = os.read(fd, st.st_size + 1)
    except OSError:
        return ODD, None
    finally:
        os.close(fd)
    if len(data) != st.st_size or blake3.blake3(data).hexdigest() != h:
        return ODD, None
    return (OK if is_stamped(st) else RESTAMP), st


def serve(blobs: str, large: int, inp, out) -> None:
    """The helper's loop (``inp``, ``out``: binary streams)."""
    for line in inp:
        if line == b"\n":
            out.write(b"\n")
            out.flush()
            continue
        h, _, size = line.rstrip(b"\n").decode("ascii").partition("\t")
        status, st = quick(f"{blobs}{h[:2]}/{h}", h, int(size) if size else None, large)
        if status == RESTAMP and st is not None:
            out.write(f"R {h} {st.st_ino} {st.st_size} {st.st_mtime_ns}\n".encode("ascii"))
        elif status == ODD:
            out.write(f"O {h}\n".encode("ascii"))


class Helper:
    """The helper process. Batches are written as they come (``submit``) and answered in order
    to a thread that reads them: the writer never waits for an answer, so the helper never waits
    for a thread of verify's to get the GIL back (a batch at a time, each answer waited for,
    was slower than no helper: 1.4–1.7 s against 1.3 s at 100k blobs)."""

    def __init__(self, blobs: str, large: int) -> None:
        import subprocess
        import threading
        from collections import deque

        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH"))))}
        self.proc = subprocess.Popen([sys.executable, "-m", "casstore.ops.quickcheck", blobs, str(large)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._waiting: deque = deque()  # a Future per batch written and not answered yet
        self._reader = threading.Thread(target=self._read, name="verify-helper", daemon=True)
        self._reader.start()

    def submit(self, items: list[tuple[str, int | None]]):
        """A Future of {hex: ("O",) or ("R", ino, size, mtime_ns)} for the blobs of ``items`` that
        are not simply right; OSError if the helper is gone."""
        from concurrent.futures import Future

        assert self.proc.stdin is not None
        fut: Future = Future()
        self._waiting.append(fut)
        try:
            self.proc.stdin.write(b"".join(f"{h}\t{'' if s is None else s}\n".encode("ascii") for h, s in items)
                                  + b"\n")
            self.proc.stdin.flush()
        except OSError:
            self._waiting.remove(fut)
            raise
        return fut

    def _read(self) -> None:
        assert self.proc.stdout is not None
        out: dict[str, tuple[str, ...]] = {}
        for line in self.proc.stdout:
            if line == b"\n":
                self._waiting.popleft().set_result(out)
                out = {}
                continue
            kind, h, *seen = line.decode("ascii").split()
            out[h] = (kind, *seen)
        while self._waiting:  # the helper stopped: every batch not answered falls back
            self._waiting.popleft().set_exception(EOFError(f"the verify helper stopped (exit status {self.proc.wait()})"))

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, ValueError, TimeoutError):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)


if __name__ == "__main__":
    try:
        serve(os.path.join(sys.argv[1], ""), int(sys.argv[2]), sys.stdin.buffer, sys.stdout.buffer)
    except (KeyboardInterrupt, BrokenPipeError):  # verify stopped: it says why
        sys.exit(1)
