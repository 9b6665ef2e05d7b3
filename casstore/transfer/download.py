"""The download engine: missing blobs from remotes into a store, parallel, resumable, verified.

The parts it drives, each in its own module:
- ``scheduler``: one queue of byte ranges across all blobs; idle workers split the slowest part.
- ``partials``: each blob assembled in a partial file of one writer, with a progress record;
  a gone writer's partial is adopted and only the rest fetched.
- ``lock``: a per-blob lock so two processes don't download the same blob (it only saves work).
- ``ratelimit``: one bandwidth limit shared by every connection.

Retries, mirrors, stall and low-speed limits are the remote stack's (remotes/layers.py): the
engine reads one ``Remote`` and schedules parts. A blob is published
(linked into ``blobs/``) only after the partial file hashes to its digest and has its size
(docs/architecture.md, invariant 4); the hash is taken in order as the bytes arrive where they
arrive in order, and read back from the file where they do not (``frontier``).
From a remote with ``threaded_reads`` (HTTP), a part's requests run on the engine's threads and
write straight into the partial file; the event loop keeps the books (``_stream_threaded``).
"""

from __future__ import annotations

import asyncio
import copy
import errno
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from casstore.errors import IntegrityError, InvalidInput, NotFound, RangesIgnored, RemoteError
from casstore.fs.atomic import makedirs, out_of_space, publish_file, translate_os_error, write_file
from casstore.fs.writers import writer_id
from casstore.model.chunkmap import MAX_MAP_BYTES, ChunkMap
from casstore.model.digest import Digest
from casstore.remotes.base import Key, Remote, read_small
from casstore.remotes.base import blob as blob_key
from casstore.remotes.base import chunks as chunks_key
from casstore.remotes.layers import stack
from casstore.store import chunkmaps
from casstore.store.objects import Store
from casstore.transfer import delta, partials
from casstore.transfer import lock as dlock
from casstore.transfer.partials import BlobJob, Part
from casstore.transfer.ratelimit import RateLimiter
from casstore.transfer.scheduler import Scheduler
from casstore.transfer.settings import Settings, Stats

__all__ = ["Downloader", "Settings", "Stats"]

log = logging.getLogger("casstore")

# Blobs up to this size are fetched into memory and written once (``_one_small``): no lock,
# partial file or progress record, which cost ~7 ms a blob here, more than fetching 1 MiB.
SMALL_BLOB = 1 << 20
# An engine thread tells the event loop of bytes written (progress, records) after this many.
REPORT_EVERY = 1 << 20


def _close_if_cancelled(fd: int, run: Future) -> None:
    if run.cancelled():
        os.close(fd)


@dataclass
class DeltaMemo:
    """What an estimate learned that the fetch after it, in the same command, reuses instead of
    reading again: the remote chunk maps (None: the remote has none) and the local chunk index.
    Before, `cas update` downloaded every map twice (its plan, then its fetch)."""

    maps: dict[Digest, ChunkMap | None] = field(default_factory=dict)
    local: delta.LocalChunks | None = None


@dataclass
class Estimate:
    """``Downloader.estimate``: bytes of missing blobs, of those what local chunks hold, and the
    chunk maps read to know it. ``download`` is what the fetch then reports as downloaded
    (less what a resumed partial download already holds)."""

    missing: int
    from_local: int = 0
    maps: int = 0
    copied: int = 0  # from a remote on the store's filesystem (``_copy_local``): not downloaded
    memo: DeltaMemo | None = field(default=None, compare=False, repr=False)  # for the fetch that follows

    @property
    def download(self) -> int:
        return self.missing - self.from_local - self.copied


