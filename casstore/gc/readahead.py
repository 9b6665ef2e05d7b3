"""GC's read of a large store's manifests in a helper process, while GC lists its blobs.

GC lists the blobs before it reads the refs (a writer publishes in the other order), and learns
which manifests it needs from the refs, so in one process the two ran one after the other: at
1M blobs, 1.4 s of listing, then 2.3 s reading, hashing and parsing 10,000 manifests. A
manifest's bytes are fixed by its name, so one read early says what it would say later. The
helper (``main``, given the store's ``manifests`` directory) lists it and reads each
manifest as ``Store.manifest_blobs`` does (checked against its digest, then
``model/manifest.blob_sizes``), writing a record per manifest it could read: its digest (32
bytes), the number of blobs (4 bytes, little-endian), their digests (32 bytes each), their
sizes (8 bytes each, little-endian). One it could not read it leaves out: GC reads that one
itself, so that the error it stops on names it. GC takes each record as it comes, so its own
work on the first manifests overlaps the helper's reading of the rest.
"""

from __future__ import annotations

import os
import queue
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

HEAD = struct.Struct("<32sI")
MIN_MANIFESTS = 2_000  # at 1,000 (100k blobs) a helper measured about even with none: 0.58-0.78 s against 0.65-0.84 s


def count(manifests: str) -> int:
    """How many manifests there are, by name (no stat): whether a helper pays."""
    n = 0
    try:
        subs = os.listdir(manifests)
    except OSError:  # GC's own read says what is wrong
        return 0
    for sub in subs:
        try:
            n += len(os.listdir(os.path.join(manifests, sub)))
        except (NotADirectoryError, FileNotFoundError):
            continue
    return n


def serve(manifests: str, out, part: int = 0, parts: int = 1) -> None:
    """The helper's work: every manifest under ``manifests`` that reads, checks and parses, as a
    record; of the fan-out directories, every ``parts``-th from the ``part``-th (helpers side by side)."""
    import blake3

    from casstore.errors import CasError
    from casstore.model.manifest import MAX_MANIFEST_BYTES, blob_sizes
    from casstore.model.strictjson import read_file

    for sub in sorted(os.listdir(manifests))[part::parts]:
        try:
            names = sorted(os.listdir(os.path.join(manifests, sub)))
        except (NotADirectoryError, FileNotFoundError):
            continue
        for name in names:
            mh = name[:-5]
            if len(name) != 69 or not name.endswith(".json") or mh[:2] != sub:
                continue
            try:
                data = read_file(os.path.join(manifests, sub, name), max_bytes=MAX_MANIFEST_BYTES,
                                 follow_symlinks=False)
                if blake3.blake3(data).hexdigest() != mh:
                    continue
                named = blob_sizes(data)
                raw = bytes.fromhex(mh + "".join(named))
            except (OSError, CasError, ValueError):
                continue
            out.write(HEAD.pack(raw[:32], len(named)) + raw[32:] + array("q", named.values()).tobytes())
    out.flush()


class Readahead:
    """The helper, and a thread that drains its pipe as it writes: a full pipe would stop it
    while GC is still listing blobs. The thread gets the GIL only when GC's own thread lets it
    go (every 5 ms), so the pipe is made 1 MiB where Linux allows and drained a megabyte at a
    time (GC's read at 1M blobs, 6 alternating runs each: 4.87-5.41 s against 4.90-7.13 s with
    the default 64 KiB pipe)."""

    def __init__(self, manifests: str, part: int = 0, parts: int = 1) -> None:
        import subprocess
        import threading

        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH"))))}
        # Its stderr is dropped: whatever stops it, GC reads the rest itself and says what is wrong.
        # -c, not -m: this module is imported by its package, and runpy would run it a second time.
        self.proc = subprocess.Popen([sys.executable, "-c", "from casstore.gc.readahead import main; main()", manifests,
                                      str(part), str(parts)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        try:
            import fcntl

            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, 1 << 20)
        except (ImportError, AttributeError, OSError):  # not Linux, or over the system's limit: the default size
            pass
        # At most 64 chunks of 1 MiB wait for GC (it lists blobs first): beyond, the helper waits.
        self._q: queue.Queue = queue.Queue(maxsize=64)
        self._reader = threading.Thread(target=self._drain, name="gc-readahead", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        try:
            while chunk := os.read(self._fd, 1 << 20):
                self._q.put(chunk)
        except OSError:
            pass
        finally:
            self._q.put(None)

    def records(self) -> Iterator[tuple[str, dict[str, int]]]:
        """(manifest hex, {blob hex: size}) for each manifest the helper read, as they come, until it is done."""
        return parse(iter(self._q.get, None))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # GC stopped early: nothing more is wanted
        self.proc.wait()
        while self._reader.is_alive():  # at the pipe's end now, unless waiting for room in the queue
            try:
                self._q.get(timeout=0.1)
            except queue.Empty:
                pass
        self._reader.join()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def parse(chunks: Iterable[bytes]) -> Iterator[tuple[str, dict[str, int]]]:
    """The records in the helper's output, cut into chunks anywhere; one cut short (the helper
    stopped mid-write) is left out."""
    buf, pos = b"", 0
    for chunk in chunks:
        buf, pos = buf[pos:] + chunk, 0
        while len(buf) - pos >= HEAD.size:
            md, n = HEAD.unpack_from(buf, pos)
            start, end = pos + HEAD.size, pos + HEAD.size + 40 * n
            if end > len(buf):
                break
            h = buf[start:start + 32 * n].hex()
            sizes = array("q")
            sizes.frombytes(buf[start + 32 * n:end])
            pos = end
            yield md.hex(), dict(zip([h[i:i + 64] for i in range(0, len(h), 64)], sizes.tolist()))


@contextmanager
def started(manifests: str, wanted: bool) -> Iterator[Readahead | None]:
    """A helper reading the manifests under ``manifests`` if ``wanted`` and there are enough of them."""
    with shared(manifests, 1 if wanted else 0) as helpers:
        yield helpers[0] if helpers else None


@contextmanager
def shared(manifests: str, parts: int) -> Iterator[list[Readahead]]:
    """Up to ``parts`` helpers, each reading its share of the manifests under ``manifests``, if there
    are enough of them to pay for a process each; none if no process is to be had (the caller
    then reads them itself)."""
    helpers: list[Readahead] = []
    try:
        if parts and count(manifests) >= MIN_MANIFESTS * parts:
            try:
                for part in range(parts):
                    helpers.append(Readahead(manifests, part, parts))
            except OSError:
                for h in helpers:
                    h.close()
                helpers = []
        yield helpers
    finally:
        for h in helpers:
            h.close()


def main() -> None:
    try:
        part, parts = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (0, 1)
        serve(sys.argv[1], sys.stdout.buffer, part, parts)
    except (KeyboardInterrupt, BrokenPipeError):  # GC stopped, or has all it needs
        sys.exit(1)
