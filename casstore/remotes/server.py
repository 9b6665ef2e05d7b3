"""`cas serve`: a remote directory over HTTP, read by anyone, written only with the token.

Reads (GET/HEAD, with Range) are plain static files, so nginx or a CDN can stand in for this
server. Writes: each object is hashed while it is received into a temp file and published only
if it matches the digest in its path (a manifest also only once all its blobs are present; a
chunk map, named by its blob, only if it is a well-formed map of that blob);
the version index is replaced only if the client's If-Match names the current bytes. Every path
is matched against the remote layout before it touches the filesystem.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from casstore.errors import Conflict, InvalidInput
from casstore.fs.atomic import makedirs, publish_file, write_file
from casstore.fs.writers import temp_name
from casstore.model.chunkmap import MAX_MAP_BYTES, ChunkMap
from casstore.model.digest import Digest, StreamHasher
from casstore.model.index import MAX_INDEX_BYTES, Index
from casstore.model.keys import blob_key, chunks_key, manifest_key
from casstore.model.manifest import MAX_MANIFEST_BYTES, Manifest
from casstore.model.names import model_from_part
from casstore.remotes.base import FORMAT_FILE, FORMAT_VERSION
from casstore.remotes.directory import DirectoryRemote
from casstore.remotes.store_source import StoreSource, is_store

_BLOB = re.compile(r"blobs/([0-9a-f]{2})/([0-9a-f]{64})")
_MANIFEST = re.compile(r"manifests/([0-9a-f]{2})/([0-9a-f]{64})\.json")
_CHUNKS = re.compile(r"chunks/([0-9a-f]{2})/([0-9a-f]{64})")
_INDEX = re.compile(r"index/([^/]{1,260})\.json")
DEFAULT_MAX_OBJECT = 1 << 40
log = logging.getLogger("casstore.remotes.server")


def _classify(rel: str) -> tuple[str, str]:
    """Which kind of object a request path names, or HTTPNotFound; validates digests and names."""
    if rel == FORMAT_FILE:
        return "format", rel
    for kind, rx, key in (("blob", _BLOB, blob_key), ("manifest", _MANIFEST, manifest_key),
                          ("chunks", _CHUNKS, chunks_key)):
        if m := rx.fullmatch(rel):
            if key(Digest(m[2])) != rel:  # the one spelling of a key (model/keys.py)
                break
            return kind, m[2]
    if m := _INDEX.fullmatch(rel):
        try:
            return "index", model_from_part(m[1])
        except InvalidInput:
            pass
    raise web.HTTPNotFound(text=f"no such object: {rel}\n")


class _File(web.FileResponse):
    """A file sent through the connection's transport, 1 MiB at a time, rather than with
    sendfile(2): the kernel's sendfile bypasses the transport, so a client that stops reading
    would never make it pause, and the send timeout (``Guard.paused``) would never fire."""

    async def _sendfile(self, request, fobj, offset, count):
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None
        return await self._sendfile_fallback(writer, fobj, offset, count)


class Server:
    def __init__(self, root: Path, token: str | None, max_object: int = DEFAULT_MAX_OBJECT,
                 body_timeout: float = 60.0) -> None:
        self.root = Path(root)
        self.body_timeout = body_timeout
        self.token = token.encode() if token else None
        self.max_object = max_object
        # A store is served read-only, its index made from its tags: one node feeds its neighbours.
        self.read_only = is_store(self.root)
        self.remote = StoreSource(self.root) if self.read_only else DirectoryRemote(self.root)
        if not self.read_only:  # the same index compare-and-swap as a NAS remote
            makedirs(self.remote.tmp)
            fmt = self.root / FORMAT_FILE
            if not fmt.exists():
                write_file(fmt, f'{{"casstore_remote": {FORMAT_VERSION}}}\n'.encode(), self.remote.tmp)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("GET", "/{path:.*}", self.get)
        app.router.add_route("HEAD", "/{path:.*}", self.get)
        app.router.add_route("PUT", "/{path:.*}", self.put)
        return app

    async def get(self, request: web.Request) -> web.StreamResponse:
        kind, name = _classify(request.match_info["path"])
        path = self.root / request.match_info["path"]
        if kind == "format" and self.read_only:
            return web.Response(body=f'{{"casstore_remote": {FORMAT_VERSION}}}\n'.encode(), content_type="application/json")
        got = await self.remote.read_index(name) if kind == "index" else None
        if (kind == "index" and got is None) or (kind != "index" and not path.is_file()):
            raise web.HTTPNotFound(text=f"no such object: {request.match_info['path']}\n")
        if got is not None:
            return web.Response(body=got[0], content_type="application/json", headers={"ETag": f'"{got[1]}"'})
        return _File(path, chunk_size=1 << 20)

    def _authorize(self, request: web.Request) -> None:
        if self.token is None:
            raise web.HTTPForbidden(text="this server is read-only (started without a token)\n")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise web.HTTPUnauthorized(text="push needs a bearer token\n", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(auth[7:].encode(), self.token):
            raise web.HTTPForbidden(text="wrong token\n")

    async def put(self, request: web.Request) -> web.Response:
        rel = request.match_info["path"]
        kind, name = _classify(rel)
        if self.read_only:
            raise web.HTTPMethodNotAllowed("PUT", ["GET", "HEAD"],
                                           text="this server serves a store, read-only: push to a remote directory\n")
        self._authorize(request)
        if kind == "format":
            raise web.HTTPForbidden(text="the format file is not writable\n")
        limit = {"blob": self.max_object, "manifest": MAX_MANIFEST_BYTES, "index": MAX_INDEX_BYTES,
                 "chunks": MAX_MAP_BYTES}[kind]
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        final = self.root / rel
        if kind == "index":
            return await self._put_index(request, name, limit)
        if final.exists():
            return web.Response(status=200, text="already present\n")
        tmp = self.remote.tmp / temp_name("put.")
        hasher = StreamHasher()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                async for chunk in self._body(request):
                    hasher.update(chunk)
                    if hasher.size > limit:
                        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=hasher.size)
                    os.write(fd, chunk)
                if kind == "chunks":  # named by its blob: it must be a map of that blob
                    with open(tmp, "rb") as f:
                        self._check_chunks(f.read(), name, rel)
                elif hasher.digest().hex != name:
                    raise web.HTTPUnprocessableEntity(
                        text=f"body hashes to {hasher.digest()}, not blake3:{name}; rejected\n")
                if kind == "manifest":
                    with open(tmp, "rb") as f:
                        self._check_manifest(f.read(), rel)
                os.fchmod(fd, 0o444)
                publish_file(tmp, final, fd=fd, exclusive=False)
            finally:
                os.close(fd)
        finally:
            if tmp.exists():
                os.unlink(tmp)
        return web.Response(status=201, text="stored\n")

    async def _body(self, request: web.Request):
        """The request body piece by piece, however the client splits it; a client silent for
        ``body_timeout`` is cut off (408)."""
        while True:
            try:
                chunk = await asyncio.wait_for(request.content.readany(), self.body_timeout)
            except TimeoutError:
                raise web.HTTPRequestTimeout(text=f"no body bytes for {self.body_timeout:g}s\n") from None
            if not chunk:
                return
            yield chunk

    def _check_manifest(self, data: bytes, rel: str) -> None:
        try:
            m = Manifest.decode(data, source=rel)
        except InvalidInput as e:
            raise web.HTTPUnprocessableEntity(text=f"{e}\n") from e
        missing = [e for e in m.entries if not (self.root / blob_key(e.digest)).exists()]
        if missing:
            raise web.HTTPConflict(text=f"manifest lists {len(missing)} blob(s) not on the server, e.g. {missing[0].digest}\n")

    def _check_chunks(self, data: bytes, hexname: str, rel: str) -> None:
        try:
            ChunkMap.decode(data, blob=Digest(hexname), size=None, source=rel)
        except InvalidInput as e:
            raise web.HTTPUnprocessableEntity(text=f"{e}\n") from e

    async def _put_index(self, request: web.Request, model: str, limit: int) -> web.Response:
        buf = bytearray()
        async for chunk in self._body(request):
            buf += chunk
            if len(buf) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(buf))
        data = bytes(buf)
        try:
            idx = Index.decode(data, source=request.path, model=model)
        except InvalidInput as e:
            raise web.HTTPUnprocessableEntity(text=f"{e}\n") from e
        for v, entry in idx.versions.items():
            if not (self.root / manifest_key(entry.manifest)).exists():
                raise web.HTTPConflict(text=f"index names {model}@{v} -> {entry.manifest}, which is not on the server\n")
        expect = None if request.headers.get("If-None-Match") == "*" else request.headers.get("If-Match", "").strip('"')
        try:
            self.remote.write_index_sync(model, data, expect)
        except Conflict as e:
            raise web.HTTPPreconditionFailed(text=f"{e}\n") from e
        return web.Response(status=201 if expect is None else 200, text="index stored\n")


@dataclass(frozen=True)
class Limits:
    """What one client can hold of the server (docs/security.md)."""

    max_connections: int = 512  # beyond this, the oldest idle connection (none or no request running) goes
    max_connections_per_client: int = 64  # per address: beyond this its own oldest idle one goes, or the new one
    max_requests_per_client: int = 64  # handlers running at once for one address; more get 503
    header_timeout: float = 10.0  # a new connection must send a complete request head by then
    body_timeout: float = 60.0  # longest silence inside a request body
    keepalive_timeout: float = 15.0  # idle time between requests on one connection
    send_timeout: float = 60.0  # longest a response may wait for a client that does not read


class _Conn:
    __slots__ = ("transport", "peer", "opened", "started", "busy", "last", "stalled")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer)
        self.opened = self.last = time.monotonic()
        self.started = False  # a complete request head arrived
        self.busy = 0  # requests running on it
        self.stalled: asyncio.TimerHandle | None = None  # the send timeout, while the client reads nothing


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard told when it opens, closes, and
    when the client stops (and resumes) reading what it is sent."""

    def __init__(self, inner: asyncio.Protocol, guard: Guard) -> None:
        self.inner, self.guard = inner, guard
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)
        self.guard.opened(transport)

    def connection_lost(self, exc) -> None:
        if self.transport is not None:
            self.guard.closed(self.transport)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.guard.paused(self.transport)
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.guard.resumed(self.transport)
        self.inner.resume_writing()


