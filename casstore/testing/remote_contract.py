"""The remote contract as a test suite any backend can run (needs pytest), in the manner of
zarr's ``StoreTests`` and restic's backend tests.

    from casstore.testing import ReadContract, WriteContract

    class TestMyRemote(WriteContract):
        def make(self, tmp_path):
            r = MyRemote(...)
            return r, r            # the remote under test, and a remote that can seed its objects

A read-only backend (a static HTTP server in front of a directory) subclasses ``ReadContract``
and returns a writable remote over the same storage as the seeder.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from casstore.errors import Conflict, IntegrityError, InvalidInput, NotFound, RemoteError
from casstore.model.chunkmap import ChunkMap
from casstore.model.digest import Digest
from casstore.model.index import Index, IndexEntry
from casstore.model.manifest import Entry, Manifest
from casstore.remotes.base import Remote, blob, chunks, manifest

DATA = random.Random(7).randbytes(3 * (1 << 20) + 12345)  # three chunks and a bit
D = Digest.of_bytes(DATA)
EMPTY = Digest.of_bytes(b"")


def run(coro):
    return asyncio.run(coro)


async def read_all(r: Remote, key, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([c async for c in r.read(key, start, end)])


class ReadContract:
    """What every remote must do for readers."""

    def make(self, tmp_path: Path) -> tuple[Remote, Remote]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop whatever ``make`` started."""

    @pytest.fixture
    def pair(self, tmp_path):
        remote, seeder = self.make(tmp_path)
        try:
            yield remote, seeder
        finally:
            self.close()

    def test_missing_object(self, pair):
        remote, _ = pair

        async def go():
            async with remote:
                assert await remote.stat(blob(D)) is None
                with pytest.raises(NotFound):
                    await read_all(remote, blob(D))
                assert await remote.read_index("nothing-here") is None

        run(go())

    def test_whole_object_and_random_ranges(self, pair):
        remote, seeder = pair
        rng = random.Random(1)
        ranges = [(0, 1), (5, 1 << 20), ((1 << 20) + 7, None), (len(DATA) - 1, None)]
        ranges += [tuple(sorted(rng.sample(range(len(DATA) + 1), 2))) for _ in range(20)]

        async def go():
            async with seeder:
                await seeder.write(blob(D), DATA)
            async with remote:
                assert await remote.stat(blob(D)) == len(DATA)
                assert await read_all(remote, blob(D, len(DATA))) == DATA
                for start, end in ranges:
                    assert await read_all(remote, blob(D, len(DATA)), start, end) == DATA[start:end], (start, end)

        run(go())

    def test_empty_object(self, pair):
        remote, seeder = pair

        async def go():
            async with seeder:
                await seeder.write(blob(EMPTY), b"")
            async with remote:
                assert await remote.stat(blob(EMPTY)) == 0
                assert await read_all(remote, blob(EMPTY, 0)) == b""

        run(go())

    def test_a_cancelled_read_leaves_the_remote_usable(self, pair):
        remote, seeder = pair

        async def go():
            async with seeder:
                await seeder.write(blob(D), DATA)
            async with remote:
                started = asyncio.Event()

                async def reader():
                    async for _ in remote.read(blob(D, len(DATA))):
                        started.set()
                        await asyncio.sleep(3600)

                task = asyncio.create_task(reader())
                await asyncio.wait_for(started.wait(), 30)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                stream = remote.read(blob(D, len(DATA)))  # stopped by its reader after one chunk
                async for _ in stream:
                    break
                await stream.aclose()
                assert await read_all(remote, blob(D, len(DATA))) == DATA

        run(go())

    def test_index_read(self, pair):
        remote, seeder = pair
        m = Manifest("m", "1.0", (Entry("f", len(DATA), D),))
        idx = Index("m", {"1.0": IndexEntry(m.digest(), 1, False, 10, 1)})

        async def go():
            async with seeder:
                await seeder.write(blob(D), DATA)
                await seeder.write(manifest(m.digest()), m.encode())
                await seeder.write_index("m", idx.encode(), None)
            async with remote:
                data, _ = await remote.read_index("m")
                assert data == idx.encode()
                assert await read_all(remote, manifest(m.digest())) == m.encode()

        run(go())


class WriteContract(ReadContract):
    """What a remote one publishes to must do besides."""

    def make(self, tmp_path: Path) -> tuple[Remote, Remote]:
        raise NotImplementedError

    def test_writes_are_idempotent(self, pair, tmp_path):
        remote, _ = pair
        f = tmp_path / "src.bin"
        f.write_bytes(DATA)

        async def go():
            async with remote:
                await remote.write(blob(D), f)
                await remote.write(blob(D), DATA)
                assert await read_all(remote, blob(D)) == DATA

        run(go())

    def test_wrong_bytes_are_never_published(self, pair, tmp_path):
        remote, _ = pair
        f = tmp_path / "bad.bin"
        f.write_bytes(DATA[:-1] + b"!")

        async def go():
            async with remote:
                for source in (DATA[:-1] + b"!", f):
                    with pytest.raises(IntegrityError):
                        await remote.write(blob(D), source)
                    assert await remote.stat(blob(D)) is None

        run(go())

    def test_chunk_maps_are_published_by_their_blob_and_checked(self, pair):
        """A chunk map is named by its blob's digest, not its own: a backend checks it is a map of
        that blob instead of hashing it (model/chunkmap.py)."""
        remote, _ = pair
        good = ChunkMap(D, len(DATA), "cdc", (len(DATA),), Digest.of_bytes(DATA).hex.encode()[:32]).encode()
        other = Digest.of_bytes(b"another blob")

        async def go():
            async with remote:
                await remote.write(chunks(D), good)
                await remote.write(chunks(D), good)
                assert await read_all(remote, chunks(D)) == good
                with pytest.raises((InvalidInput, IntegrityError, RemoteError)):  # refused, however it is said
                    await remote.write(chunks(other), good)
                assert await remote.stat(chunks(other)) is None

        run(go())

    def test_index_compare_and_swap(self, pair):
        remote, _ = pair
        m = Manifest("m", "1.0", (Entry("f", len(DATA), D),))
        idx = Index("m", {"1.0": IndexEntry(m.digest(), 1, False, 10, 1)})

        async def go():
            async with remote:
                await remote.write(blob(D), DATA)
                await remote.write(manifest(m.digest()), m.encode())
                await remote.write_index("m", idx.encode(), None)
                data, tag = await remote.read_index("m")
                assert data == idx.encode()
                with pytest.raises(Conflict):
                    await remote.write_index("m", idx.encode(), None)  # must not exist yet
                with pytest.raises(Conflict):
                    await remote.write_index("m", idx.encode(), "0" * 64)  # a stale tag
                await remote.write_index("m", idx.encode(), tag)

        run(go())


__all__ = ["DATA", "D", "ReadContract", "WriteContract", "read_all", "run"]
