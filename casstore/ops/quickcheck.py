"""`cas verify`'s check of a small blob in one open, fstat and read (the common case: a regular,
right-sized file whose bytes are right), shared by verify's own thread and its helper process.

A store of many small blobs is checked at the speed of the Python around each one, under one
GIL: a second thread of it was slower, not faster (ops/verify.py). So verify hands its small
blobs to a helper process, ``python -m casstore.ops.quickcheck BLOBS LARGE MANIFESTS``, which reads
batches of ``hex<TAB>size`` lines on stdin (a blank line ends a batch) and answers each batch
with a line per blob that is not simply right (``R hex ino size mtime_ns``: right bytes, not
stamped, as seen; ``O hex``: anything else, which verify checks again itself to say what is
wrong), then a blank line. Before the blobs, while verify has only its list of manifests, the
helpers read those too (``M<TAB>hex`` lines): verify's own reading of 1,000 manifests was 0.4 s of one core with the other idle.
The helper only reads: verify stamps (only a blob still as the helper saw it), reports and
quarantines.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Any

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


def manifests(where: str, hexes: list[str], large: int, out) -> None:
    """What verify needs of each manifest ``hexes`` names (under ``where``, the store's manifests
    directory), as it would read it (ops/verify.py, ``_Refs``): for the batch, ``D XX records``
    per fan-out directory (the hex of 40 bytes per entry: digest, then size in 8 little-endian
    bytes), ``L blob size`` per entry of ``large`` bytes or more, ``F manifest blob path`` per
    JSON or safetensors entry (the path's UTF-8 as hex),
    ``X manifest`` for one not read here, which verify reads itself to say what is wrong."""
    from casstore.errors import CasError
    from casstore.model.formats import CHECKED
    from casstore.model.manifest import MAX_MANIFEST_BYTES, entry_records
    from casstore.model.strictjson import read_file

    by_dir: dict[str, bytearray] = {}
    for mh in hexes:
        try:
            data = read_file(f"{where}{mh[:2]}/{mh}.json", max_bytes=MAX_MANIFEST_BYTES, follow_symlinks=False)
            recs = entry_records(data) if blake3.blake3(data).hexdigest() == mh else None
        except (OSError, CasError):
            recs = None
        if recs is None:
            out.write(f"X {mh}\n".encode("ascii"))
            continue
        if recs.sizes and max(recs.sizes) >= large:
            for h, size in zip(recs.hexes, recs.sizes):
                if size >= large:
                    out.write(f"L {h} {size}\n".encode("ascii"))
        pack(recs.hexes, recs.sizes, by_dir)
        for h, path in zip(recs.hexes, recs.paths):
            if path.endswith(CHECKED):
                out.write(f"F {mh} {h} {path.encode().hex()}\n".encode("ascii"))
    for sub, rec in by_dir.items():
        out.write(f"D {sub} {rec.hex()}\n".encode("ascii"))


def pack(hexes: list[str], sizes: list[int], by_dir: dict[str, bytearray]) -> None:
    """Each entry's record, its digest's 32 bytes and its size in 8 little-endian ones, appended
    to its fan-out directory's bytes (verify's ``_Refs``)."""
    for h, size in zip(hexes, sizes):
        rec = by_dir.get(h[:2])
        if rec is None:
            rec = by_dir[h[:2]] = bytearray()
        rec += bytes.fromhex(h)
        rec += size.to_bytes(8, "little")


def serve(blobs: str, large: int, where: str, inp, out) -> None:
    """The helper's loop (``inp``, ``out``: binary streams). A batch of ``M<TAB>hex`` lines asks
    for manifests (``manifests``), one of ``hex<TAB>size`` lines for blobs."""
    wanted: list[str] = []
    for line in inp:
        if line == b"\n":
            if wanted:
                manifests(where, wanted, large, out)
                wanted = []
            out.write(b"\n")
            out.flush()
            continue
        if line.startswith(b"M\t"):
            wanted.append(line[2:].rstrip(b"\n").decode("ascii"))
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

    def __init__(self, blobs: str, large: int, where: str) -> None:
        import subprocess
        import threading
        from collections import deque

        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH"))))}
        self.proc = subprocess.Popen([sys.executable, "-m", "casstore.ops.quickcheck", blobs, str(large), where],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._waiting: deque = deque()  # a Future per batch written and not answered yet
        self._reader = threading.Thread(target=self._read, name="verify-helper", daemon=True)
        self._reader.start()

    def submit(self, items: list[tuple[str, int | None]]):
        """A Future of {hex: ("O",) or ("R", ino, size, mtime_ns)} for the blobs of ``items`` that
        are not simply right; OSError if the helper is gone."""
        return self._batch(b"".join(f"{h}\t{'' if s is None else s}\n".encode("ascii") for h, s in items))

    def submit_manifests(self, hexes: list[str]):
        """A Future of ``manifests``' lines for these manifests, each split (a list under the key
        ""); OSError if the helper is gone."""
        return self._batch(b"".join(f"M\t{h}\n".encode("ascii") for h in hexes))

    def _batch(self, lines: bytes):
        from concurrent.futures import Future

        assert self.proc.stdin is not None
        fut: Future = Future()
        self._waiting.append(fut)
        try:
            self.proc.stdin.write(lines + b"\n")
            self.proc.stdin.flush()
        except OSError:
            self._waiting.remove(fut)
            raise
        return fut

    def _read(self) -> None:
        assert self.proc.stdout is not None
        out: dict[str, Any] = {}  # hex -> a blob's answer; "" -> a manifest batch's lines
        for line in self.proc.stdout:
            if line == b"\n":
                self._waiting.popleft().set_result(out)
                out = {}
                continue
            kind, h, *seen = line.decode("ascii").split()
            if kind in ("D", "F", "L", "X"):  # a manifest batch's
                out.setdefault("", []).append((kind, h, *seen))
            else:
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
        serve(os.path.join(sys.argv[1], ""), int(sys.argv[2]), os.path.join(sys.argv[3], ""), sys.stdin.buffer,
              sys.stdout.buffer)
    except (KeyboardInterrupt, BrokenPipeError):  # verify stopped: it says why
        sys.exit(1)
