"""Locks on a listable remote (a directory, a bucket), as restic keeps them: each `cas push`
holds a shared lock while it uploads and publishes, `cas gc --remote` an exclusive one while it
deletes. Each side creates its lock object first and then lists ``locks/``; of two that start
together at least one sees the other and backs off, so GC never deletes a blob a push is about
to publish. Whether a lock's holder is gone is fs/writers.py's rule, read from the lock's name
(``<kind>-<writer id>.json``): at once for a dead process of this machine, else when it has not
been refreshed for ``STALE`` seconds (by the remote's clock); holders refresh by writing a new
lock object every ``REFRESH`` seconds.
Remotes that cannot be listed (HTTP) cannot be collected either, so pushes to them take none."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from casstore.errors import Conflict, NotFound, RemoteError
from casstore.fs.writers import Writer, gone, parse_writer, writer_id
from casstore.remotes.base import Remote

log = logging.getLogger("casstore")

LOCKS = "locks/"
STALE = 6 * 3600.0
REFRESH = 600.0


class RemoteLock:
    def __init__(self, remote: Remote, kind: str) -> None:
        assert kind in ("push", "gc")
        self.remote, self.kind = remote, kind
        self.name: str | None = None
        self._refresher: asyncio.Task | None = None

    async def _create(self) -> str:
        name = f"{LOCKS}{self.kind}-{writer_id()}.json"
        data = json.dumps({"kind": self.kind, **Writer.me().record(), "time": time.time()}).encode()
        await self.remote.put_small(name, data)
        return name

    async def __aenter__(self) -> RemoteLock:
        if not self.remote.listable:
            return self
        self.name = await self._create()
        now = await self.remote.now()
        others = [x async for x in self.remote.listing(LOCKS) if x.key != self.name and not _gone(x, now)]
        blocking = [x for x in others if self.kind == "gc" or x.key.startswith(f"{LOCKS}gc-")]
        if blocking:
            await self._release()
            what = "a push" if blocking[0].key.startswith(f"{LOCKS}push-") else "a remote GC"
            raise Conflict(f"{what} is running on {self.remote.url} (lock {self.remote.describe(blocking[0].key)}, "
                           f"{now - blocking[0].modified:.0f}s old); try again when it is done")
        self._refresher = asyncio.create_task(self._refresh())
        return self

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            with contextlib.suppress(RemoteError):
                old, self.name = self.name, await self._create()
                if old:
                    await self.remote.delete(old)

    async def _release(self) -> None:
        if self.name is not None:
            with contextlib.suppress(RemoteError, NotFound):
                await self.remote.delete(self.name)
            self.name = None

    async def __aexit__(self, *exc) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await asyncio.shield(self._release())


def _gone(x, now: float) -> bool:
    name = x.key.rpartition("/")[2]
    return gone(parse_writer(name.partition("-")[2]), x.modified, now, STALE)


async def stale_locks(remote: Remote) -> list[tuple[str, float]]:
    """Lock objects of dead processes: (key, age in seconds)."""
    now = await remote.now()
    return [(x.key, now - x.modified) async for x in remote.listing(LOCKS) if _gone(x, now)]
