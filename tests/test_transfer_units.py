"""The download engine's pure parts and wrappers: ranges, rate limit, mirrors, slow-part splitting."""

import asyncio
import os

import pytest
from aiohttp import web

from casstore.model.digest import Digest
from casstore.remotes import blob
from casstore.remotes.directory import DirectoryRemote
from casstore.remotes.http import HttpRemote
from casstore.transfer.download import Downloader, Settings
from casstore.transfer.partials import gaps, merge
from casstore.transfer.ratelimit import RateLimiter

from servers import ThreadedApp, nginx, refusing_port


def test_range_bookkeeping():
    assert merge([[5, 10], [0, 5], [20, 30], [25, 40]]) == [[0, 10], [20, 40]]
    assert gaps(50, [[0, 10], [20, 40]]) == [(10, 20), (40, 50)]
    assert gaps(10, []) == [(0, 10)]
    assert gaps(10, [[0, 10]]) == []


def test_rate_limiter_schedules_bytes_at_the_rate():
    now = [0.0]
    slept = []

    async def sleep(d):
        slept.append(d)
        now[0] += d

    lim = RateLimiter(1000, burst=0.0, clock=lambda: now[0], sleep=sleep)

    async def go():
        for _ in range(10):
            await lim.take(500)  # 5,000 bytes at 1,000 B/s: 5 s of virtual time

    asyncio.run(go())
    assert now[0] == pytest.approx(5.0)


def test_a_paced_file_is_read_at_the_rate_shared_with_coroutines(tmp_path):
    """`cas push --limit-rate`: a backend's reads of a Paced file (on a thread) and other
    bookings of the same limiter (coroutines) share one schedule."""
    from casstore.remotes.base import Paced

    now = [0.0]

    def sleep_blocking(d):
        now[0] += d

    async def sleep(d):
        now[0] += d

    lim = RateLimiter(1 << 20, burst=0.0, clock=lambda: now[0], sleep=sleep, sleep_blocking=sleep_blocking)
    f = tmp_path / "w.bin"
    data = os.urandom(3 << 20)
    f.write_bytes(data)
    with Paced(f, lim).open() as r:
        assert r.read() == data  # 3 MiB at 1 MiB/s: 3 s of virtual time
    assert now[0] == pytest.approx(3.0)
    asyncio.run(lim.take(1 << 20))
    assert now[0] == pytest.approx(4.0)


def test_mirrors_tried_in_order(store, tmp_path):
    data = os.urandom(100_000)
    d = Digest.of_bytes(data)
    first, second = DirectoryRemote(tmp_path / "a"), DirectoryRemote(tmp_path / "b")
    asyncio.run(second.write(blob(d), data))

    async def go():
        return await Downloader(store, [first, second], Settings(attempts=1)).fetch({d: len(data)})

    st = asyncio.run(go())
    assert st.bytes_downloaded == len(data) and store.blob_path(d).read_bytes() == data


def test_idle_workers_split_a_slow_part(store):
    size = 8 << 20
    data = os.urandom(size)
    d = Digest.of_bytes(data)
    ranges = []

    async def handler(request):
        a, b = request.headers["Range"].removeprefix("bytes=").split("-")
        a, b = int(a), int(b) + 1
        ranges.append((a, b))
        resp = web.StreamResponse(status=206, headers={"Content-Range": f"bytes {a}-{b - 1}/{size}", "Content-Length": str(b - a)})
        await resp.prepare(request)
        # the first connection for real bytes crawls (not the one-byte range probe); later ones are fast
        slow = b - a > 1 and not any(y - x > 1 for x, y in ranges[:-1])
        for i in range(a, b, 64 << 10):
            await resp.write(data[i : min(b, i + (64 << 10))])
            if slow:
                await asyncio.sleep(0.05)
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    srv = ThreadedApp(app)
    try:
        async def go():
            r = HttpRemote(srv.url)
            try:
                return await Downloader(store, [r], Settings(jobs=4, part_size=size, min_split=256 << 10)).fetch({d: size})
            finally:
                await r.close()

        st = asyncio.run(go())
    finally:
        srv.stop()
    big = [(a, b) for a, b in ranges if b - a > 1]
    assert len(big) >= 2 and big[0][0] == 0 and any(a > 0 for a, _ in big[1:])
    assert st.bytes_downloaded == size and store.blob_path(d).read_bytes() == data


