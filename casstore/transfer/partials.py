"""Partial downloads: each blob is assembled in a file owned by one writer
(``tmp/downloads/<hex>.<writer>.part``) with a progress record of the byte ranges written
(``.progress``). A later run adopts the partial of a writer that is gone and fetches only the
rest; it never writes into a live writer's file, and nothing in a shared ``tmp/`` is trusted
because of its name (docs/architecture.md, invariants 6 and 8). The record is only a hint: the
whole-file hash decides what is published."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from casstore.errors import InvalidInput
from casstore.fs.writers import gone, parse_writer
from casstore.model.chunkmap import ChunkMap
from casstore.model.digest import Digest
from casstore.model.strictjson import load_file
from casstore.transfer.frontier import Frontier

log = logging.getLogger("casstore")


def merge(ranges: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        elif b > a:
            out.append([a, b])
    return out


def gaps(size: int, done: list[list[int]]) -> list[tuple[int, int]]:
    out, pos = [], 0
    for a, b in merge(done):
        if a > pos:
            out.append((pos, a))
        pos = max(pos, b)
    if pos < size:
        out.append((pos, size))
    return out


@dataclass
class Part:
    job: BlobJob
    start: int
    pos: int
    end: int
    active: bool = False
    asked: int = 0  # the end of the range requested now: bytes up to it are already on their way
    asked_at: float = 0.0  # when that request began (monotonic), and from where
    asked_from: int = 0


@dataclass(eq=False)  # one per download attempt: compared and hashed by identity (scheduler.py keys on it)
class BlobJob:
    digest: Digest
    size: int
    path: Path  # the partial file (for a small blob, the final name: only for messages)
    record: Path | None  # its progress record (None for a small blob)
    fd: int = -1
    # A small blob is assembled in memory instead (download.py), in a buffer made when its first
    # bytes arrive: every blob's job starts at once, only ``jobs`` of them are downloading.
    in_memory: bool = False
    buf: bytearray | None = None
    done: list[list[int]] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    adopted: int = 0
    prefilled: int = 0  # copied from local blobs' chunks (delta.py)
    chunk_map: ChunkMap | None = None  # the remote's map of the blob, cached with it once it verifies
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None
    last_save: float = 0.0
    # Held by a thread from checking its part's room to advancing its position, and by a split
    # while it moves an end: no write runs past an end that moved (frontier.py).
    lock: threading.Lock = field(default_factory=threading.Lock)
    frontier: Frontier = field(init=False)

    def __post_init__(self) -> None:
        self.frontier = Frontier(self.lock)

    def written_from(self, at: int) -> int:
        """Under ``lock``: the end of the bytes already in the file contiguously from ``at``."""
        for a, b in self.ranges_done():
            if a <= at < b:
                return b
        return at

    def ranges_done(self) -> list[list[int]]:
        return merge(self.done + [[p.start, p.pos] for p in self.parts if p.pos > p.start])

    def save(self, force: bool = False) -> None:
        """Write the progress record: a hint for resuming (the whole-file hash decides), so it is
        replaced without fsync; its temp name is created exclusively, never through a link."""
        now = time.monotonic()
        if self.record is None or (not force and now - self.last_save < 1.0):
            return
        self.last_save = now
        tmp = self.record.with_name(self.record.name + ".tmp")
        data = json.dumps({"digest": str(self.digest), "size": self.size, "done": self.ranges_done()}).encode()
        unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, self.record)

    def close(self, *, keep: bool) -> None:
        """Close the partial; keep it (with its progress record) for resuming, or remove it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.record is None:
            return
        if keep:
            try:
                self.save(force=True)
            except OSError:
                pass
            return
        for p in (self.path, self.record):
            unlink(p)


def unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def open_partial(path: Path, size: int) -> int | None:
    """Open an adopted partial for writing only if it is what a casstore writer leaves: a regular
    file (not a symlink: O_NOFOLLOW), ours (same uid), with one link, of the blob's size.
    Anything else is removed by name (never through it) and None returned."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        fd = -1
    if fd >= 0:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_nlink == 1 and st.st_size == size:
            return fd
        os.close(fd)
    log.warning("not resuming from %s: not a regular single-link file of this user and %d bytes", path, size)
    unlink(path)
    return None


def read_record(rec: Path, d: Digest, size: int) -> list[list[int]] | None:
    """The ranges a progress record says are done, if it is a well-formed record for this blob."""
    try:
        info = load_file(rec, what="progress record", max_bytes=1 << 20, follow_symlinks=False)
        if not isinstance(info, dict) or info.get("digest") != str(d) or info.get("size") != size:
            return None
        done = info.get("done")
        if not isinstance(done, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r) and 0 <= r[0] <= r[1] <= size
            for r in done
        ):
            return None
        return merge([list(r) for r in done])
    except (OSError, InvalidInput):
        return None


def fresh(store, writer: str, d: Digest, size: int) -> BlobJob:
    """A new sparse partial of the blob's size, created exclusively."""
    mine = store.layout.downloads / f"{d.hex}.{writer}.part"
    job = BlobJob(d, size, mine, mine.with_suffix(".progress"))
    unlink(mine)
    job.fd = os.open(job.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.ftruncate(job.fd, size)
    return job


def adopt(store, writer: str, d: Digest, size: int, stale_after: float) -> BlobJob:
    """Our partial for ``d``: a gone writer's (renamed to us), or a new sparse file."""
    dl = store.layout.downloads
    mine = dl / f"{d.hex}.{writer}.part"
    record = mine.with_suffix(".progress")
    job = BlobJob(d, size, mine, record)
    for rec in sorted(dl.glob(f"{d.hex}.*.progress")):
        other = rec.name[len(d.hex) + 1 : -len(".progress")]
        part = rec.with_suffix(".part")
        try:
            if not gone(parse_writer(other), rec.lstat().st_mtime, store.now(), stale_after):
                continue  # a live writer's file: never touched
        except FileNotFoundError:
            continue
        done = read_record(rec, d, size)
        if done is None:
            continue
        try:
            os.rename(part, job.path)  # renames a planted symlink itself, never its target
            os.rename(rec, record)
        except OSError:
            continue
        fd = open_partial(job.path, size)
        if fd is None:
            unlink(record)
            break
        job.fd, job.done = fd, done
        job.adopted = sum(b - a for a, b in done)
        log.info("resuming %s from %s: %d of %d bytes already here", d, rec.name, job.adopted, size)
        return job
    return fresh(store, writer, d, size)
