"""An in-memory remote: the reference implementation of the contract, for tests."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from pathlib import Path

from casstore.errors import Conflict, NotFound
from casstore.model.digest import Digest
from casstore.remotes.base import (
    CHUNK,
    FORMAT_FILE,
    FORMAT_VERSION,
    Key,
    Listed,
    Paced,
    Remote,
    Skip,
    check_object,
    index_path,
)


class MemoryRemote(Remote):
    bounded_reads = False  # a local read stops where it is told: nothing is in flight
    listable = True

    def __init__(self) -> None:
        self.url = "memory://"
        self.objects: dict[str, bytes] = {}
        self.modified: dict[str, float] = {}

    def _put(self, rel: str, data: bytes) -> None:
        if FORMAT_FILE not in self.objects and rel != FORMAT_FILE:
            self._put(FORMAT_FILE, f'{{"casstore_remote": {FORMAT_VERSION}}}\n'.encode())
        self.objects[rel] = data
        self.modified[rel] = time.time()

    async def stat(self, key: Key) -> int | None:
        data = self.objects.get(key.path)
        return None if data is None else len(data)

    async def read(self, key: Key, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        data = self.objects.get(key.path)
        if data is None:
            raise NotFound(f"{self.describe(key)} does not exist")
        data = data[start:end]
        for i in range(0, len(data), CHUNK):
            yield data[i : i + CHUNK]

    async def write(self, key: Key, source: Path | bytes | Paced) -> None:
        if key.path not in self.objects:
            if isinstance(source, Paced):
                with source.open() as f:
                    data = f.read()
            else:
                data = source if isinstance(source, bytes) else Path(source).read_bytes()
            check_object(key, data, self.describe(key))
            self._put(key.path, data)

    async def read_index(self, model: str) -> tuple[bytes, str] | None:
        data = self.objects.get(index_path(model))
        return None if data is None else (data, Digest.of_bytes(data).hex)

    async def write_index(self, model: str, data: bytes, expect: str | None) -> None:
        cur = self.objects.get(index_path(model))
        if (cur is None) != (expect is None) or (cur is not None and Digest.of_bytes(cur).hex != expect):
            raise Conflict(f"{self.describe(index_path(model))} changed while publishing; try again")
        self._put(index_path(model), data)

    async def looks_like_remote(self) -> bool:
        return FORMAT_FILE in self.objects

    async def listing(self, under: str, skip: Skip | None = None) -> AsyncGenerator[Listed, None]:
        for rel in sorted(self.objects):
            if rel.startswith(under) and not (skip and skip(rel)):
                yield Listed(rel, len(self.objects[rel]), self.modified.get(rel, 0.0))

    async def delete(self, rel: str) -> None:
        self.objects.pop(rel, None)
        self.modified.pop(rel, None)

    async def put_small(self, rel: str, data: bytes) -> bool:
        if rel in self.objects:
            return False
        self._put(rel, data)
        return True
