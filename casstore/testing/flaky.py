"""A remote that misbehaves on purpose, around any other: for the stack's tests (remotes/layers.py)
and any backend's. ``Flaky(inner, fail={"read_index": 1})`` fails the first call of a method with
a retryable 503 (-1: every call); ``every=2`` fails every other call of every method; ``hang``
methods never answer; ``wrong`` makes reads return other bytes (or only reads of that kind: "blob")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

from casstore.errors import RemoteStatusError
from casstore.remotes.base import Key, Listed, Paced, Remote, Skip


class Flaky(Remote):
    def __init__(self, inner: Remote, *, fail: dict[str, int] | None = None, status: int = 503,
                 hang: tuple[str, ...] = (), wrong: bool | str = False, url: str | None = None, every: int = 0) -> None:
        self.inner = inner
        self.url = url or inner.url
        self.fail = dict(fail or {})
        self.status, self.hang, self.wrong, self.every = status, hang, wrong, every
        self.calls: dict[str, int] = {}
        self.listable, self.threaded_reads, self.bounded_reads = inner.listable, inner.threaded_reads, False
        self.ranges = inner.ranges

    def _trip(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        left = self.fail.get(method, 0)
        if left:
            self.fail[method] = left - 1 if left > 0 else left  # -1: for ever
        if left or (self.every and self.calls[method] % self.every == 1):
            raise RemoteStatusError(f"{method} {self.url} failed: HTTP {self.status} (flaky, on purpose)",
                                    url=self.url, status=self.status, retryable=True, retry_after=0)

    async def _hang(self, method: str) -> None:
        if method in self.hang:
            await asyncio.sleep(3600)

    async def stat(self, key: Key) -> int | None:
        self._trip("stat")
        await self._hang("stat")
        return await self.inner.stat(key)

    async def read(self, key: Key, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        self._trip("read")
        await self._hang("read")
        async for chunk in self.inner.read(key, start, end):
            yield bytes(len(chunk)) if self.wrong in (True, key.kind) else chunk

    def read_into(self, key: Key, start: int, end: int, sink: Callable[[memoryview], bool]) -> None:
        self._trip("read_into")
        if "read_into" in self.hang:
            time.sleep(3600)
        self.inner.read_into(key, start, end, sink)

    async def write(self, key: Key, source: Path | bytes | Paced) -> None:
        self._trip("write")
        await self.inner.write(key, source)

    async def read_index(self, model: str) -> tuple[bytes, str] | None:
        self._trip("read_index")
        await self._hang("read_index")
        return await self.inner.read_index(model)

    async def write_index(self, model: str, data: bytes, expect: str | None) -> None:
        self._trip("write_index")
        await self.inner.write_index(model, data, expect)

    async def missing(self, keys: list[Key], jobs: int = 8) -> set[Key]:
        self._trip("missing")
        return await self.inner.missing(keys, jobs)

    async def listing(self, under: str, skip: Skip | None = None) -> AsyncGenerator[Listed, None]:
        self._trip("listing")
        async for item in self.inner.listing(under, skip):
            yield item

    async def delete(self, rel: str) -> None:
        self._trip("delete")
        await self.inner.delete(rel)

    async def put_small(self, rel: str, data: bytes) -> bool:
        self._trip("put_small")
        return await self.inner.put_small(rel, data)

    async def now(self) -> float:
        self._trip("now")
        return await self.inner.now()

    async def looks_like_remote(self) -> bool:
        self._trip("looks_like_remote")
        return await self.inner.looks_like_remote()

    async def close(self) -> None:
        await self.inner.close()
