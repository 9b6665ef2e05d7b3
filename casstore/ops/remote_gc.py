"""`cas gc --remote`: delete the blobs, their chunk maps and the manifests of a remote that no published version uses.

The same rules as the local GC (docs/architecture.md, invariant 7): plan first and show it (a
dry run is the default), spare everything younger than the grace period by the remote's own
clock, and delete only under an exclusive remote lock (remotes/locks.py), re-planned inside it,
so no push in flight loses a blob it is about to publish."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from casstore.errors import InvalidInput
from casstore.gc import readahead
from casstore.gc.policy import DEFAULT_GRACE
from casstore.model.digest import Digest
from casstore.model.index import Index
from casstore.model.keys import blob_key, chunks_key, manifest_key
from casstore.model.manifest import blob_hexes
from casstore.model.names import model_from_part
from casstore.ops.fetch import manifest_bytes
from casstore.remotes.base import Remote, SkipNames
from casstore.remotes.base import manifest as manifest_object
from casstore.remotes.layers import stack
from casstore.remotes.locks import RemoteLock

_READS = 16  # manifests read at once
_HELPERS = min(2, os.cpu_count() or 1)
_OBJECTS = {"blobs/": blob_key, "manifests/": manifest_key, "chunks/": chunks_key}  # what a plan may delete


@dataclass(frozen=True)
class RemotePlan:
    delete: tuple[str, ...]  # object keys, relative to the remote's root
    bytes_freed: int
    young_spared: int  # unreferenced, but younger than the grace period
    versions: int  # published versions whose objects are kept
    objects: int  # blobs and manifests on the remote

    def to_json(self) -> dict:
        return {"delete": list(self.delete), "bytes_freed": self.bytes_freed, "young_spared": self.young_spared,
                "versions": self.versions, "objects": self.objects}


@dataclass
class RemoteResult:
    deleted: int = 0
    bytes_freed: int = 0
    elapsed: float = 0.0

    def to_json(self) -> dict:
        return dict(self.__dict__)


async def plan_remote(remote: Remote, grace: float = DEFAULT_GRACE) -> RemotePlan:
    now = await remote.now()
    versions, keep = await _kept(remote)
    delete, freed, young, objects = [], 0, 0, 0
    for under, key_of in _OBJECTS.items():
        # The kept ones skipped inside the listing, by file name (a misplaced one is not ours:
        # left alone too): a directory remote then stats only the rest.
        kept = SkipNames(keep[under])
        async for item in remote.listing(under, skip=kept):
            objects += 1
            hexname = _hexname(item.key)
            try:
                if key_of(Digest(hexname)) != item.key:
                    continue  # not an object of ours: left alone
            except InvalidInput:
                continue
            if now - item.modified < grace:
                young += 1
            else:
                delete.append(item.key)
                freed += item.size
        objects += kept.passed
    return RemotePlan(tuple(sorted(delete)), freed, young, versions, objects)


def _hexname(key: str) -> str:
    """The digest hex an object's key ends in, if it is one of ours."""
    return key.rsplit("/", 1)[-1].removesuffix(".json")


async def _kept(remote: Remote) -> tuple[int, dict[str, set[str]]]:
    """How many versions the indexes publish, and what they keep under each prefix, by file name
    (``_OBJECTS``' keys end in it): their manifests, those manifests' blobs, and the blobs' chunk maps."""
    manifests: set[Digest] = set()
    versions = 0
    async for item in remote.listing("index/"):
        name = item.key.removeprefix("index/")
        if "/" in name or not name.endswith(".json"):
            continue  # a directory remote's index snapshots
        try:
            model = model_from_part(name[: -len(".json")])
        except InvalidInput:
            continue  # not an index casstore writes
        got = await remote.read_index(model)
        if got is None:
            continue
        index = Index.decode(got[0], source=remote.describe(item.key), model=model)
        versions += len(index.versions)
        manifests.update(entry.manifest for entry in index.versions.values())
    blobs: set[str] = set()
    todo = await asyncio.to_thread(_read_locally, remote, manifests, blobs)
    limit = asyncio.Semaphore(_READS)  # 10,000 manifests at 1M blobs: each a round trip to HTTP or S3

    async def read(md: Digest) -> None:
        async with limit:
            data, url = await manifest_bytes([remote], md)
        blobs.update(blob_hexes(data, source=url))

    await asyncio.gather(*map(read, todo))
    return versions, {"blobs/": blobs, "manifests/": {d.hex + ".json" for d in manifests}, "chunks/": blobs}


def _read_locally(remote: Remote, manifests: set[Digest], blobs: set[str]) -> set[Digest]:
    """Of a remote whose manifests are files here (a directory remote), as many as helper
    processes read, check and parse (gc/readahead.py, two at once: the parse, not the reads, is
    what 10,000 manifests cost), their blobs into ``blobs``; the manifests still to read. One a
    helper could not read is read again through the remote, whose error names it."""
    first = next(iter(manifests), None)
    path = None if first is None else remote.local_file(manifest_object(first))
    if path is None:
        return manifests
    wanted = {d.hex: d for d in manifests}
    with readahead.shared(str(path.parent.parent), _HELPERS) as helpers:
        for helper in helpers:
            for md, named in helper.records():
                if wanted.pop(md, None) is not None:
                    blobs.update(named)
    return set(wanted.values())


async def collect_remote(remote: Remote, grace: float = DEFAULT_GRACE, *,
                         dry_run: bool = True) -> tuple[RemotePlan, RemoteResult | None]:
    remote = stack(remote)  # retries and time limits, as every verb has them (remotes/layers.py)
    if not remote.listable:
        plan = await plan_remote(remote, grace)  # raises: a remote that cannot be listed
        return plan, None
    if dry_run:
        return await plan_remote(remote, grace), None
    t0 = time.monotonic()
    async with RemoteLock(remote, "gc"):
        plan = await plan_remote(remote, grace)  # again, inside the lock
        result = RemoteResult()
        for key in plan.delete:
            await remote.delete(key)
            result.deleted += 1
        result.bytes_freed = plan.bytes_freed
    result.elapsed = time.monotonic() - t0
    return plan, result
