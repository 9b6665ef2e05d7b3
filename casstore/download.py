"""The download engine: missing blobs from remotes into a store, parallel, resumable, verified.

- Work is a shared queue of byte ranges ("parts") across all blobs; `jobs` workers take parts.
  An idle worker splits the in-flight part with the most bytes left, so one slow connection
  cannot stall the tail.
- Each blob is assembled in a partial file owned by one writer (``tmp/downloads/<hex>.<writer>``)
  with a progress record of the ranges already written. A later run adopts the partial of a
  writer that is gone (dead pid on this host, or a record not refreshed for `stale_after`) and
  fetches only the rest; it never writes into a live writer's file.
- A blob is published (linked into ``blobs/``) only after the assembled file hashes to its
  digest and has its size. Hashing the assembled file runs at memory-mapped, multithreaded
  speed from the page cache, which measured faster here than hashing in order while streaming
  out-of-order ranges would allow (see docs/architecture.md).
- Retries with exponential backoff and jitter, honouring Retry-After; a stall timeout and a
  low-speed limit end dead or dripping connections; then the next mirror; then an error naming
  the URL, the digest and the last failure.
- A per-blob lock file (host, pid, time; refreshed while held) stops two processes downloading
  the same blob. It only saves bandwidth: if it fails, both download and the first link wins.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import (HOST, fsync_dir, link_fd_no_replace, makedirs, out_of_space, process_alive, read_holder,
                     temp_name, write_file)
from .digest import Digest, hash_fd
from .errors import CasError, IntegrityError, InvalidInput, LockTimeout, NotFound, RemoteError
from .ratelimit import RateLimiter
from .remotes.base import Remote, blob as blob_key
from .store import Store, touch
from .strictjson import load_file

log = logging.getLogger("casstore")

MiB = 1 << 20


@dataclass
class Settings:
    jobs: int = 8
    part_size: int = 64 * MiB
    min_split: int = 4 * MiB
    attempts: int = 5
    backoff: float = 0.5
    backoff_cap: float = 30.0
    low_speed_limit: int = 1024  # bytes/s; below this for low_speed_time, the connection is dropped
    low_speed_time: float = 30.0
    lock_refresh: float = 5.0
    stale_after: float = 60.0  # a lock or partial not refreshed for this long belongs to nobody
    lock_timeout: float = 3600.0  # longest wait for another process downloading the same blob
    rate: float | None = None

    @classmethod
    def from_env(cls, **over) -> "Settings":
        s = cls(**over)
        for name, env in (("low_speed_time", "CAS_LOW_SPEED_TIME"), ("backoff", "CAS_RETRY_BACKOFF"),
                          ("attempts", "CAS_RETRY_ATTEMPTS"), ("stale_after", "CAS_STALE_AFTER"),
                          ("part_size", "CAS_PART_SIZE"), ("lock_timeout", "CAS_LOCK_TIMEOUT")):
            if os.environ.get(env):
                setattr(s, name, type(getattr(s, name))(float(os.environ[env])))
        return s


@dataclass
class Stats:
    blobs: int = 0
    bytes_total: int = 0
    bytes_downloaded: int = 0  # received from the network
    bytes_reused: int = 0  # already in the store, or fetched by another process meanwhile
    bytes_resumed: int = 0  # adopted from an earlier, interrupted download
    retries: int = 0
    elapsed: float = 0.0

    def to_json(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _who(holder: dict | None) -> str:
    return f"pid {holder['pid']} on {holder['host']}" if holder else "another process"


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def _merge(ranges: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        elif b > a:
            out.append([a, b])
    return out


def _gaps(size: int, done: list[list[int]]) -> list[tuple[int, int]]:
    gaps, pos = [], 0
    for a, b in _merge(done):
        if a > pos:
            gaps.append((pos, a))
        pos = max(pos, b)
    if pos < size:
        gaps.append((pos, size))
    return gaps


@dataclass
class Part:
    job: "BlobJob"
    start: int
    pos: int
    end: int
    active: bool = False


@dataclass
class BlobJob:
    digest: Digest
    size: int
    path: Path  # the partial file
    record: Path  # its progress record
    fd: int = -1
    done: list[list[int]] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    adopted: int = 0
    urls: set[str] = field(default_factory=set)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None
    last_save: float = 0.0

    def ranges_done(self) -> list[list[int]]:
        return _merge(self.done + [[p.start, p.pos] for p in self.parts if p.pos > p.start])

    def save(self, force: bool = False) -> None:
        """Write the progress record: a hint for resuming (the whole-file hash decides), so it is
        replaced without fsync; its temp name is created exclusively, never through a link."""
        now = time.monotonic()
        if not force and now - self.last_save < 1.0:
            return
        self.last_save = now
        tmp = self.record.with_name(self.record.name + ".tmp")
        data = json.dumps({"digest": str(self.digest), "size": self.size, "done": self.ranges_done()}).encode()
        _unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, self.record)


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
    _unlink(path)
    return None


def _read_record(rec: Path, d: Digest, size: int) -> list[list[int]] | None:
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
        return _merge([list(r) for r in done])
    except (OSError, InvalidInput):
        return None


class Downloader:
    def __init__(self, store: Store, remotes: list[Remote], settings: Settings | None = None, progress=None) -> None:
        if not remotes:
            raise InvalidInput("no remote to download from")
        self.store = store
        self.remotes = remotes
        self.s = settings or Settings()
        self.progress = progress  # callable(done_bytes, total_bytes)
        self.stats = Stats()
        self.limiter = RateLimiter(self.s.rate) if self.s.rate else None
        self.dl_dir = store.layout.tmp / "downloads"
        self.lock_dir = store.layout.tmp / "locks"
        self.writer = temp_name().removesuffix(".tmp")
        self.queue: list[Part] = []
        self.inflight: list[Part] = []
        self._wake = asyncio.Event()
        self._progress_done = 0

    # public ---------------------------------------------------------------------------------

    async def fetch(self, wants: dict[Digest, int]) -> Stats:
        """Bring every (digest, size) into the store; returns what it cost."""
        t0 = time.monotonic()
        makedirs(self.dl_dir)
        makedirs(self.lock_dir)
        self.stats.blobs = len(wants)
        self.stats.bytes_total = sum(wants.values())
        missing = {}
        for d, size in wants.items():
            if touch(self.store.blob_path(d)):
                self.stats.bytes_reused += size
            else:
                missing[d] = size
        self._progress_done = self.stats.bytes_reused
        self._check_space(missing)
        await self._probe_ranges(missing)
        workers = [asyncio.create_task(self._worker()) for _ in range(max(1, self.s.jobs))]
        try:
            results = await asyncio.gather(*(self._one(d, size) for d, size in missing.items()), return_exceptions=True)
        finally:
            self._wake.set()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        self.stats.elapsed = time.monotonic() - t0
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return self.stats

    async def _probe_ranges(self, missing: dict[Digest, int]) -> None:
        """Ask for one byte of a blob that could be split, so a server that ignores Range is
        known before parts are scheduled or split (each part would otherwise fetch the object
        from its start)."""
        big = next((d for d, size in missing.items() if size > self.s.part_size or size >= 2 * self.s.min_split), None)
        for r in self.remotes:
            if big is None or r.ranges is not None:
                continue
            try:
                async for _ in r.read(blob_key(big, missing[big]), 0, 1):
                    pass
            except CasError as e:
                log.debug("range probe of %s failed: %s", r.describe(blob_key(big)), e)

    # space, locks and partials -----------------------------------------------------------------

    def _check_space(self, missing: dict[Digest, int]) -> None:
        needed = sum(missing.values())
        for p in self.dl_dir.glob("*.part"):
            try:
                if Digest(p.name.split(".", 1)[0]) in missing:
                    needed -= p.stat().st_blocks * 512
            except (InvalidInput, OSError):
                continue
        st = os.statvfs(self.store.layout.tmp)
        if needed > st.f_bavail * st.f_frsize:
            raise out_of_space(self.store.layout.tmp, needed)

    async def _lock(self, d: Digest) -> Path | None:
        """Take the blob's download lock; None if the blob appeared while we waited.

        The lock file is written complete and then linked into place, so a reader never sees
        an empty one and mistakes a starting holder for a dead one.
        """
        lock = self.lock_dir / f"{d.hex}.lock"
        warned = False
        t0 = last_said = time.monotonic()
        while True:
            if self.store.has_blob(d):
                return None
            data = json.dumps({"host": HOST, "pid": os.getpid(), "time": time.time()}).encode()
            if write_file(lock, data, self.store.layout.tmp, mode=0o664):
                return lock
            holder = read_holder(lock)
            if self._stale(lock, holder):
                if not warned:
                    log.warning("taking over stale download lock %s (held by %s)", lock, _who(holder))
                    warned = True
                _unlink(lock)
                continue
            waited = time.monotonic() - t0
            if waited > self.s.lock_timeout:
                raise LockTimeout(f"gave up after {waited:.0f}s waiting for {_who(holder)} to finish downloading "
                                  f"{d} (lock {lock}); CAS_LOCK_TIMEOUT sets how long to wait")
            if time.monotonic() - last_said >= 10:
                log.warning("waiting %.0fs so far for %s, which is downloading %s", waited, _who(holder), d)
                last_said = time.monotonic()
            await asyncio.sleep(0.2)

    def _stale(self, path: Path, holder: dict | None) -> bool:
        alive = process_alive(holder["host"], holder["pid"]) if holder else None
        if alive is not None:
            return not alive
        try:
            return self.store.now() - path.stat().st_mtime > self.s.stale_after
        except FileNotFoundError:
            return True

    def _adopt(self, d: Digest, size: int) -> BlobJob:
        """Our partial for ``d``: a dead writer's (renamed to us), or a new sparse file."""
        mine = self.dl_dir / f"{d.hex}.{self.writer}.part"
        job = BlobJob(d, size, mine, mine.with_suffix(".progress"))
        for rec in sorted(self.dl_dir.glob(f"{d.hex}.*.progress")):
            writer = rec.name[len(d.hex) + 1 : -len(".progress")]
            part = rec.with_suffix(".part")
            bits = writer.split(".")
            alive = process_alive(".".join(bits[:-2]), int(bits[-2])) if len(bits) >= 3 and bits[-2].isdigit() else None
            try:
                if alive or (alive is None and self.store.now() - rec.lstat().st_mtime < self.s.stale_after):
                    continue  # a live writer's file: never touched
            except FileNotFoundError:
                continue
            done = _read_record(rec, d, size)
            if done is None:
                continue
            try:
                os.rename(part, job.path)  # renames a planted symlink itself, never its target
                os.rename(rec, job.record)
            except OSError:
                continue
            fd = open_partial(job.path, size)
            if fd is None:
                _unlink(job.record)
                break
            job.fd, job.done = fd, done
            job.adopted = sum(b - a for a, b in done)
            log.info("resuming %s from %s: %d of %d bytes already here", d, rec.name, job.adopted, size)
            return job
        return self._fresh(d, size)

    # one blob ---------------------------------------------------------------------------------------

    async def _one(self, d: Digest, size: int) -> None:
        lock = await self._lock(d)
        if lock is None:
            self.stats.bytes_reused += size
            self._advance(size)
            return
        refresher = asyncio.create_task(self._refresh(lock))
        try:
            for attempt in (0, 1):
                job = self._adopt(d, size) if attempt == 0 else self._fresh(d, size)
                try:
                    await self._download(job)
                    await asyncio.to_thread(self._publish, job)
                except IntegrityError:
                    self._discard(job, keep=False)
                    if job.adopted and attempt == 0:
                        continue  # the adopted bytes may be the bad ones: once more from scratch
                    raise
                except (RemoteError, asyncio.CancelledError):
                    self._discard(job, keep=True)  # a network failure: the next run resumes
                    raise
                except BaseException:
                    self._discard(job, keep=False)
                    raise
                self._discard(job, keep=False)
                return
        finally:
            refresher.cancel()
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass

    def _fresh(self, d: Digest, size: int) -> BlobJob:
        mine = self.dl_dir / f"{d.hex}.{self.writer}.part"
        job = BlobJob(d, size, mine, mine.with_suffix(".progress"))
        _unlink(mine)
        job.fd = os.open(job.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.ftruncate(job.fd, size)
        return job

    async def _refresh(self, lock: Path) -> None:
        while True:
            await asyncio.sleep(self.s.lock_refresh)
            try:
                os.utime(lock)
            except OSError:
                pass

    async def _download(self, job: BlobJob) -> None:
        self.stats.bytes_resumed += job.adopted
        self._advance(job.adopted)
        step = self.s.part_size if self.remotes[0].ranges else job.size or 1
        for a, b in _gaps(job.size, job.done):
            for s in range(a, b, step):
                part = Part(job, s, s, min(b, s + step))
                job.parts.append(part)
                self.queue.append(part)
        self._wake.set()
        if job.parts:
            job.save(force=True)
            await job.finished.wait()
        while any(p.active for p in job.parts):  # let every writer of this file stop before it is closed
            await asyncio.sleep(0.01)
        if job.error is not None:
            raise job.error

    def _publish(self, job: BlobJob) -> None:
        os.fsync(job.fd)
        got, size = hash_fd(job.fd)
        where = ", ".join(sorted(job.urls)) or self.remotes[0].describe(blob_key(job.digest, job.size))
        if size != job.size or got != job.digest:
            raise IntegrityError(f"downloaded bytes for {job.digest} from {where} hash to {got} ({size} bytes); discarded")
        os.fchmod(job.fd, 0o444)
        final = self.store.blob_path(job.digest)
        makedirs(final.parent)
        if link_fd_no_replace(job.fd, job.path, final):
            fsync_dir(final.parent)
        else:
            touch(final)
        log.info("verified %s (%d bytes) from %s", job.digest, job.size, where)

    def _discard(self, job: BlobJob, *, keep: bool) -> None:
        """Close the partial; keep it (with its progress record) for resuming, or remove it."""
        if job.fd >= 0:
            os.close(job.fd)
            job.fd = -1
        if keep:
            try:
                job.save(force=True)
            except OSError:
                pass
            return
        for p in (job.path, job.record):
            _unlink(p)

    # workers -----------------------------------------------------------------------------------

    def _next_part(self) -> Part | None:
        while self.queue:
            p = self.queue.pop(0)
            if p.job.error is None:
                return p
        # Nothing queued: help the slowest in-flight part by taking the second half of what it has
        # left, if every remote serves ranges (a second whole-object GET would only add bytes).
        if not all(r.ranges is True for r in self.remotes):
            return None
        best = max((p for p in self.inflight if p.job.error is None), key=lambda p: p.end - p.pos, default=None)
        if best is None or best.end - best.pos < 2 * self.s.min_split:
            return None
        mid = best.pos + (best.end - best.pos) // 2
        mid -= mid % (64 << 10)
        if mid <= best.pos:
            return None
        new = Part(best.job, mid, mid, best.end)
        best.end = mid
        best.job.parts.append(new)
        return new

    async def _worker(self) -> None:
        while True:
            part = self._next_part()
            if part is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            part.active = True
            self.inflight.append(part)
            try:
                await self._run_part(part)
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # noqa: BLE001 - recorded on the blob, raised by its owner
                if part.job.error is None:
                    part.job.error = e
                part.job.finished.set()
            finally:
                part.active = False
                self.inflight.remove(part)
                self._wake.set()
            job = part.job
            if job.error is None and all(p.pos >= p.end for p in job.parts) and not any(p.active for p in job.parts):
                job.done = job.ranges_done()
                job.finished.set()

    async def _run_part(self, part: Part) -> None:
        job = part.job
        key = blob_key(job.digest, job.size)
        last: BaseException | None = None
        for i, remote in enumerate(self.remotes):
            another = i < len(self.remotes) - 1
            if remote.unreachable and another:
                log.debug("skipping %s: it refused a connection earlier in this run", remote.url)
                continue  # try it last, if at all
            for attempt in range(self.s.attempts):
                if part.pos >= part.end or job.error is not None:
                    return
                try:
                    await self._stream(remote, key, part)
                    return
                except NotFound as e:
                    last = e
                    break  # the next mirror may have it
                except RemoteError as e:
                    last = e
                    if not e.retryable or attempt == self.s.attempts - 1 or (remote.unreachable and another):
                        break
                    self.stats.retries += 1
                    delay = min(self.s.backoff_cap, self.s.backoff * 2**attempt) * random.uniform(0.5, 1.0)
                    if e.retry_after is not None:
                        delay = min(max(delay, e.retry_after), 300.0)
                    log.info("retrying %s [%d-%d) in %.1fs (attempt %d): %s", remote.describe(key), part.pos, part.end,
                             delay, attempt + 2, e)
                    await asyncio.sleep(delay)
                except OSError as e:
                    if e.errno == 28:
                        raise out_of_space(job.path, job.size) from e
                    raise
        urls = ", ".join(r.describe(key) for r in self.remotes)
        if isinstance(last, NotFound):
            raise NotFound(f"blob {job.digest} is not on any remote ({urls}): {last}") from last
        raise RemoteError(f"giving up on {job.digest} ({urls}) after {self.s.attempts} attempt(s) per remote: {last}") from last

    async def _stream(self, remote: Remote, key, part: Part) -> None:
        job = part.job
        window_start, window_bytes = time.monotonic(), 0
        stream = remote.read(key, part.pos, part.end)
        try:
            async for chunk in stream:
                room = part.end - part.pos  # may have shrunk: another worker took the rest
                if room <= 0 or job.error is not None:
                    break
                if len(chunk) > room:
                    chunk = chunk[:room]
                if self.limiter:
                    await self.limiter.take(len(chunk))
                n = os.pwrite(job.fd, chunk, part.pos)
                part.pos += n
                job.urls.add(remote.describe(key))
                self.stats.bytes_downloaded += n
                self._advance(n)
                window_bytes += n
                now = time.monotonic()
                if now - window_start >= self.s.low_speed_time:
                    if window_bytes / (now - window_start) < self.s.low_speed_limit:
                        raise RemoteError(
                            f"{remote.describe(key)} sent {window_bytes} bytes in {now - window_start:.0f}s, "
                            f"below {self.s.low_speed_limit} B/s", retryable=True)
                    window_start, window_bytes = now, 0
                job.save()
        finally:
            await stream.aclose()

    def _advance(self, n: int) -> None:
        self._progress_done += n
        if self.progress and n:
            self.progress(self._progress_done, self.stats.bytes_total)
