"""The remote contract as a test suite any backend can run (needs pytest), in the manner of
zarr v3's ``StoreTests`` and restic's backend tests: every method of ``Remote``, each checked
against the storage underneath (casstore/testing/storage.py), never against the backend itself.

    from casstore.testing import ReadContract, WriteContract, DirectoryStorage

    class TestMyRemote(WriteContract):
        def make(self, tmp_path):
            return MyRemote(tmp_path / "r"), DirectoryStorage(tmp_path / "r")

A read-only backend (a static HTTP server in front of a directory) subclasses ``ReadContract``.
Optional parts are declared capabilities (``listable``, ``threaded_reads``, ``uploads``): a
remote without one must refuse it clearly, and the suite checks that instead.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from casstore.errors import Conflict, IntegrityError, InvalidInput, NotFound, RemoteError, RemoteRefused
from casstore.model.chunkmap import ChunkMap
from casstore.model.digest import Digest
from casstore.model.index import Index, IndexEntry
from casstore.model.manifest import Entry, Manifest
from casstore.remotes.base import FORMAT_FILE, Paced, Remote, blob, chunks, index_path, manifest
from casstore.testing.storage import Storage

DATA = random.Random(7).randbytes(3 * (1 << 20) + 12345)  # three chunks and a bit
D = Digest.of_bytes(DATA)
EMPTY = Digest.of_bytes(b"")
SMALL = [random.Random(i).randbytes(100 + i) for i in range(3)]
FORMAT = b'{"casstore_remote": 1}\n'
CLOCK_SLACK = 120.0  # every server here runs on this machine's clock


def run(coro):
    return asyncio.run(coro)


async def read_all(r: Remote, key, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([c async for c in r.read(key, start, end)])


def seed(storage: Storage, data: bytes) -> tuple:
    """A blob placed in the storage directly: its key (with size) and bytes."""
    k = blob(Digest.of_bytes(data), len(data))
    storage.put(k.path, data)
    return k, data


def an_index() -> tuple[Manifest, bytes]:
    m = Manifest("m", "1.0", (Entry("f", len(DATA), D),))
    return m, Index("m", {"1.0": IndexEntry(m.digest(), 1, False, 10, 1)}).encode()


class ReadContract:
    """What every remote must do for readers, and refuse or do for housekeeping."""

    def make(self, tmp_path: Path) -> tuple[Remote, Storage]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop whatever ``make`` started."""

    @pytest.fixture
    def pair(self, tmp_path):
        remote, storage = self.make(tmp_path)
        try:
            yield remote, storage
        finally:
            self.close()

    # stat, read, read_index, missing --------------------------------------------------------------

    def test_an_absent_object(self, pair):
        remote, _ = pair

        async def go():
            async with remote:
                assert await remote.stat(blob(D)) is None
                with pytest.raises(NotFound):
                    await read_all(remote, blob(D))
                assert await remote.read_index("nothing-here") is None

        run(go())

    def test_reads_what_the_storage_holds_whole_and_in_ranges(self, pair):
        remote, storage = pair
        k, data = seed(storage, DATA)
        rng = random.Random(1)
        ranges = [(0, 1), (5, 1 << 20), ((1 << 20) + 7, None), (len(DATA) - 1, None)]
        ranges += [tuple(sorted(rng.sample(range(len(DATA) + 1), 2))) for _ in range(20)]

        async def go():
            async with remote:
                assert await remote.stat(k) == len(DATA)
                assert await read_all(remote, k) == data
                for start, end in ranges:
                    assert await read_all(remote, k, start, end) == data[start:end], (start, end)

        run(go())

    def test_an_empty_object(self, pair):
        remote, storage = pair
        k, _ = seed(storage, b"")

        async def go():
            async with remote:
                assert await remote.stat(k) == 0
                assert await read_all(remote, k) == b""

        run(go())

    def test_a_cancelled_read_leaves_the_remote_usable(self, pair):
        remote, storage = pair
        k, data = seed(storage, DATA)

        async def go():
            async with remote:
                started = asyncio.Event()

                async def reader():
                    async for _ in remote.read(k):
                        started.set()
                        await asyncio.sleep(3600)

                task = asyncio.create_task(reader())
                await asyncio.wait_for(started.wait(), 30)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                stream = remote.read(k)  # stopped by its reader after one chunk
                async for _ in stream:
                    break
                await stream.aclose()
                assert await read_all(remote, k) == data

        run(go())

    def test_read_into_hands_over_a_range_in_order_or_is_declared_absent(self, pair):
        remote, storage = pair
        k, data = seed(storage, DATA)

        async def go():
            async with remote:
                await remote.probe_ranges(k)  # a threaded read needs ranges known (the engine asks first)
                if not remote.threaded_reads:
                    with pytest.raises(NotImplementedError):
                        await asyncio.to_thread(remote.read_into, k, 0, 10, lambda v: True)
                    return
                for start, end in [(0, len(data)), (12345, (1 << 20) + 99), (len(data) - 3, len(data))]:
                    got = bytearray()
                    await asyncio.to_thread(remote.read_into, k, start, end, lambda v, got=got: got.extend(v) or True)
                    assert bytes(got) == data[start:end], (start, end)
                seen = bytearray()

                def stop_after_first(v):
                    seen.extend(v)
                    return not seen  # an empty piece (before a retry) asks whether to go on
                await asyncio.to_thread(remote.read_into, k, 0, len(data), stop_after_first)
                assert 0 < len(seen) < len(data) and bytes(seen) == data[:len(seen)]

        run(go())

    def test_read_index_returns_the_stored_bytes_and_a_tag_that_follows_them(self, pair):
        remote, storage = pair
        _, idx = an_index()
        storage.put(index_path("m"), idx)
        storage.put(index_path("other"), idx + b" ")

        async def go():
            async with remote:
                data, tag = await remote.read_index("m")
                assert data == idx and isinstance(tag, str) and tag
                data2, tag2 = await remote.read_index("other")
                assert data2 == idx + b" " and tag2 != tag

        run(go())

    # probe_ranges, describe, looks_like_remote, now, close, uploads -------------------------------

    def test_probe_ranges_learns_whether_ranges_are_served(self, pair):
        remote, storage = pair
        k, _ = seed(storage, DATA)

        async def go():
            async with remote:
                await remote.probe_ranges(k)
                assert remote.ranges in (True, False)

        run(go())

    def test_describe_names_the_remote_and_the_object(self, pair):
        remote, _ = pair
        k = blob(D)
        assert remote.describe(k).endswith(k.path)
        assert remote.describe(index_path("m")).endswith(index_path("m"))
        base = remote.url.rstrip("/")
        assert remote.describe(k).startswith(base), (remote.describe(k), base)

    def test_looks_like_remote_follows_the_format_file(self, pair):
        remote, storage = pair

        async def go():
            async with remote:
                assert await remote.looks_like_remote() == (FORMAT_FILE in storage.names())
                storage.put(FORMAT_FILE, FORMAT)
                assert await remote.looks_like_remote()

        run(go())

    def test_now_is_the_remotes_clock(self, pair):
        remote, storage = pair
        storage.put(FORMAT_FILE, FORMAT)

        async def go():
            async with remote:
                assert abs(await remote.now() - time.time()) < CLOCK_SLACK

        run(go())

    def test_close_twice_then_use_again(self, pair):
        remote, storage = pair
        k, data = seed(storage, SMALL[0])

        async def go():
            async with remote:
                assert await read_all(remote, k) == data
            await remote.close()
            async with remote:  # a closed remote opens its connections again when used
                assert await read_all(remote, k) == data

        run(go())

    def test_multipart_uploads_are_a_declared_capability(self, pair):
        remote, _ = pair

        async def go():
            async with remote:
                if not remote.uploads:
                    with pytest.raises(RemoteRefused):
                        await remote.stale_uploads(time.time())
                    with pytest.raises(RemoteRefused):
                        await remote.abort_upload("blobs/00/x", "id")
                    return
                assert await remote.stale_uploads(0.0) == []  # none began before the epoch

        run(go())

    # listing, delete, put_small: listable remotes do them, the others refuse --------------------

    def test_listing_shows_what_the_storage_holds(self, pair):
        remote, storage = pair
        keys = {seed(storage, s)[0] for s in SMALL}
        m, _ = an_index()
        storage.put(manifest(m.digest()).path, m.encode())

        async def go():
            async with remote:
                if not remote.listable:
                    with pytest.raises(RemoteRefused):
                        [x async for x in remote.listing("blobs/")]
                    return
                now = await remote.now()
                got = [x async for x in remote.listing("blobs/")]
                assert sorted((x.key, x.size) for x in got) == sorted((k.path, k.size) for k in keys)
                assert [x.key for x in got] == sorted(x.key for x in got)  # ascending, as S3 lists
                assert all(abs(x.modified - now) < CLOCK_SLACK for x in got), (got, now)
                assert [x async for x in remote.listing("chunks/")] == []
                skipped = got[len(got) // 2].key
                rest = [x async for x in remote.listing("blobs/", skip=lambda key: key == skipped)]
                assert rest == [x for x in got if x.key != skipped]

        run(go())

    def test_delete_removes_from_the_storage(self, pair):
        remote, storage = pair
        k, _ = seed(storage, SMALL[0])
        keep, _ = seed(storage, SMALL[1])

        async def go():
            async with remote:
                if not remote.listable:
                    with pytest.raises(RemoteRefused):
                        await remote.delete(k.path)
                    assert storage.get(k.path) == SMALL[0]
                    return
                await remote.delete(k.path)
                await remote.delete(k.path)  # already gone: not an error
                assert storage.get(k.path) is None and storage.get(keep.path) == SMALL[1]

        run(go())

    def test_put_small_creates_only_what_is_absent(self, pair):
        remote, storage = pair
        rel = "locks/contract-test.json"

        async def go():
            async with remote:
                if not remote.listable:
                    with pytest.raises(RemoteRefused):
                        await remote.put_small(rel, b"first")
                    assert storage.get(rel) is None
                    return
                assert await remote.put_small(rel, b"first") is True
                assert await remote.put_small(rel, b"second") is False
                assert storage.get(rel) == b"first"

        run(go())


class WriteContract(ReadContract):
    """What a remote one publishes to must do besides."""

    def test_missing_names_what_is_absent_or_of_another_size(self, pair):
        """What a publisher asks of its target before uploading."""
        remote, storage = pair
        present = [seed(storage, s)[0] for s in SMALL]
        absent = blob(Digest.of_bytes(b"absent"), 6)
        wrong_size = blob(present[0].digest, present[0].size + 1)

        async def go():
            async with remote:
                assert await remote.missing(present) == set()
                assert await remote.missing([*present, absent]) == {absent}
                assert wrong_size in await remote.missing([wrong_size, present[1]])

        run(go())

    def test_a_write_lands_in_the_storage_under_its_key(self, pair, tmp_path):
        remote, storage = pair
        f = tmp_path / "src.bin"
        f.write_bytes(DATA)
        m, _ = an_index()

        async def go():
            async with remote:
                await remote.write(blob(D), f)
                await remote.write(manifest(m.digest()), m.encode())
                await remote.write(blob(EMPTY), b"")
            assert storage.get(blob(D).path) == DATA
            assert storage.get(manifest(m.digest()).path) == m.encode()
            assert storage.get(blob(EMPTY).path) == b""

        run(go())

    def test_a_paced_write_books_every_byte_and_lands_whole(self, pair, tmp_path):
        """`cas push --limit-rate`: a ``Paced`` file goes through its limiter (read by read, or
        part by part) and arrives as it would unpaced; a wrong one is still refused."""
        remote, storage = pair
        f = tmp_path / "src.bin"
        f.write_bytes(DATA)
        bad = tmp_path / "bad.bin"
        bad.write_bytes(DATA[:-1] + b"!")

        class Counting:
            booked = 0

            async def take(self, n: int) -> None:
                Counting.booked += n

            def take_blocking(self, n: int) -> None:
                Counting.booked += n

        async def go():
            async with remote:
                with pytest.raises(IntegrityError):
                    await remote.write(blob(D), Paced(bad, Counting()))
                Counting.booked = 0
                await remote.write(blob(D), Paced(f, Counting()))
            assert storage.get(blob(D).path) == DATA
            assert Counting.booked >= len(DATA)  # some backends read twice (S3: checksum, then send)

        run(go())

    def test_writes_are_idempotent(self, pair, tmp_path):
        remote, storage = pair
        f = tmp_path / "src.bin"
        f.write_bytes(DATA)

        async def go():
            async with remote:
                await remote.write(blob(D), f)
                await remote.write(blob(D), DATA)
            assert storage.get(blob(D).path) == DATA

        run(go())

    def test_wrong_bytes_are_never_published(self, pair, tmp_path):
        remote, storage = pair
        f = tmp_path / "bad.bin"
        f.write_bytes(DATA[:-1] + b"!")

        async def go():
            async with remote:
                for source in (DATA[:-1] + b"!", f):
                    with pytest.raises(IntegrityError):
                        await remote.write(blob(D), source)
            assert storage.get(blob(D).path) is None

        run(go())

    def test_chunk_maps_are_published_by_their_blob_and_checked(self, pair):
        """A chunk map is named by its blob's digest, not its own: a backend checks it is a map of
        that blob instead of hashing it (model/chunkmap.py)."""
        remote, storage = pair
        good = ChunkMap(D, len(DATA), "cdc", (len(DATA),), Digest.of_bytes(DATA).hex.encode()[:32]).encode()
        other = Digest.of_bytes(b"another blob")

        async def go():
            async with remote:
                await remote.write(chunks(D), good)
                await remote.write(chunks(D), good)
                with pytest.raises((InvalidInput, IntegrityError, RemoteError)):  # refused, however it is said
                    await remote.write(chunks(other), good)
            assert storage.get(chunks(D).path) == good
            assert storage.get(chunks(other).path) is None

        run(go())

    def test_index_compare_and_swap(self, pair):
        remote, storage = pair
        m, idx = an_index()
        newer = idx + b"\n"

        async def go():
            async with remote:
                await remote.write(blob(D), DATA)  # a server may refuse an index naming what it lacks
                await remote.write(manifest(m.digest()), m.encode())
                await remote.write_index("m", idx, None)
                assert storage.get(index_path("m")) == idx
                data, tag = await remote.read_index("m")
                assert data == idx
                with pytest.raises(Conflict):
                    await remote.write_index("m", newer, None)  # must not exist yet
                with pytest.raises(Conflict):
                    await remote.write_index("m", newer, "0" * 64)  # a stale tag
                assert storage.get(index_path("m")) == idx
                await remote.write_index("m", newer, tag)
                assert storage.get(index_path("m")) == newer
                with pytest.raises(Conflict):
                    await remote.write_index("m", idx, tag)  # the tag moved with the bytes

        run(go())


__all__ = ["DATA", "D", "ReadContract", "WriteContract", "read_all", "run", "seed"]
