"""Misbehaving HTTP servers (real aiohttp servers on loopback): clear errors, nothing published.

Each case checks: the error names the URL and the digest, no blob or tag appears, nothing sits
under a final name, and what the store held before still verifies.
"""

import asyncio
import gzip
import json
import os
import time

import pytest
from aiohttp import web

from casstore.errors import (
    IntegrityError,
    InvalidInput,
    InvalidManifest,
    NotFound,
    RemoteError,
    RemoteProtocolError,
    RemoteStatusError,
    RemoteTooSlow,
)
from casstore.model.digest import Digest
from casstore.model.index import Index, IndexEntry
from casstore.model.manifest import Entry, Manifest
from casstore.ops.add import add
from casstore.ops.fetch import fetch
from casstore.remotes.http import HttpRemote
from casstore.transfer.download import Settings

from conftest import assert_store_consistent, make_model
from servers import ThreadedApp, listening_socket, serve_connections

SIZE = 2 << 20
DATA = os.urandom(SIZE)
D = Digest.of_bytes(DATA)
M = Manifest("m", "1.0.0", (Entry("weights.bin", SIZE, D),), created=1)
MD = M.digest()
FAST = dict(attempts=2, backoff=0.01, low_speed_time=1.0, jobs=2)


def index_bytes(digest=MD):
    return Index("m", {"1.0.0": IndexEntry(digest, 1, False, SIZE, 1)}).encode()


class Hostile:
    """Serves index and manifest correctly; ``blob`` decides how the blob is (mis)served."""

    def __init__(self, blob, index=None, manifest=None):
        self.blob, self.requests = blob, []
        self.index = index or index_bytes()
        self.manifest = manifest or M.encode()
        app = web.Application()
        app.router.add_get("/index/m.json", self._index)
        app.router.add_get("/manifests/{a}/{name}", self._manifest)
        app.router.add_get("/blobs/{a}/{name}", self._blob)
        self.server = ThreadedApp(app)
        self.url = self.server.url

    async def _index(self, request):
        return web.Response(body=self.index)

    async def _manifest(self, request):
        return web.Response(body=self.manifest)

    async def _blob(self, request):
        self.requests.append((time.monotonic(), dict(request.headers)))
        return await self.blob(request, len(self.requests))


def rng(request):
    h = request.headers.get("Range")
    if not h:
        return 0, SIZE
    a, b = h.removeprefix("bytes=").split("-")
    return int(a), (int(b) + 1 if b else SIZE)


async def good(request, n):
    a, b = rng(request)
    status = 206 if request.headers.get("Range") else 200
    headers = {"Content-Range": f"bytes {a}-{b - 1}/{SIZE}"} if status == 206 else {}
    return web.Response(status=status, body=DATA[a:b], headers=headers)


@pytest.fixture
def populated(store, tmp_path):
    add(store, make_model(tmp_path / "old", {"old.bin": 1000}), "old", "1")
    return store


def run_fetch(store, url, token=None, stall=5.0, threaded=False, **over):
    async def go():
        r = HttpRemote(url, token=token, stall_timeout=stall)
        if threaded:  # as if a probe had found ranges served: parts go through the engine's threads
            r.ranges = True
        try:
            return await fetch(store, [r], "m", "1.0.0", settings=Settings(**{**FAST, **over}))
        finally:
            await r.close()

    return asyncio.run(go())


def assert_nothing_published(store):
    assert not store.has_blob(D)
    assert store.refs.get_tag("m", "1.0.0") is None
    assert_store_consistent(store)
    assert store.refs.get_tag("old", "1") is not None


def expect_error(store, server, exc, *needles, **kw):
    try:
        with pytest.raises(exc) as e:
            run_fetch(store, server.url, **kw)
    finally:
        server.server.stop()
    for n in needles:
        assert n in str(e.value), str(e.value)
    if isinstance(e.value, RemoteError):  # typed: what failed, where, and for which blob
        assert e.value.digest == D and BLOB_URL in e.value.url, (e.value.digest, e.value.url)
    assert_nothing_published(store)
    return e.value


BLOB_URL = f"blobs/{D.hex[:2]}/{D.hex}"