def test_a_mirror_that_refuses_connections_is_skipped_for_the_rest_of_the_run(store, tmp_path):
    """An unreachable first mirror costs one refused connection, not five retries per part."""
    good = DirectoryRemote(tmp_path / "good")
    blobs = {}
    for _i in range(6):
        data = os.urandom(300_000)
        d = Digest.of_bytes(data)
        asyncio.run(good.write(blob(d), data))
        blobs[d] = len(data)
    tries = []

    class Dead(HttpRemote):
        def read(self, key, start=0, end=None):
            tries.append(key)
            return super().read(key, start, end)

    dead = Dead(f"http://127.0.0.1:{refusing_port()}/")  # nothing listens there
    dl = None

    async def go():
        nonlocal dl
        try:
            dl = Downloader(store, [dead, good], Settings(jobs=3, backoff=0.5))
            return await dl.fetch(blobs)
        finally:
            await dead.close()

    st = asyncio.run(go())
    assert all(store.has_blob(d) for d in blobs)
    # demoted for the run after its first refusals (at most one per worker running then), never retried
    assert dl.remote.demoted == {0} and st.retries == 0 and len(tries) <= 3


def test_waiting_for_another_downloader_gives_up_with_lock_timeout(tmp_path):
    """A live process holds the blob's download lock: the wait is said out loud and ends with
    LockTimeout (exit 6), naming the holder."""
    import json
    import subprocess
    import sys

    from casstore.fs.writers import HOST
    from casstore.store.objects import Store

    from conftest import CasRunner, make_model

    pub = CasRunner(tmp_path / "pub", tmp_path)
    # Over SMALL_BLOB: a small blob is fetched without a lock.
    pub("add", make_model(tmp_path / "src", {"w.bin": b"weights" * 300_000}), "--name", "m", "--version", "1")
    pub("push", "m@1", "--remote", tmp_path / "nas")
    d = Store.open(tmp_path / "pub").load("m", "1")[2].entries[0].digest
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # alive, holds the lock
    try:
        user = Store.open(tmp_path / "user")
        locks = user.layout.tmp / "locks"
        locks.mkdir(parents=True)
        (locks / f"{d.hex}.lock").write_text(json.dumps({"host": HOST, "pid": holder.pid, "time": 0}))
        p = subprocess.run(CasRunner(tmp_path / "user", tmp_path).argv("fetch", "m@1", "--remote", tmp_path / "nas"),
                           capture_output=True, text=True, timeout=60, env={**os.environ, "CAS_LOCK_TIMEOUT": "1"})
        assert p.returncode == 6 and f"pid {holder.pid} on {HOST}" in p.stderr and "CAS_LOCK_TIMEOUT" in p.stderr
        assert not user.has_blob(d)
    finally:
        holder.kill()
        holder.wait()


def test_splitting_parts_wastes_no_bytes_on_the_wire(store, tmp_path):
    """Idle workers split in-flight parts, but only at the end of the range a connection has asked
    for: nginx's access log shows the blob's bytes sent once (plus the one-byte range probe)."""
    size = 24 << 20
    data = os.urandom(size)
    d = Digest.of_bytes(data)
    root = tmp_path / "www"
    (root / "blobs" / d.hex[:2]).mkdir(parents=True)
    (root / "blobs" / d.hex[:2] / d.hex).write_bytes(data)
    with nginx(root, tmp_path / "nginx", access_log=True) as server:
        async def go():
            r = HttpRemote(server.url)
            try:
                s = Settings(jobs=8, part_size=4 << 20, min_split=256 << 10, request_size=1 << 20)
                return await Downloader(store, [r], s).fetch({d: size})
            finally:
                await r.close()

        st = asyncio.run(go())
        sent = sum(n for _, path, _, n, _ in server.requests() if path.startswith("/blobs/"))
    assert st.bytes_downloaded == size and store.blob_path(d).read_bytes() == data
    assert size <= sent <= size + 1, sent - size


def small_server(data: bytes, serve):
    """An HTTP remote of one blob whose answers ``serve(request, n, a, b)`` shapes (n: 1-based)."""
    size = len(data)
    count = [0]

    async def handler(request):
        count[0] += 1
        rng = request.headers.get("Range")
        a, b = (int(x) for x in rng.removeprefix("bytes=").split("-")) if rng else (0, size - 1)
        return await serve(request, count[0], a, b + 1)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return ThreadedApp(app)


