"""One contract, every remote: memory, directory, `cas serve`, and nginx (read-only)."""

import asyncio
import os

import pytest

from casstore.digest import Digest
from casstore.errors import Conflict, NotFound
from casstore.remotes import blob, manifest
from casstore.remotes.directory import DirectoryRemote
from casstore.remotes.http import HttpRemote
from casstore.remotes.memory import MemoryRemote
from servers import CasServe, Nginx

DATA = os.urandom(3 * (1 << 20) + 12345)
D = Digest.of_bytes(DATA)


@pytest.fixture(params=["memory", "directory", "serve"])
def remote(request, tmp_path):
    if request.param == "memory":
        yield MemoryRemote()
    elif request.param == "directory":
        yield DirectoryRemote(tmp_path / "remote")
    else:
        srv = CasServe(tmp_path / "remote")
        yield HttpRemote(srv.url, token=srv.token)
        srv.stop()


def run(coro):
    return asyncio.run(coro)


async def read_all(r, key, start=0, end=None):
    return b"".join([c async for c in r.read(key, start, end)])


def test_objects(remote):
    async def go():
        async with remote:
            assert await remote.stat(blob(D)) is None
            with pytest.raises(NotFound):
                await read_all(remote, blob(D))
            await remote.write(blob(D), DATA)
            await remote.write(blob(D), DATA)  # idempotent
            assert await remote.stat(blob(D)) == len(DATA)
            assert await read_all(remote, blob(D)) == DATA
            assert await read_all(remote, blob(D), 5, 1 << 20) == DATA[5 : 1 << 20]
            assert await read_all(remote, blob(D), (1 << 20) + 7) == DATA[(1 << 20) + 7 :]
            assert await read_all(remote, blob(D), 0, 1) == DATA[:1]

    run(go())


def test_write_from_file(remote, tmp_path):
    f = tmp_path / "src.bin"
    f.write_bytes(DATA)

    async def go():
        async with remote:
            await remote.write(blob(D), f)
            assert await read_all(remote, blob(D)) == DATA

    run(go())


def test_index_compare_and_swap(remote):
    from casstore.index import Index, IndexEntry

    idx = Index("m", {"1.0": IndexEntry(D, 1, False, 10, 1)})

    async def go():
        async with remote:
            assert await remote.read_index("m") is None
            if isinstance(remote, HttpRemote):  # cas serve checks the manifest is there first
                from casstore.manifest import Entry, Manifest

                m = Manifest("m", "1.0", (Entry("f", len(DATA), D),))
                await remote.write(blob(D), DATA)
                await remote.write(manifest(m.digest()), m.encode())
                idx.versions["1.0"] = IndexEntry(m.digest(), 1, False, 10, 1)
            await remote.write_index("m", idx.encode(), None)
            data, tag = await remote.read_index("m")
            assert data == idx.encode()
            with pytest.raises(Conflict):
                await remote.write_index("m", idx.encode(), None)  # must not exist
            with pytest.raises(Conflict):
                await remote.write_index("m", idx.encode(), "0" * 64)  # stale tag
            await remote.write_index("m", idx.encode(), tag)

    run(go())


def test_nginx_serves_a_pushed_directory(tmp_path):
    root = tmp_path / "remote"
    dr = DirectoryRemote(root)
    run(dr.write(blob(D), DATA))
    run(dr.write_index("m", b'{"x": 1}', None))
    ngx = Nginx(root, tmp_path / "nginx")
    try:
        r = HttpRemote(ngx.url)

        async def go():
            async with r:
                assert await r.stat(blob(D)) == len(DATA)
                assert await r.stat(blob(Digest("0" * 64))) is None
                assert await read_all(r, blob(D)) == DATA
                assert await read_all(r, blob(D), 1000, 2_000_000) == DATA[1000:2_000_000]
                assert (await r.read_index("m"))[0] == b'{"x": 1}'
                assert await r.read_index("other") is None
                with pytest.raises(NotFound):
                    await read_all(r, blob(Digest("1" * 64)))

        run(go())
    finally:
        ngx.stop()