def test_endless_body(populated):
    async def endless(request, n):
        resp = web.StreamResponse()  # chunked, no length: "more bytes than declared"
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(os.urandom(1 << 20))
        return resp

    expect_error(populated, Hostile(endless), RemoteProtocolError, BLOB_URL, str(D), "more than")


def test_declared_longer_than_asked(populated):
    async def longer(request, n):
        return web.Response(body=DATA + b"x" * 100)

    expect_error(populated, Hostile(longer), RemoteProtocolError, BLOB_URL, "declared")


def test_compressed_body_not_inflated(populated):
    bomb = gzip.compress(b"\0" * (64 << 20))

    async def gz(request, n):
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip"})

    expect_error(populated, Hostile(gz), RemoteProtocolError, BLOB_URL, "gzip", "refusing to inflate")


def test_drip_is_cut(populated):
    async def drip(request, n):
        resp = web.StreamResponse(headers={"Content-Length": str(SIZE)})
        await resp.prepare(request)
        for i in range(30):
            await resp.write(DATA[i : i + 1])
            await asyncio.sleep(0.2)
        return resp

    expect_error(populated, Hostile(drip), RemoteTooSlow, BLOB_URL, str(D), "B/s")


def test_silent_server_hits_stall_timeout(populated):
    async def silent(request, n):
        resp = web.StreamResponse(headers={"Content-Length": str(SIZE)})
        await resp.prepare(request)
        await asyncio.sleep(5)
        return resp

    expect_error(populated, Hostile(silent), RemoteTooSlow, BLOB_URL, str(D), stall=0.5)