class Guard:
    """Connection caps (in all and per address), header deadline, send timeout and per-client
    request cap: a client that opens many connections and sends nothing (slowloris), holds
    keep-alive connections open with a request now and then, or never reads what it asked for,
    can't starve other clients' requests or the descriptors."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.conns: dict[asyncio.BaseTransport, _Conn] = {}
        self.by_peer: dict[str, set[_Conn]] = {}
        self.running: dict[str, int] = {}

    def opened(self, transport: asyncio.Transport) -> None:
        conn = _Conn(transport)
        mine = self.by_peer.get(conn.peer, set())
        if len(mine) >= self.limits.max_connections_per_client and not self._evict(mine, "per-address limit"):
            transport.abort()  # all of this address's connections are serving it: refuse one more
            return
        if len(self.conns) >= self.limits.max_connections and not self._evict(self.conns.values(),
                                                                             "connection limit reached"):
            transport.abort()  # every slot is serving a request: refuse this one
            return
        self.conns[transport] = conn
        self.by_peer.setdefault(conn.peer, set()).add(conn)
        asyncio.get_running_loop().call_later(self.limits.header_timeout, self._deadline, conn)

    def _evict(self, among, why: str) -> bool:
        """Drop the idle connection (no request running) that has been idle longest."""
        idle = min((c for c in among if not c.busy), key=lambda c: (c.started, c.last), default=None)
        if idle is None:
            return False
        self._drop(idle, why)
        return True

    def closed(self, transport: asyncio.BaseTransport) -> None:
        conn = self.conns.pop(transport, None)
        if conn is not None:
            self._forget(conn)

    def _forget(self, conn: _Conn) -> None:
        peers = self.by_peer.get(conn.peer)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self.by_peer[conn.peer]
        if conn.stalled is not None:
            conn.stalled.cancel()

    def paused(self, transport: asyncio.BaseTransport) -> None:
        conn = self.conns.get(transport)
        if conn is not None and conn.stalled is None:
            conn.stalled = asyncio.get_running_loop().call_later(
                self.limits.send_timeout, self._drop, conn, f"read nothing for {self.limits.send_timeout:g}s")

    def resumed(self, transport: asyncio.BaseTransport) -> None:
        conn = self.conns.get(transport)
        if conn is not None and conn.stalled is not None:
            conn.stalled.cancel()
            conn.stalled = None

    def _deadline(self, conn: _Conn) -> None:
        if not conn.started and self.conns.get(conn.transport) is conn:
            self._drop(conn, f"no complete request within {self.limits.header_timeout:g}s")

    def _drop(self, conn: _Conn, why: str) -> None:
        log.debug("closing connection from %s: %s", conn.peer, why)
        self.conns.pop(conn.transport, None)
        self._forget(conn)
        conn.transport.abort()

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        conn = self.conns.get(request.transport) if request.transport is not None else None
        if conn is not None:
            conn.started = True
            conn.busy += 1
        peer = conn.peer if conn else (request.remote or "?")
        try:
            if self.running.get(peer, 0) >= self.limits.max_requests_per_client:
                raise web.HTTPServiceUnavailable(text="too many requests from this address at once\n",
                                                 headers={"Retry-After": "1"})
            self.running[peer] = self.running.get(peer, 0) + 1
            try:
                resp = await handler(request)
                if isinstance(resp, _File):
                    try:
                        await resp.prepare(request)  # sends the file: the connection is busy until it is sent
                    except ConnectionResetError:  # the client went, or was cut off (send timeout)
                        pass
                return resp
            finally:
                self.running[peer] -= 1
                if not self.running[peer]:
                    del self.running[peer]
        finally:
            if conn is not None:
                conn.busy -= 1
                conn.last = time.monotonic()


class _RateLimitedLog(logging.Filter):
    """At most ``burst`` records per logger a minute, then one line saying how many were dropped:
    a flood of broken clients must not fill the disk through stderr."""

    def __init__(self, burst: int = 20, window: float = 60.0) -> None:
        super().__init__()
        self.burst, self.window = burst, window
        self.start, self.count, self.dropped = 0.0, 0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.start > self.window:
            if self.dropped:
                record.msg = f"({self.dropped} similar messages suppressed) " + str(record.msg)
            self.start, self.count, self.dropped = now, 0, 0
        self.count += 1
        if self.count > self.burst:
            self.dropped += 1
            return False
        if record.exc_info and self.count > 3:
            record.exc_info = None  # tracebacks only for the first few
        return True


def _raise_fd_limit() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if want > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


class Running:
    """A started server: ``port`` it is bound to, ``close()`` to stop it."""

    def __init__(self, runner: web.AppRunner, server: asyncio.base_events.Server, port: int) -> None:
        self.runner, self.server, self.port = runner, server, port

    async def close(self) -> None:
        self.server.close()
        await self.runner.cleanup()


async def start(root: Path, host: str, port: int, token: str | None, max_object: int = DEFAULT_MAX_OBJECT,
                limits: Limits | None = None) -> Running:
    """Start serving on ``host:port`` (0: any free port)."""
    limits = limits or Limits()
    _raise_fd_limit()
    for name in ("aiohttp.server", "aiohttp.web", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RateLimitedLog) for f in logger.filters):
            logger.addFilter(_RateLimitedLog())
    guard = Guard(limits)
    app = Server(root, token, max_object, limits.body_timeout).app()
    app.middlewares.append(guard.middleware)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.keepalive_timeout)
    await runner.setup()
    make_protocol = runner.server
    assert make_protocol is not None  # set up just above
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Guarded(make_protocol(), guard), host, port,
                                      backlog=min(limits.max_connections, 1024))
    return Running(runner, server, server.sockets[0].getsockname()[1])
