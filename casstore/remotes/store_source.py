"""Another store read as a remote: a node-local store filled from the team's shared store on the
NAS (`cas remote add nas /mnt/team/store`), with no second copy kept there as a directory remote.

A store holds blobs, chunk maps and manifests under the same keys as a remote (model/keys.py);
what it lacks is ``index/<model>.json``, which is made here from its tags. Read-only: nothing
is ever written to the source (no lease, no use stamp, no clock probe), so a read-only mount
works and the source's own GC is not disturbed; a version its GC collects mid-fetch fails that
fetch (NotFound), as with any remote that loses an object.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from casstore.errors import CasError, RemoteRefused
from casstore.fs.atomic import read_settled
from casstore.model.digest import Digest
from casstore.model.index import Index, IndexEntry
from casstore.model.keys import STORE_FORMAT_FILE, manifest_key, tag_digest, tags_key
from casstore.model.manifest import MAX_MANIFEST_BYTES, Manifest
from casstore.model.names import validate_version
from casstore.model.strictjson import read_file
from casstore.remotes.base import FORMAT_FILE, Key, Listed, Paced
from casstore.remotes.directory import DirectoryRemote


def is_store(root: Path) -> bool:
    return (root / STORE_FORMAT_FILE).is_file() and not (root / FORMAT_FILE).is_file()


class StoreSource(DirectoryRemote):
    listable = False  # housekeeping on a store is its own `cas gc`, never a remote's

    def _refuse(self, what: str) -> RemoteRefused:
        return RemoteRefused(f"{self.url} is a store, read as a remote: it cannot be {what} through here "
                             "(push to a directory remote, or `cas fetch` into that store on its own machine)",
                             url=self.url)

    async def read_index(self, model: str) -> tuple[bytes, str] | None:
        data = await asyncio.to_thread(self._index, model)
        return None if data is None else (data, Digest.of_bytes(data).hex)

    def _index(self, model: str) -> bytes | None:
        tags = self.root / tags_key(model)
        try:
            names = sorted(os.listdir(tags))
        except FileNotFoundError:
            return None
        versions = {}
        for version in names:
            try:
                validate_version(version)
                d = read_settled(tags / version, tag_digest)
                path = self._p(manifest_key(d))
                data = read_file(path, max_bytes=MAX_MANIFEST_BYTES)
                if Digest.of_bytes(data) != d:
                    continue
                m = Manifest.decode(data, source=str(path))
                created = int(os.stat(tags / version).st_mtime)
            except (OSError, CasError):
                continue  # a temp file, or a tag whose manifest is gone or damaged: not offered
            versions[version] = IndexEntry(d, m.created or created, m.breaking, m.size, len(m.entries))
        return Index(model, versions).encode() if versions else None

    async def looks_like_remote(self) -> bool:
        return is_store(self.root)

    async def write(self, key: Key, source: Path | bytes | Paced) -> None:
        raise self._refuse("published to")

    async def write_index(self, model: str, data: bytes, expect: str | None) -> None:
        raise self._refuse("published to")

    async def put_small(self, rel: str, data: bytes) -> bool:
        raise self._refuse("locked")

    async def delete(self, rel: str) -> None:
        raise self._refuse("collected")

    async def listing(self, under: str, skip=None):
        raise self._refuse("listed")
        yield Listed("", 0, 0.0)  # pragma: no cover - makes this an async generator

    async def now(self) -> float:
        return time.time()  # never a clock probe: nothing is written to the source


__all__ = ["StoreSource", "is_store"]