def fetch_one(store, url, d, size, **settings):
    async def go():
        r = HttpRemote(url)
        try:
            return await Downloader(store, [r], Settings(**{"attempts": 3, "backoff": 0.01, **settings})).fetch({d: size})
        finally:
            await r.close()

    return asyncio.run(go())


def test_small_blobs_are_fetched_without_lock_partial_or_record(store, tmp_path, monkeypatch):
    from casstore.transfer import download, lock, partials

    remote = DirectoryRemote(tmp_path / "nas")
    want = {}
    for n in (0, 1, 4096, download.SMALL_BLOB):
        data = os.urandom(n)
        asyncio.run(remote.write(blob(Digest.of_bytes(data)), data))
        want[Digest.of_bytes(data)] = n

    def forbidden(*a, **k):
        raise AssertionError("a small blob took the large-blob path")

    monkeypatch.setattr(lock, "acquire", forbidden)
    monkeypatch.setattr(partials, "fresh", forbidden)
    st = asyncio.run(Downloader(store, [remote]).fetch(want))
    assert st.bytes_downloaded == sum(want.values())
    for d in want:
        assert Digest.of_bytes(store.blob_path(d).read_bytes()) == d
        assert store.blob_path(d).stat().st_mode & 0o777 == 0o444
    assert not [p for p in store.layout.tmp.rglob("*") if p.is_file()]


def test_a_small_blob_with_wrong_bytes_is_refused_and_not_published(store):
    from casstore.errors import IntegrityError

    data = os.urandom(50_000)
    d = Digest.of_bytes(data)

    async def serve(request, n, a, b):
        bad = bytearray(data[a:b])
        bad[100] ^= 1
        return web.Response(body=bytes(bad))

    srv = small_server(data, serve)
    try:
        with pytest.raises(IntegrityError) as e:
            fetch_one(store, srv.url, d, len(data))
    finally:
        srv.stop()
    assert str(d) in str(e.value) and f"{srv.url}blobs/{d.hex[:2]}/{d.hex}" in str(e.value) and "hash to" in str(e.value)
    assert not store.has_blob(d)
    assert not [p for p in store.layout.tmp.rglob("*") if p.is_file()]


def test_a_small_blob_cut_off_mid_body_resumes_from_where_it_broke(store):
    data = os.urandom(300_000)
    d = Digest.of_bytes(data)
    asked = []

    async def serve(request, n, a, b):
        asked.append(request.headers.get("Range"))
        resp = web.StreamResponse(status=206, headers={"Content-Range": f"bytes {a}-{b - 1}/{len(data)}",
                                                       "Content-Length": str(b - a), "Accept-Ranges": "bytes"})
        await resp.prepare(request)
        if n == 1:  # half the body, then the connection dies
            await resp.write(data[a:a + 150_000])
            request.transport.close()
            return resp
        await resp.write(data[a:b])
        return resp

    srv = small_server(data, serve)
    try:
        st = fetch_one(store, srv.url, d, len(data))
    finally:
        srv.stop()
    assert store.blob_path(d).read_bytes() == data and st.retries >= 1
    assert asked[-1] is not None and int(asked[-1].removeprefix("bytes=").split("-")[0]) > 0


def test_small_blobs_hold_memory_only_while_they_download(store, tmp_path):
    """Every blob's job starts at once; a small blob's buffer must wait for its bytes, or 48
    blobs of 1 MiB would hold 48 MiB from the start (tracemalloc counts the buffers)."""
    import tracemalloc

    from casstore.transfer import download

    remote = DirectoryRemote(tmp_path / "nas")
    want = {}
    for i in range(48):
        data = os.urandom(download.SMALL_BLOB - i)
        asyncio.run(remote.write(blob(Digest.of_bytes(data)), data))
        want[Digest.of_bytes(data)] = len(data)
    tracemalloc.start()
    try:
        asyncio.run(Downloader(store, [remote], Settings(jobs=2)).fetch(want))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(store.has_blob(d) for d in want)
    assert peak < 24 << 20, f"peak {peak >> 20} MiB for 2 jobs"
