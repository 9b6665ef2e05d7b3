"""`cas push`: publish a version. Blobs first (only those the remote lacks) with the chunk maps of
the large ones (for delta updates, transfer/delta.py), then the manifest, then the index entry, so
a reader never sees a version whose objects are not all there."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from casstore.errors import Conflict, InvalidInput, NotFound
from casstore.model.index import Index
from casstore.progress import Ticker
from casstore.remotes.base import Paced, Remote, blob, chunks
from casstore.remotes.base import manifest as manifest_key
from casstore.remotes.layers import Mirrors, stack
from casstore.remotes.locks import RemoteLock
from casstore.store import chunkmaps
from casstore.store.objects import Store
from casstore.transfer.ratelimit import RateLimiter
from casstore.transfer.settings import Settings

log = logging.getLogger("casstore")


@dataclass
class PushResult:
    model: str
    version: str
    manifest: str
    blobs_sent: int = 0
    bytes_sent: int = 0
    blobs_present: int = 0
    maps_sent: int = 0
    map_seconds: float = 0.0  # computing chunk maps (a pass over each large blob not mapped yet)
    elapsed: float = 0.0

    def to_json(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


async def push(store: Store, remote: Remote, model: str, version: str, *, force: bool = False, jobs: int = 8,
               progress=None, backfill_chunks: bool = False, limit_rate: int | None = None) -> PushResult:
    """Publish a version: blobs the remote lacks (large ones with their chunk maps), then the
    manifest, then the index entry. ``backfill_chunks``: also publish the maps of large blobs the
    remote already had (versions pushed before maps existed). ``progress(done, total)``: bytes of
    the version sent or found present. ``limit_rate``: bytes per second for all blob uploads
    together (each backend reads through one shared limiter: remotes/base.Paced)."""
    t0 = time.monotonic()
    version, digest, m = store.load(model, version)
    if (held := m.selection) is not None:
        raise InvalidInput(f"{model}@{version} is a partial version here ({len(m.entries)} files selected of "
                           f"{held[1]}, by {held[0].describe()}): push it from a store that holds it whole")
    result = PushResult(model, version, str(digest))
    sem = asyncio.Semaphore(max(1, jobs))
    settings = Settings.from_env()
    # one remote, with retries and time limits (remotes/layers.py): never a mirror's index
    remote = stack(remote.remotes[0] if isinstance(remote, Mirrors) else remote, settings.tuning())
    sizes = {e.digest: e.size for e in m.entries}
    advance = Ticker(progress, sum(sizes.values()))
    limiter = RateLimiter(limit_rate) if limit_rate else None

    async def send(d):
        async with sem:
            path = store.blob_path(d)
            if not path.exists():
                raise NotFound(f"blob {d} of {model}@{version} is missing locally; cannot push")
            await remote.write(blob(d, sizes[d]), Paced(path, limiter) if limiter is not None else path)
            log.info("sent %s (%d bytes) to %s", d, sizes[d], remote.describe(blob(d)))
            result.blobs_sent += 1
            result.bytes_sent += sizes[d]
            advance(sizes[d])
            await send_map(d)

    async def send_map(d):
        if sizes[d] < settings.delta_min_size or not settings.delta:
            return
        t = time.monotonic()
        m = await asyncio.to_thread(chunkmaps.ensure, store, d)
        result.map_seconds += time.monotonic() - t
        await remote.write(chunks(d), m.encode())
        result.maps_sent += 1

    async def backfill(d):
        async with sem:
            if await remote.stat(chunks(d)) is None:
                await send_map(d)

    async with RemoteLock(remote, "push"):  # `cas gc --remote` will not run meanwhile (no-op where it cannot)
        lacking = {k.digest for k in await remote.missing([blob(d, size) for d, size in sizes.items()])}
        result.blobs_present = len(sizes) - len(lacking)
        advance(sum(size for d, size in sizes.items() if d not in lacking))
        await asyncio.gather(*(send(d) for d in lacking))
        if backfill_chunks:
            await asyncio.gather(*(backfill(d) for d in sizes if d not in lacking and sizes[d] >= settings.delta_min_size))
        await remote.write(manifest_key(digest), store.layout.manifest(digest).read_bytes())
        for attempt in range(20):  # compare-and-swap on the index; another publisher may be adding a version
            cur = await remote.read_index(model)
            idx = Index(model) if cur is None else Index.decode(cur[0], source=remote.describe(f"index/{model}.json"),
                                                                model=model)
            idx.publish(version, digest, m, force=force)
            try:
                await remote.write_index(model, idx.encode(), None if cur is None else cur[1])
                break
            except Conflict:
                await asyncio.sleep(random.uniform(0.05, 0.1 * 2 ** min(attempt, 4)))
        else:
            raise Conflict(f"the index of {model} on {remote.url} kept changing; try again")
    result.elapsed = time.monotonic() - t0
    return result
