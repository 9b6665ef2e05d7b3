"""A partial file's BLAKE3, taken while it is downloaded, in order (docs/architecture.md, invariant 4).

Parts of a blob are written by several threads in any order. The thread whose write lands at the
hashed frontier hashes those bytes from the buffer it wrote them from, then reads back from the
file what other parts already wrote contiguously after them. Whatever is left unhashed when the
download ends (a resumed partial, bytes copied from local chunks, a part behind a gap) is read
back when the blob is published. Bytes that arrive in order are thus never read again.

Why the digest is the file's: a byte is hashed only once it is below its writer's position, and
nothing below a part's position is written again. A retry resumes at the position, and a split
(scheduler.py) moves a part's end only under the job's lock, which a writer holds from checking
its room to advancing its position, so no write ever runs past an end that moved.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import blake3

from casstore.model.digest import Digest, hash_range


class Frontier:
    __slots__ = ("lock", "at", "read_back", "_busy", "_h")

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock  # the job's (partials.BlobJob.lock)
        self.at = 0  # bytes [0, at) are hashed
        self.read_back = 0  # of those, read from the file rather than hashed as they arrived
        self._busy = False  # a thread is extending the hash
        self._h = blake3.blake3(max_threads=blake3.blake3.AUTO)

    def claim(self, start: int) -> bool:
        """Under ``lock``, by a writer that has just written bytes at ``start``: whether it is to
        hash them (they continue the hash, and no other thread is extending it)."""
        if self._busy or start != self.at:
            return False
        self._busy = True
        return True

    def extend(self, data: memoryview, fd: int, written: Callable[[int], int]) -> None:
        """After a successful ``claim``: hash ``data`` (the bytes just written at the frontier),
        then what ``written(at)`` says is already in the file after them, read from ``fd``. The
        claim is given up under the lock in the same step that finds nothing more to hash, so a
        writer that lands at the frontier right after takes it over."""
        try:
            self._h.update(data)
            self.at += len(data)  # only the claimant moves ``at``; ``claim`` looks at ``_busy`` first
            while True:
                with self.lock:
                    end = written(self.at)
                    if end <= self.at:
                        self._busy = False
                        return
                if not self._read(fd, end):
                    break  # the file is shorter than its parts say: publishing finds out
        except BaseException:
            with self.lock:
                self._busy = False
            raise
        with self.lock:
            self._busy = False

    def finish(self, fd: int) -> tuple[Digest, int]:
        """Once every writer has stopped: the digest and size of the whole file, reading back
        only what was not hashed yet."""
        with self.lock:
            if self._busy:
                raise RuntimeError("a download thread is still hashing this file")
            self._busy = True
        self._read(fd, None)
        return Digest(self._h.hexdigest()), self.at

    def _read(self, fd: int, end: int | None) -> int:
        """Hash the file from ``at`` to ``end`` (None: its end). If this raises, the hash and ``at``
        may disagree; the part's error then fails the blob before anything is published."""
        n = hash_range(self._h, fd, self.at, end)
        self.at += n
        self.read_back += n
        return n
