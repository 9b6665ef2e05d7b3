"""`cas push`: publish a version. Blobs first (only those the remote lacks), then the manifest,
then the index entry, so a reader never sees a version whose objects are not all there."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from casstore.errors import Conflict, NotFound
from casstore.model.index import Index
from casstore.progress import Ticker
from casstore.remotes.base import Remote, blob
from casstore.remotes.base import manifest as manifest_key
from casstore.store.objects import Store

log = logging.getLogger("casstore")


@dataclass
class PushResult:
    model: str
    version: str
    manifest: str
    blobs_sent: int = 0
    bytes_sent: int = 0
    blobs_present: int = 0
    elapsed: float = 0.0

    def to_json(self) -> dict:
        return dict(self.__dict__)


async def push(store: Store, remote: Remote, model: str, version: str, *, force: bool = False, jobs: int = 8,
               progress=None) -> PushResult:
    """Publish a version: blobs the remote lacks, then the manifest, then the index entry.
    ``progress(done, total)``: bytes of the version sent or found present."""
    t0 = time.monotonic()
    version, digest, m = store.load(model, version)
    result = PushResult(model, version, str(digest))
    sem = asyncio.Semaphore(max(1, jobs))
    sizes = {e.digest: e.size for e in m.entries}
    advance = Ticker(progress, sum(sizes.values()))

    async def send(d):
        async with sem:
            if await remote.stat(blob(d)) == sizes[d]:
                result.blobs_present += 1
                advance(sizes[d])
                return
            path = store.blob_path(d)
            if not path.exists():
                raise NotFound(f"blob {d} of {model}@{version} is missing locally; cannot push")
            await remote.write(blob(d), path)
            log.info("sent %s (%d bytes) to %s", d, sizes[d], remote.describe(blob(d)))
            result.blobs_sent += 1
            result.bytes_sent += sizes[d]
            advance(sizes[d])

    await asyncio.gather(*(send(d) for d in sizes))
    await remote.write(manifest_key(digest), store.layout.manifest(digest).read_bytes())
    for _ in range(10):  # compare-and-swap on the index; another publisher may be adding a version
        cur = await remote.read_index(model)
        idx = Index(model) if cur is None else Index.decode(cur[0], source=remote.describe(f"index/{model}.json"), model=model)
        idx.publish(version, digest, m, force=force)
        try:
            await remote.write_index(model, idx.encode(), None if cur is None else cur[1])
            break
        except Conflict:
            await asyncio.sleep(0.1)
    else:
        raise Conflict(f"the index of {model} on {remote.url} kept changing; try again")
    result.elapsed = time.monotonic() - t0
    return result
