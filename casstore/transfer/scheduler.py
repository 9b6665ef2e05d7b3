"""Which byte range a worker fetches next: one shared queue of parts across all missing blobs.
A worker with nothing queued takes the second half of the in-flight part with the most bytes
left, so one slow connection cannot stall the tail (the slow one stops where the other begins).
A split falls inside the range a connection has already asked for only when that connection is
a straggler (it would need more than STRAGGLER seconds for the rest of it): otherwise the server
is already sending those bytes, and cutting them off would only waste them."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from casstore.transfer.partials import BlobJob, Part, gaps

SPLIT_ALIGN = 64 << 10
STRAGGLER = 2.0  # seconds


class Scheduler:
    def __init__(self, min_split: int) -> None:
        self.min_split = min_split
        # Each blob's parts not yet taken, in order of offset; blobs in the order they came.
        self.queued: dict[BlobJob, deque[Part]] = {}
        self.inflight: list[Part] = []
        self.wake = asyncio.Event()

    def add(self, job: BlobJob, step: int) -> None:
        """Queue what ``job`` still lacks, cut into parts of at most ``step`` bytes."""
        parts: deque[Part] = deque()
        for a, b in gaps(job.size, job.done):
            for s in range(a, b, step):
                parts.append(Part(job, s, s, min(b, s + step)))
        if parts:
            job.parts.extend(parts)
            self.queued[job] = parts
        self.wake.set()

    def next(self, may_split: bool, after: Part | None = None) -> Part | None:
        """The next part to fetch; with ``may_split`` (every remote serves ranges: a second
        whole-object GET would only add bytes), half of the slowest in-flight part. A worker
        that has just fetched ``after`` goes on with the part that follows it, if queued: the
        blob's bytes then arrive in order and are hashed as they arrive (frontier.py). Else it
        takes a blob nobody is fetching yet, so that each blob tends to have a worker of its own."""
        if after is not None and after.job.error is None:
            parts = self.queued.get(after.job)
            if parts is not None and parts[0].start == after.end:
                return self._take(after.job)
        busy = {p.job for p in self.inflight}
        failed, pick = [], None
        for job in self.queued:  # a few steps: at most ``jobs`` blobs are busy
            if job.error is not None:
                failed.append(job)
            elif job not in busy:
                pick = job
                break
            elif pick is None:
                pick = job  # if every queued blob is busy: the first
        for job in failed:
            del self.queued[job]
        if pick is not None:
            return self._take(pick)
        if not may_split:
            return None
        best = max((p for p in self.inflight if p.job.error is None), key=lambda p: p.end - p.pos, default=None)
        if best is None:
            return None
        with best.job.lock:  # its writer's position stands still meanwhile (frontier.py)
            if best.end - best.pos < 2 * self.min_split:
                return None
            mid = best.pos + (best.end - best.pos) // 2
            mid -= mid % SPLIT_ALIGN
            if mid < best.asked and not straggling(best, time.monotonic()):
                mid = best.asked
            if mid <= best.pos or best.end - mid < self.min_split:
                return None
            new = Part(best.job, mid, mid, best.end)
            best.end = mid
            best.job.parts.append(new)
        return new

    def _take(self, job: BlobJob) -> Part:
        parts = self.queued[job]
        part = parts.popleft()
        if not parts:
            del self.queued[job]
        return part


def straggling(p: Part, now: float) -> bool:
    """Whether ``p``'s connection needs more than STRAGGLER seconds for the rest of its request,
    judged after a second of it."""
    elapsed = now - p.asked_at
    if elapsed < 1.0:
        return False
    rate = (p.pos - p.asked_from) / elapsed
    return rate <= 0 or (p.asked - p.pos) / rate > STRAGGLER