class Downloader:
    def __init__(self, store: Store, remotes: Remote | list[Remote], settings: Settings | None = None,
                 progress=None, memo: DeltaMemo | None = None) -> None:
        if not remotes:
            raise InvalidInput("no remote to download from")
        self.store = store
        self.s = settings or Settings()
        self.remote = stack(remotes, self.s.tuning())  # mirrors, retries and time limits: remotes/layers.py
        self.progress = progress  # callable(done_bytes, total_bytes)
        self.stats = Stats()
        self.limiter = RateLimiter(self.s.rate) if self.s.rate else None
        self.writer = writer_id()
        self.sched = Scheduler(self.s.min_split)
        self._progress_done = 0
        self._sources: list[Digest] = []
        self._local: asyncio.Future[delta.LocalChunks] | None = None  # the local chunk index, built once when needed
        self.memo = memo or DeltaMemo()
        self._threads: ThreadPoolExecutor | None = None  # for remotes with threaded reads
        self._stopping = False  # tells those threads to stop writing

    # public ---------------------------------------------------------------------------------

    async def estimate(self, wants: dict[Digest, int], sources: Iterable[Digest] = ()) -> Estimate:
        """What ``fetch(wants, sources)`` would download, decided the way it decides: the missing
        blobs, less what local chunks hold of those whose remote chunk map it reads (as the
        fetch reads them: `--dry-run` pays the maps and the local mapping the fetch would)."""
        missing = {d: n for d, n in wants.items() if not self.store.has_blob(d)}
        self._sources = list(sources)
        est = Estimate(sum(missing.values()))
        if self.s.delta and any(n >= self.s.delta_min_size for n in missing.values()):
            await self._probe_ranges(missing)
        for d, n in missing.items():
            if not self._small(n) and self._same_fs_file(blob_key(d, n)) is not None:
                est.copied += n
                continue
            if not self.s.delta or n < self.s.delta_min_size or not self.remote.ranges:
                continue
            m = await self._remote_map(d, n)
            if m is None:
                continue
            p = delta.plan(m, await self._local_chunks())
            if p.reused >= delta.MIN_REUSE:
                est.from_local += p.reused
        est.maps = self.stats.bytes_maps
        est.memo = self.memo
        return est

    async def fetch(self, wants: dict[Digest, int], sources: Iterable[Digest] = ()) -> Stats:
        """Bring every (digest, size) into the store; returns what it cost. ``sources``: local
        blobs likely to share chunks with the wanted ones (delta.py), mapped now if not yet."""
        t0 = time.monotonic()
        makedirs(self.store.layout.downloads)
        makedirs(self.store.layout.locks)
        self.stats.blobs = len(wants)
        self.stats.bytes_total = sum(wants.values())
        missing = {}
        for d, size in wants.items():
            if self.store.touch(self.store.blob_path(d)):
                self.stats.bytes_reused += size
            else:
                missing[d] = size
        self._progress_done = self.stats.bytes_reused
        self._sources = list(sources)
        self._check_space(missing)
        await self._probe_ranges(missing)
        retried = self.remote.retries
        workers = [asyncio.create_task(self._worker()) for _ in range(max(1, self.s.jobs))]
        self._stopping = False
        try:
            results = await asyncio.gather(*(self._one(d, size) for d, size in missing.items()), return_exceptions=True)
        finally:
            self._stopping = True
            self.sched.wake.set()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if self._threads is not None:
                self._threads.shutdown(wait=False)
                self._threads = None
        self.stats.elapsed = time.monotonic() - t0
        self.stats.retries += self.remote.retries - retried
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return self.stats

    async def _probe_ranges(self, missing: dict[Digest, int]) -> None:
        """Ask for one byte of a blob that could be split, so a server that ignores Range is
        known before parts are scheduled or split (each part would otherwise fetch the object
        from its start)."""
        big = next((d for d, size in missing.items() if size > self.s.part_size or size >= 2 * self.s.min_split), None)
        if big is not None:
            await self.remote.probe_ranges(blob_key(big, missing[big]))

    # space ---------------------------------------------------------------------------------------------

    def _check_space(self, missing: dict[Digest, int]) -> None:
        needed = sum(missing.values())
        for p in self.store.layout.downloads.glob("*.part"):
            try:
                if Digest(p.name.split(".", 1)[0]) in missing:
                    needed -= p.stat().st_blocks * 512
            except (InvalidInput, OSError):
                continue
        st = os.statvfs(self.store.layout.tmp)
        if needed > st.f_bavail * st.f_frsize:
            raise out_of_space(self.store.layout.tmp, needed)

    # one blob ---------------------------------------------------------------------------------------

    async def _one(self, d: Digest, size: int) -> None:
        if self._small(size):
            return await self._one_small(d, size)
        lock = await dlock.acquire(self.store, d, self.s.stale_after, self.s.lock_timeout)
        if lock is None:
            self.stats.bytes_reused += size
            self._advance(size)
            return
        refresher = asyncio.create_task(dlock.keep_fresh(lock, self.s.lock_refresh))
        try:
            if await self._copy_local(d, size):
                return
            for attempt in (0, 1):
                job = (partials.adopt(self.store, self.writer, d, size, self.s.stale_after) if attempt == 0
                       else partials.fresh(self.store, self.writer, d, size))
                try:
                    if attempt == 0 and not job.adopted:
                        await self._prefill(job)
                    await self._download(job)
                    await asyncio.to_thread(self._publish, job)
                except IntegrityError:
                    job.close(keep=False)
                    if attempt == 0 and (job.adopted or job.prefilled):
                        # the adopted or locally copied bytes may be the bad ones: once more, whole
                        log.warning("%s did not verify after %s; downloading it whole", d,
                                    "resuming" if job.adopted else "reusing local chunks")
                        continue
                    if attempt == 0 and self.remote.distrust(blob_key(d, size)):
                        continue  # once more, whole, from the mirrors that did not serve these bytes
                    raise
                except (RemoteError, asyncio.CancelledError):
                    job.close(keep=True)  # a network failure: the next run resumes
                    raise
                except BaseException:
                    job.close(keep=False)
                    raise
                job.close(keep=False)
                return
        finally:
            refresher.cancel()
            dlock.release(lock)

    async def _copy_local(self, d: Digest, size: int) -> bool:
        """A blob a remote holds as a file on the store's own filesystem (a store or directory
        remote beside it) is reflinked (XFS, btrfs: no data copied) or else copied by the kernel,
        then hashed and published like an added file. Never a hard link: stamps and GC's use
        marks are the inode's times, so one would write to the source. From another filesystem
        (a NAS mount) the blob streams instead, under the stack's time limits, the rate limit and
        delta; a source that vanished meanwhile streams too (and is NotFound there)."""
        key = blob_key(d, size)
        src = self._same_fs_file(key)
        if src is None:
            return False
        try:
            staged = await asyncio.to_thread(self.store.stage_file, src)
        except FileNotFoundError:
            return False
        if staged.digest != d or staged.size != size:
            staged.discard()
            if self.remote.distrust(key):
                return False  # streamed from the mirrors that did not hold these bytes
            raise IntegrityError(f"{src} hashes to {staged.digest} ({staged.size} bytes), not {d} ({size} bytes); "
                                 "discarded")
        await asyncio.to_thread(self.store.publish_staged, staged)
        self.stats.bytes_copied += size
        self._advance(size)
        log.info("verified %s (%d bytes, by %s) from %s", d, size, staged.method, src)
        return True

    def _small(self, size: int) -> bool:
        return size <= SMALL_BLOB and size < self.s.delta_min_size

    def _same_fs_file(self, key: Key) -> Path | None:
        if self.limiter is not None:
            return None
        src = self.remote.local_file(key)
        try:
            return src if src is not None and os.stat(src).st_dev == os.stat(self.store.layout.tmp).st_dev else None
        except FileNotFoundError:
            return None

    async def _one_small(self, d: Digest, size: int) -> None:
        """Fetched whole into memory by the same workers (retries, mirrors, rate limit), verified
        there, then written once like any file (write, fsync, link, fsync the directory) off the
        event loop. Without a lock two processes may both fetch it, and the first link wins
        (invariant 5: the lock only saves work); an interrupted one is fetched again."""
        for attempt in (0, 1):
            job = BlobJob(d, size, self.store.blob_path(d), None, in_memory=True)
            await self._download(job)
            try:
                await asyncio.to_thread(self._publish_small, job)
                return
            except IntegrityError:
                if attempt == 1 or not self.remote.distrust(blob_key(d, size)):
                    raise

    def _publish_small(self, job: BlobJob) -> None:
        data, job.buf = job.buf or bytearray(), None  # nothing arrives for an empty blob
        where = self._verified(job, Digest.of_bytes(data), len(data))
        final = self.store.blob_path(job.digest)
        self.store.fresh.mark(job.digest.hex)  # before the file exists, fresh (stamp_now's mark is then free)
        if write_file(final, data, self.store.layout.tmp, root=self.store.root, exclusive=False):  # full: OutOfSpace
            self.store.stamp_now(final, job.digest)  # the mark of an unchanged blob (store/stamps.py)
        else:
            self.store.touch(final)
        log.info("verified %s (%d bytes) from %s", job.digest, job.size, where)

    def _verified(self, job: BlobJob, got: Digest, size: int) -> str:
        """Where the bytes came from, if they are the blob's (invariant 4); else IntegrityError."""
        where = ", ".join(self.remote.sources(blob_key(job.digest, job.size)))
        if size != job.size or got != job.digest:
            raise IntegrityError(f"downloaded bytes for {job.digest} from {where} hash to {got} ({size} bytes); discarded")
        return where

    async def _download(self, job: BlobJob) -> None:
        self.stats.bytes_resumed += job.adopted
        self._advance(job.adopted)
        self.sched.add(job, self.s.part_size if self.remote.ranges else job.size or 1)
        if job.parts:
            job.save(force=True)
            await job.finished.wait()
        while any(p.active for p in job.parts):  # let every writer of this file stop before it is closed
            await asyncio.sleep(0.01)
        if job.error is not None:
            raise job.error

    # delta -------------------------------------------------------------------------------------

    async def _prefill(self, job: BlobJob) -> None:
        """Copy into the fresh partial what local blobs hold of it (delta.py); the gaps left are
        what the workers fetch. Skipped when any remote ignores Range (each gap would cost the
        whole object) or when the remote has no usable map."""
        if not self.s.delta or job.size < self.s.delta_min_size or not self.remote.ranges:
            return
        m = await self._remote_map(job.digest, job.size)
        if m is None:
            return
        job.chunk_map = m  # kept with the blob once it verifies: the next update finds its chunks
        p = delta.plan(m, await self._local_chunks())
        if p.reused < delta.MIN_REUSE:
            log.info("%s: no useful local chunks (%d bytes); downloading it whole", job.digest, p.reused)
            return
        try:
            done = await asyncio.to_thread(delta.prefill, self.store, job.fd, p)
        except OSError as e:
            raise translate_os_error(e, job.path, job.size) from e
        n = sum(b - a for a, b in done)
        job.done, job.prefilled = partials.merge(job.done + done), n
        self.stats.bytes_from_local += n
        self._advance(n)
        job.save(force=True)
        log.info("%s: %d of %d bytes from local chunks", job.digest, n, job.size)

    async def _local_chunks(self) -> delta.LocalChunks:
        """The local chunk index, built once (on a thread) when first needed."""
        if self._local is None and self.memo.local is not None:
            return self.memo.local
        if self._local is None:
            self._local = asyncio.ensure_future(asyncio.to_thread(
                delta.LocalChunks.build, self.store, self._sources, self.s.delta_min_size))
        local: delta.LocalChunks = await asyncio.shield(self._local)
        self.memo.local = local
        return local

    async def _remote_map(self, d: Digest, size: int) -> ChunkMap | None:
        """The blob's chunk map from the first mirror that has one; a missing, broken or lying map
        means a whole download, never an error."""
        if d in self.memo.maps:
            return self.memo.maps[d]
        key = chunks_key(d)
        m: ChunkMap | None = None
        try:
            data = await read_small(self.remote, key, MAX_MAP_BYTES)
            self.stats.bytes_maps += len(data)
            m = ChunkMap.decode(data, blob=d, size=size, source=self.remote.describe(key))
        except NotFound:
            pass
        except (RemoteError, InvalidInput) as e:
            log.warning("not using the chunk map: %s", e)  # e names the URL
        self.memo.maps[d] = m
        return m

    def _publish(self, job: BlobJob) -> None:
        where = self._verified(job, *job.frontier.finish(job.fd))  # reads back only what it lacks
        os.fchmod(job.fd, 0o444)
        self.store.stamp_now(job.fd, job.digest)  # the mark of an unchanged blob (store/stamps.py)
        final = self.store.blob_path(job.digest)
        if not publish_file(job.path, final, fd=job.fd, root=self.store.root, exclusive=False):
            self.store.touch(final)
        if job.chunk_map is not None:  # a hint, like every cached map: copied chunks are re-hashed
            chunkmaps.save(self.store, job.chunk_map)
        log.info("verified %s (%d bytes, %d read back to hash) from %s", job.digest, job.size,
                 job.frontier.read_back, where)

    # workers -----------------------------------------------------------------------------------

    async def _worker(self) -> None:
        last = None
        while True:
            part = self.sched.next(may_split=self.remote.ranges is True, after=last)
            last = part
            if part is None:
                self.sched.wake.clear()
                try:  # woken when a part ends; else look again for a straggler to help
                    async with asyncio.timeout(0.5):  # not wait_for: in 3.11 it can swallow a cancel
                        await self.sched.wake.wait()
                except TimeoutError:
                    pass
                continue
            part.active = True
            self.sched.inflight.append(part)
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
                self.sched.inflight.remove(part)
                self.sched.wake.set()
            job = part.job
            if job.error is None and all(p.pos >= p.end for p in job.parts) and not any(p.active for p in job.parts):
                job.done = job.ranges_done()
                job.finished.set()

    async def _run_part(self, part: Part) -> None:
        job = part.job
        try:
            await self._stream(self.remote, blob_key(job.digest, job.size), part)
        except NotFound as e:
            raise NotFound(f"blob {job.digest} is not on any remote: {e}") from e
        except RemoteError as e:  # the stack's retries and mirrors are spent: say which blob
            named = copy.copy(e)
            named.args = (f"giving up on {job.digest}: {e}",)
            named.digest = job.digest
            raise named from e
        except OSError as e:  # the partial file: a full disk, or its device failing
            raise translate_os_error(e, job.path, job.size) from e

    async def _stream(self, remote: Remote, key, part: Part) -> None:
        """Fetch ``part`` in requests of at most ``request_size`` (when the remote serves ranges
        and would otherwise be cut off mid-answer), so that a split (scheduler.py) only ever
        takes bytes nobody has asked for yet."""
        job = part.job
        if self._bounded(remote) and remote.threaded_reads and not job.in_memory and self.limiter is None:
            try:
                return await self._stream_threaded(remote, key, part)
            except RangesIgnored as e:  # the rest through the event loop, which skips to the offset
                log.info("%s; reading it on the event loop", e)
        while part.pos < part.end and job.error is None:
            bounded = self._bounded(remote)  # the first answer may tell whether ranges are served
            part.asked = min(part.end, part.pos + self.s.request_size) if bounded else part.end
            part.asked_at, part.asked_from = time.monotonic(), part.pos
            stream = remote.read(key, part.pos, part.asked)
            try:
                async for chunk in stream:
                    if self.limiter:
                        await self.limiter.take(len(chunk))
                    # after any await: the end may have moved (another worker took the rest)
                    room = min(part.end, part.asked) - part.pos
                    if room <= 0 or job.error is not None:
                        break
                    if len(chunk) > room:
                        chunk = chunk[:room]
                    if job.in_memory:
                        if job.buf is None:
                            job.buf = bytearray(job.size)
                        job.buf[part.pos:part.pos + len(chunk)] = chunk
                        n = len(chunk)
                    else:
                        n = os.pwrite(job.fd, chunk, part.pos)
                    part.pos += n
                    self.stats.bytes_downloaded += n
                    self._advance(n)
                    job.save()
            finally:
                await stream.aclose()
            if not bounded:
                break

    def _bounded(self, remote: Remote) -> bool:
        return remote.ranges is True and remote.bounded_reads and self.s.request_size > 0

    async def _stream_threaded(self, remote: Remote, key, part: Part) -> None:
        """``_stream`` through ``remote.read_into``: each request runs on a thread of the engine,
        which writes the bytes into the partial file as they arrive; the event loop keeps the
        books. Through the event loop, one thread received, parsed and wrote every connection's
        bytes, and on 2 cores it was the bottleneck (docs/benchmarks.md)."""
        job = part.job
        loop = asyncio.get_running_loop()
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max(1, self.s.jobs), thread_name_prefix="cas-fetch")
        while part.pos < part.end and job.error is None and remote.ranges is True:
            part.asked = min(part.end, part.pos + self.s.request_size)
            part.asked_at, part.asked_from = time.monotonic(), part.pos
            # The thread writes through a descriptor of its own, made here where jobs are closed:
            # a job closed under it (a cancelled run) never has it write into a reused number.
            fd = os.dup(job.fd)
            run = self._threads.submit(self._read_request, remote, key, part, loop, fd)
            run.add_done_callback(partial(_close_if_cancelled, fd))  # if it never started
            await asyncio.wrap_future(run)

    def _read_request(self, remote: Remote, key, part: Part, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        """On an engine thread: one request of ``part``, written at its place as it arrives."""
        job = part.job
        unreported = 0

        def report() -> bool:
            nonlocal unreported
            try:
                loop.call_soon_threadsafe(self._took, job, unreported)
            except RuntimeError:  # the loop is gone: the run was cancelled
                return False
            unreported = 0
            return True

        def sink(view: memoryview) -> bool:
            nonlocal unreported
            if not len(view):  # asked before a retry: is anyone still waiting for these bytes?
                return job.error is None and not self._stopping and part.pos < min(part.end, part.asked)
            with job.lock:  # a split cannot move the end while this writes (frontier.py)
                room = min(part.end, part.asked) - part.pos  # a straggler's split may have moved the end
                if room <= 0 or job.error is not None or self._stopping:
                    return False
                cut = len(view) > room
                view = view[:room]
                done = 0
                while done < len(view):
                    n = os.pwrite(fd, view[done:], part.pos + done)
                    if n <= 0:  # never for a regular file; a loop that cannot end otherwise
                        raise OSError(errno.EIO, f"writing {job.path} made no progress")
                    done += n
                mine = job.frontier.claim(part.pos)
                part.pos += done
            if mine:  # these bytes continue the blob's hash: take it from here, no read-back
                job.frontier.extend(view, fd, job.written_from)
            unreported += done
            if unreported >= REPORT_EVERY and not report():
                return False
            return not cut

        try:
            remote.read_into(key, part.pos, part.asked, sink)
        finally:
            os.close(fd)
            if unreported:
                report()

    def _took(self, job: BlobJob, n: int) -> None:
        """On the event loop: ``n`` more bytes of ``job`` are in its partial file."""
        self.stats.bytes_downloaded += n
        self._advance(n)
        if job.fd >= 0:
            job.save()

    def _advance(self, n: int) -> None:
        self._progress_done += n
        if self.progress and n:
            self.progress(self._progress_done, self.stats.bytes_total)