async def reset_half(request, n):
    resp = web.StreamResponse(headers={"Content-Length": str(SIZE)})
    await resp.prepare(request)
    await resp.write(DATA[: SIZE // 2])
    request.transport.close()
    return resp


def test_reset_then_503s(populated):
    async def blob(request, n):
        if n == 1:
            return await reset_half(request, n)
        return web.Response(status=503, headers={"Retry-After": "0"})

    err = expect_error(populated, Hostile(blob), RemoteStatusError, BLOB_URL, str(D), "503")
    assert "giving up" in str(err) and err.status == 503 and err.retryable
    # Not under a final name; kept in tmp/downloads so the next run resumes from the first half.
    assert list((populated.layout.tmp / "downloads").glob("*.part"))


def test_reset_then_recovery_resumes_within_the_run(populated):
    async def blob(request, n):
        return await (reset_half(request, n) if n == 1 else good(request, n))

    srv = Hostile(blob)
    try:
        res = run_fetch(populated, srv.url, part_size=SIZE)
    finally:
        srv.server.stop()
    assert res.stats.bytes_downloaded == SIZE and res.stats.retries >= 1
    assert srv.requests[1][1]["Range"] == f"bytes={SIZE // 2}-{SIZE - 1}"
    assert_store_consistent(populated)


def test_retry_after_is_honoured(populated):
    async def blob(request, n):
        if n == 1:
            return web.Response(status=503, headers={"Retry-After": "1"})
        return await good(request, n)

    srv = Hostile(blob)
    try:
        run_fetch(populated, srv.url, part_size=SIZE)
    finally:
        srv.server.stop()
    assert srv.requests[1][0] - srv.requests[0][0] >= 0.9


def test_wrong_bytes(populated):
    async def wrong(request, n):
        a, b = rng(request)
        bad = bytearray(DATA[a:b])
        bad[len(bad) // 2] ^= 1
        status = 206 if request.headers.get("Range") else 200
        return web.Response(status=status, body=bytes(bad), headers={"Content-Range": f"bytes {a}-{b - 1}/{SIZE}"})

    expect_error(populated, Hostile(wrong), IntegrityError, BLOB_URL, str(D), "hash to")
    assert not list((populated.layout.tmp / "downloads").glob("*"))


def test_short_content_length(populated):
    async def short(request, n):
        return web.Response(body=DATA[: SIZE - 10])

    expect_error(populated, Hostile(short), RemoteProtocolError, BLOB_URL, "declared")


def test_missing_blob(populated):
    async def missing(request, n):
        return web.Response(status=404)

    expect_error(populated, Hostile(missing), NotFound, BLOB_URL, str(D))


def test_index_with_malformed_digest(populated):
    idx = json.loads(index_bytes())
    idx["versions"]["1.0.0"]["manifest"] = "blake3:../../etc/passwd"
    expect_error(populated, Hostile(good, index=json.dumps(idx).encode()), InvalidInput, "index/m.json", "../../etc/passwd")


def test_manifest_with_traversal_path(populated):
    evil = M.encode().replace(b'"weights.bin"', b'"../../weights.bin"')
    expect_error(populated, Hostile(good, index=index_bytes(Digest.of_bytes(evil)), manifest=evil),
                 InvalidManifest, "manifests/", "../../weights.bin")


def test_manifest_not_matching_its_digest(populated):
    other = Manifest("m", "1.0.0", (Entry("x.bin", SIZE, D),), created=1).encode()
    expect_error(populated, Hostile(good, manifest=other), IntegrityError, "manifests/", str(MD))


@pytest.mark.parametrize("threaded", [False, True])
def test_token_does_not_follow_a_redirect_to_another_origin(populated, threaded_reads, threaded):
    seen = []

    async def elsewhere(request):
        seen.append(request.headers.get("Authorization"))
        return await good(request, 0)

    app = web.Application()
    app.router.add_get("/{tail:.*}", elsewhere)
    other = ThreadedApp(app)

    async def redirect(request, n):
        if request.headers.get("Authorization") != "Bearer s3cret":
            raise web.HTTPUnauthorized()  # reads need the token here: sent again with it
        raise web.HTTPFound(other.url + BLOB_URL)

    srv = Hostile(redirect)
    try:
        res = run_fetch(populated, srv.url, token="s3cret", threaded=threaded)
    finally:
        srv.server.stop()
        other.stop()
    assert seen and all(h is None for h in seen)
    assert res.stats.bytes_downloaded == SIZE and populated.has_blob(D)
    assert bool(threaded_reads) == threaded  # which HTTP path was taken


def test_index_sent_in_small_pieces_is_read_whole(populated, tmp_path):
    """A 2 MB index written 4 KiB at a time with pauses: the body is read to its end, not to
    whatever happened to be buffered."""
    versions = {f"1.0.{i}": IndexEntry(MD, 1, False, SIZE, 1) for i in range(16_000)}
    versions["1.0.0"] = IndexEntry(MD, 1, False, SIZE, 1)
    big = Index("m", versions).encode()
    assert len(big) > 2_000_000

    async def trickle(request):
        resp = web.StreamResponse(headers={"Content-Length": str(len(big))})
        await resp.prepare(request)
        for i in range(0, len(big), 4096):
            await resp.write(big[i : i + 4096])
            if i % (256 << 10) == 0:
                await asyncio.sleep(0.01)
        return resp

    server = Hostile(good)
    server.server.stop()
    app = web.Application()
    app.router.add_get("/index/m.json", trickle)
    app.router.add_get("/manifests/{a}/{name}", server._manifest)
    app.router.add_get("/blobs/{a}/{name}", server._blob)
    s = ThreadedApp(app)
    try:
        res = run_fetch(populated, s.url)
    finally:
        s.stop()
    assert res.version == "1.0.0" and populated.has_blob(D)


async def ignores_range(request, n):
    return web.Response(body=DATA)  # 200 and the whole object, whatever Range said


def test_server_that_ignores_range_is_not_split_and_still_works(populated):
    server = Hostile(ignores_range)
    try:
        run_fetch(populated, server.url, part_size=256 << 10, min_split=64 << 10, jobs=4)
    finally:
        server.server.stop()
    assert populated.has_blob(D)
    assert_store_consistent(populated)
    # The manifest came without Accept-Ranges, so the blob came in one request, not one per part.
    assert len(server.requests) == 1, [h.get("Range") for _, h in server.requests]


def test_range_probe_when_nothing_told_the_engine(populated):
    """Blobs fetched on their own (as `verify --repair` does): one 1-byte probe finds out that
    ranges are ignored before the blob is cut into parts."""
    from casstore.transfer.download import Downloader

    server = Hostile(ignores_range)

    async def go():
        r = HttpRemote(server.url)
        try:
            await Downloader(populated, [r], Settings(**{**FAST, "part_size": 256 << 10, "jobs": 4})).fetch({D: SIZE})
        finally:
            await r.close()

    try:
        asyncio.run(go())
    finally:
        server.server.stop()
    assert populated.has_blob(D)
    assert [h.get("Range") for _, h in server.requests] == ["bytes=0-0", f"bytes=0-{SIZE - 1}"]


def test_range_answered_with_200_mid_blob_skips_to_the_offset(tmp_path):
    async def go():
        srv = Hostile(ignores_range)
        r = HttpRemote(srv.url)
        try:
            from casstore.remotes.base import blob

            got = b"".join([c async for c in r.read(blob(D), 1000, 5000)])
            return got, r.ranges
        finally:
            await r.close()
            srv.server.stop()

    got, ranges = asyncio.run(go())
    assert got == DATA[1000:5000] and ranges is False


def test_fetch_a_split_blob_from_python_http_server(tmp_path):
    """`python -m http.server` knows no Range at all: a blob bigger than a part still arrives."""
    import subprocess
    import sys

    from casstore.store.objects import Store

    from conftest import CasRunner

    src = make_model(tmp_path / "src", {"big.bin": 3 << 20, "c.json": b"{}"})
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", src, "--name", "m", "--version", "1.0.0")
    pub("push", "m@1.0.0", "--remote", tmp_path / "nas")
    httpd = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
                             cwd=tmp_path / "nas", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(httpd.stdout.readline().split(" port ")[1].split()[0])  # "Serving HTTP on 127.0.0.1 port N ..."
        user = CasRunner(tmp_path / "user", tmp_path)
        p = subprocess.run(user.argv("fetch", "m@1.0.0", "--remote", f"http://127.0.0.1:{port}/"), capture_output=True,
                           text=True, env={**os.environ, "CAS_PART_SIZE": str(1 << 20)}, timeout=120)
        assert p.returncode == 0, p.stderr
    finally:
        httpd.kill()
        httpd.wait()
    store = Store.open(tmp_path / "user")
    assert_store_consistent(store)
    assert user("verify").returncode == 0


def test_cas_stall_timeout_applies_to_the_python_api(populated, monkeypatch):
    """CAS_STALL_TIMEOUT is one setting for every command and the API (it was read by `cas
    fetch` alone)."""
    import casstore

    async def silent(request, n):
        resp = web.StreamResponse(headers={"Content-Length": str(SIZE)})
        await resp.prepare(request)
        await asyncio.sleep(5)
        return resp

    server = Hostile(silent)
    monkeypatch.setenv("CAS_STALL_TIMEOUT", "0.5")
    monkeypatch.setenv("CAS_RETRY_ATTEMPTS", "1")
    try:
        # A timeout, not "ended after 0 bytes": the 0.5 s limit cut it before the server's 5 s.
        with pytest.raises(RemoteTooSlow) as e:
            casstore.fetch("m@1.0.0", store=populated, remote=server.url)
        assert e.value.url.startswith(server.url) and e.value.digest is not None and e.value.retryable
    finally:
        server.server.stop()
    assert_nothing_published(populated)


# The engine's threaded reads (remotes/http_blocking.py): the same refusals when the server
# answers ranges with 206, as nginx does. Each case checks that the threaded path was taken.


def ranged_head(request, extra=None):
    a, b = rng(request)
    return a, b, {"Content-Range": f"bytes {a}-{b - 1}/{SIZE}", **(extra or {})}


async def gz206(request, n):
    a, b, h = ranged_head(request, {"Content-Encoding": "gzip"})
    return web.Response(status=206, body=gzip.compress(DATA[a:b]), headers=h)


async def wrong_start206(request, n):
    a, b, _ = ranged_head(request)
    return web.Response(status=206, body=DATA[a:b], headers={"Content-Range": f"bytes {a + 1}-{b}/{SIZE}"})


async def endless206(request, n):
    _, _, h = ranged_head(request)
    resp = web.StreamResponse(status=206, headers=h)  # chunked, no length
    await resp.prepare(request)
    for _ in range(8):
        await resp.write(os.urandom(1 << 20))
    return resp


async def longer206(request, n):
    a, b, h = ranged_head(request)
    return web.Response(status=206, body=DATA[a:b] + b"x" * 100, headers=h)


async def ranged_stream(request):
    """A 206 for the range asked, headers sent, body still to come."""
    a, b, h = ranged_head(request)
    resp = web.StreamResponse(status=206, headers={**h, "Content-Length": str(b - a)})
    await resp.prepare(request)
    return a, b, resp


async def drip206(request, n):
    a, b, resp = await ranged_stream(request)
    for i in range(30):
        await resp.write(DATA[a + i: a + i + 1])
        await asyncio.sleep(0.2)
    return resp


async def silent206(request, n):
    _, _, resp = await ranged_stream(request)
    await asyncio.sleep(5)
    return resp


async def half206(request, n):
    a, b, resp = await ranged_stream(request)
    await resp.write(DATA[a: a + (b - a) // 2])
    request.transport.close()
    return resp


async def wrong206(request, n):
    a, b, h = ranged_head(request)
    bad = bytearray(DATA[a:b])
    bad[len(bad) // 2] ^= 1
    return web.Response(status=206, body=bytes(bad), headers=h)


async def unavailable(request, n):
    return web.Response(status=503, headers={"Retry-After": "0"})


@pytest.fixture
def threaded_reads(monkeypatch):
    """Counts the requests that went through ``HttpRemote.read_into``."""
    from casstore.remotes import http_blocking

    calls = []
    real = http_blocking.read_into

    def counted(*a, **kw):
        calls.append(a[2:4])
        return real(*a, **kw)

    monkeypatch.setattr(http_blocking, "read_into", counted)
    return calls


@pytest.mark.parametrize("blob, exc, needles, over", [
    (gz206, RemoteProtocolError, ("gzip", "refusing to inflate"), {}),
    (wrong_start206, RemoteProtocolError, ("answered range",), {}),
    (endless206, RemoteProtocolError, ("more than",), {}),
    (longer206, RemoteProtocolError, ("declared",), {}),
    (half206, RemoteProtocolError, ("ended after",), {}),
    (wrong206, IntegrityError, ("hash to",), {}),
    (drip206, RemoteTooSlow, ("B/s",), {}),
    (silent206, RemoteTooSlow, ("CAS_STALL_TIMEOUT",), {"stall": 0.5}),
    (unavailable, RemoteStatusError, ("503",), {}),
])
def test_threaded_reads_refuse_what_the_async_path_refuses(populated, threaded_reads, blob, exc, needles, over):
    expect_error(populated, Hostile(blob), exc, BLOB_URL, str(D), *needles, threaded=True, **over)
    assert threaded_reads and threaded_reads[0] == (0, SIZE)


def test_threaded_reads_resume_a_broken_answer_at_its_offset(populated, threaded_reads):
    async def blob(request, n):
        return await (half206(request, n) if n == 1 else good(request, n))

    srv = Hostile(blob)
    try:
        res = run_fetch(populated, srv.url, threaded=True)
    finally:
        srv.server.stop()
    assert res.stats.bytes_downloaded == SIZE and res.stats.retries == 1 and populated.has_blob(D)
    assert [h["Range"] for _, h in srv.requests] == [f"bytes=0-{SIZE - 1}", f"bytes={SIZE // 2}-{SIZE - 1}"]
    assert threaded_reads == [(0, SIZE), (SIZE // 2, SIZE)]
    assert_store_consistent(populated)


def test_threaded_reads_fall_back_when_a_range_is_answered_whole(populated, threaded_reads):
    """A server that answered ranges before and now sends 200 and the whole object: the next
    attempt goes through aiohttp, which skips to the offset."""
    srv = Hostile(ignores_range)
    try:
        res = run_fetch(populated, srv.url, threaded=True)
    finally:
        srv.server.stop()
    assert threaded_reads == [(0, SIZE)] and res.stats.retries == 0 and populated.has_blob(D)  # not a retry
    assert_store_consistent(populated)


def test_a_cancelled_threaded_fetch_leaves_no_thread_waiting_on_a_silent_server(populated):
    """Closing the remote shuts the sockets of engine threads still waiting for bytes: nothing is
    left blocked until the stall timeout (30 s here; the server is silent for 5)."""
    import threading

    srv = Hostile(silent206)

    def waiting() -> list:
        return [t for t in threading.enumerate() if t.name.startswith("cas-fetch") and t.is_alive()]

    async def go():
        r = HttpRemote(srv.url, stall_timeout=30)
        r.ranges = True
        task = asyncio.create_task(fetch(populated, [r], "m", "1.0.0", settings=Settings(**FAST)))
        await asyncio.sleep(1.0)
        assert waiting(), "a thread should be waiting on the silent server"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await r.close()

    try:
        t0 = time.monotonic()
        asyncio.run(go())
        while waiting() and time.monotonic() - t0 < 3.0:
            time.sleep(0.05)
        assert not waiting(), f"still waiting {time.monotonic() - t0:.1f} s after the start"
    finally:
        srv.server.stop()
    assert_nothing_published(populated)


class RawServer:
    """A TCP server on loopback that answers every request with ``answer(writer, request_line)``:
    for what aiohttp cannot send (headers dripped byte by byte, endless interim responses)."""

    def __init__(self, answer):
        import threading

        self.sock = listening_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.answer, self.stopped = answer, threading.Event()
        self.thread = serve_connections(self.sock, self.stopped, self._one)

    def _one(self, conn):
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            self.answer(conn, head.split(b"\r\n", 1)[0].decode(), self.stopped)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopped.set()
        self.sock.close()


def drip_headers(conn, line, stopped):
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not stopped.wait(0.2):
        conn.sendall(b"X")  # one byte of a header that never ends


def endless_interim(conn, line, stopped):
    while not stopped.wait(0.05):
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n")


def interim_then_blob(conn, line, stopped):
    a, b = (int(x) for x in line.split("bytes=")[-1].split()[0].split("-")) if "bytes=" in line else (0, SIZE - 1)
    for _ in range(3):
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n")
    body = DATA[a : b + 1]
    conn.sendall(f"HTTP/1.1 206 Partial Content\r\nContent-Length: {len(body)}\r\n"
                 f"Content-Range: bytes {a}-{b}/{SIZE}\r\nConnection: close\r\n\r\n".encode() + body)


def _bounded(fn, limit=30.0):
    """Run ``fn`` on a thread; it must return or raise within ``limit`` seconds (before: never)."""
    import threading

    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"still waiting after {limit}s"
    return out


@pytest.mark.parametrize("answer", [drip_headers, endless_interim], ids=["dripped headers", "endless 103s"])
def test_a_head_that_never_ends_costs_one_timeout(populated, answer):
    """Before: the stall timer restarted at every header byte; `cas fetch` was busy past 11 minutes."""
    srv = RawServer(answer)
    try:
        out = _bounded(lambda: run_fetch(populated, srv.url, stall=1.0, attempts=1))  # the index's GET (aiohttp)
        assert isinstance(out.get("error"), RemoteError) and srv.url in str(out["error"]), out
        key = __import__("casstore.remotes.base", fromlist=["blob"]).blob(D, SIZE)
        remote = HttpRemote(srv.url, stall_timeout=1.0)
        out = _bounded(lambda: remote.read_into(key, 0, SIZE, lambda piece: True))  # the engine's threads
        assert isinstance(out.get("error"), RemoteTooSlow) and "within 1s" in str(out["error"]), out
        remote.connections.close()
    finally:
        srv.stop()
    assert_nothing_published(populated)


def test_interim_responses_before_the_answer_are_skipped_on_the_threaded_path():
    srv = RawServer(interim_then_blob)
    try:
        from casstore.remotes.base import blob

        remote = HttpRemote(srv.url, stall_timeout=2.0)
        got = bytearray()
        remote.read_into(blob(D, SIZE), 0, SIZE, lambda piece: got.extend(piece) or True)
        assert bytes(got) == DATA
        remote.connections.close()
    finally:
        srv.stop()


def test_a_long_retry_after_is_capped_and_announced(populated, monkeypatch, caplog):
    """Before: `Retry-After: 300` waited 300 s per attempt, silently."""
    from casstore.remotes import layers

    monkeypatch.setattr(layers, "MAX_RETRY_AFTER", 0.3)

    async def blob(request, n):
        if n == 1:
            return web.Response(status=503, headers={"Retry-After": "3600"})
        return await good(request, n)

    srv = Hostile(blob)
    try:
        with caplog.at_level("WARNING", logger="casstore"):
            out = _bounded(lambda: run_fetch(populated, srv.url, part_size=SIZE))
    finally:
        srv.server.stop()
    assert "value" in out, out
    assert any("asks to retry after 3600s" in r.getMessage() and BLOB_URL in r.getMessage() for r in caplog.records)
