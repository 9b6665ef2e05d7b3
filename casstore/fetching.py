"""`cas fetch`: resolve a version on the remotes, download what is missing, then record it.

Order (invariant 3): verified blobs, then the manifest, then the tag, then the current pointer for a
model that has none. Nothing from a remote is used before it is checked: the index is parsed
strictly, the manifest must hash to the digest the index names and parse (paths included), and
every blob is verified by the download engine before it is published.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .digest import Digest
from .download import Downloader, Settings, Stats
from .errors import Conflict, IntegrityError, InvalidManifest, NotFound, RemoteError
from .gc import mark
from .index import Index
from .leases import Lease
from .manifest import MAX_MANIFEST_BYTES, Manifest
from .remotes.base import Remote, index_path, manifest as manifest_key
from .store import Store
from .versioning import latest


@dataclass
class FetchResult:
    model: str
    version: str
    manifest: Digest
    current: bool = False
    stats: Stats = field(default_factory=Stats)
    elapsed: float = 0.0
    path: object = None  # the read-only view, when asked for (casstore.fetch)

    def to_json(self) -> dict:
        return {"model": self.model, "version": self.version, "manifest": str(self.manifest),
                "current": self.current, **self.stats.to_json(), "elapsed": round(self.elapsed, 3)}


async def read_index(remotes: list[Remote], model: str) -> tuple[Index, Remote]:
    """The model's index from the first remote that has it."""
    errors = []
    for r in remotes:
        try:
            got = await r.read_index(model)
        except RemoteError as e:
            errors.append(str(e))
            continue
        if got is not None:
            return Index.decode(got[0], source=r.describe(index_path(model)), model=model), r
    where = ", ".join(r.describe(index_path(model)) for r in remotes)
    if errors:
        raise RemoteError(f"cannot read the versions of {model} ({where}): {'; '.join(errors)}")
    raise NotFound(f"model {model} is not published on {where}")


async def versions(remotes: list[Remote], model: str) -> Index:
    return (await read_index(remotes, model))[0]


async def manifest_bytes(remotes: list[Remote], digest: Digest) -> tuple[bytes, str]:
    last: Exception | None = None
    for r in remotes:
        url = r.describe(manifest_key(digest))
        try:
            chunks, n = [], 0
            async for c in r.read(manifest_key(digest)):
                n += len(c)
                if n > MAX_MANIFEST_BYTES:
                    raise RemoteError(f"{url} is larger than {MAX_MANIFEST_BYTES} bytes")
                chunks.append(c)
        except (NotFound, RemoteError) as e:
            last = e
            continue
        data = b"".join(chunks)
        if Digest.of_bytes(data) != digest:
            raise IntegrityError(f"{url} does not hash to {digest}; refusing the manifest")
        return data, url
    raise last if last else NotFound(f"manifest {digest} is on no remote")


async def fetch(
    store: Store,
    remotes: list[Remote],
    model: str,
    version: str | None = None,
    *,
    settings: Settings | None = None,
    progress=None,
) -> FetchResult:
    t0 = time.monotonic()
    index, _ = await read_index(remotes, model)
    if version is None:
        version = latest(index.versions)
        if version is None:
            raise NotFound(f"model {model} has no released version on the remote (only pre-releases?)")
    entry = index.versions.get(version)
    if entry is None:
        raise NotFound(f"{model}@{version} is not published (versions: {', '.join(index.versions) or 'none'})")
    local = store.refs.get_tag(model, version)
    if local is not None and local != entry.manifest:
        raise Conflict(
            f"the remote's {model}@{version} is now {entry.manifest}, but this store has it as {local}: "
            "a published version moved; refusing to change it silently"
        )
    if store.has_manifest(entry.manifest):
        m = store.get_manifest(entry.manifest)
    else:
        data, url = await manifest_bytes(remotes, entry.manifest)
        m = Manifest.decode(data, source=url)
        if (m.name, m.version) != (model, version):
            raise InvalidManifest(f"{url} is {m.name}@{m.version}, but the index lists it as {model}@{version}")
        if m.digest() != entry.manifest:
            raise InvalidManifest(f"{url} is not in canonical form; refusing it")
    wants: dict[Digest, int] = {e.digest: e.size for e in m.entries}
    with Lease(store, f"fetch {model}@{version}", [*wants, entry.manifest]):
        stats = await Downloader(store, remotes, settings, progress).fetch(wants)
        written = store.put_manifest(m)
        store.refs.set_tag(model, version, written)
        result = FetchResult(model, version, written, stats=stats)
        if store.refs.current(model) is None:
            try:
                store.refs.switch(model, version, written, action="fetch", expect=None)
                result.current = True
            except Conflict:
                pass
        mark(store, model, version, "used")
    result.elapsed = time.monotonic() - t0
    return result


def open_remotes(remote: str | None = None, *, insecure: bool = False, **http_options) -> list[Remote]:
    from .remoteconfig import choose
    from .remotes import open_remote

    return [open_remote(s.url, token=s.token, insecure=insecure or s.insecure, **http_options) for s in choose(remote)]

