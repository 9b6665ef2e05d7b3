"""`cas serve`: a remote directory over HTTP, read by anyone, written only with the token.

Reads (GET/HEAD, with Range) are plain static files, so nginx or a CDN can stand in for this
server. Writes: each object is hashed while it is received into a temp file and published only
if it matches the digest in its path (a manifest also only once all its blobs are present);
the version index is replaced only if the client's If-Match names the current bytes. Every path
is matched against the remote layout before it touches the filesystem.
"""

from __future__ import annotations

import hmac
import os
import re
from pathlib import Path

from aiohttp import web

from .atomic import fsync_dir, link_no_replace, makedirs, temp_name, write_file
from .digest import StreamHasher
from .errors import Conflict, InvalidInput
from .index import MAX_INDEX_BYTES, Index
from .manifest import MAX_MANIFEST_BYTES, Manifest
from .names import validate_model
from .remotes.base import FORMAT_FILE, FORMAT_VERSION
from .remotes.directory import DirectoryRemote

_BLOB = re.compile(r"blobs/([0-9a-f]{2})/([0-9a-f]{64})")
_MANIFEST = re.compile(r"manifests/([0-9a-f]{2})/([0-9a-f]{64})\.json")
_INDEX = re.compile(r"index/([^/]{1,128})\.json")
DEFAULT_MAX_OBJECT = 1 << 40


def _classify(rel: str) -> tuple[str, str]:
    """Which kind of object a request path names, or HTTPNotFound; validates digests and names."""
    if rel == FORMAT_FILE:
        return "format", rel
    for kind, rx in (("blob", _BLOB), ("manifest", _MANIFEST)):
        if m := rx.fullmatch(rel):
            if m[1] != m[2][:2]:
                break
            return kind, m[2]
    if m := _INDEX.fullmatch(rel):
        try:
            return "index", validate_model(m[1])
        except InvalidInput:
            pass
    raise web.HTTPNotFound(text=f"no such object: {rel}\n")


class Server:
    def __init__(self, root: Path, token: str | None, max_object: int = DEFAULT_MAX_OBJECT) -> None:
        self.root = Path(root)
        self.token = token.encode() if token else None
        self.max_object = max_object
        self.remote = DirectoryRemote(self.root)  # the same index compare-and-swap as a NAS remote
        makedirs(self.root / "tmp")
        fmt = self.root / FORMAT_FILE
        if not fmt.exists():
            write_file(fmt, f'{{"casstore_remote": {FORMAT_VERSION}}}\n'.encode(), self.root / "tmp")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("GET", "/{path:.*}", self.get)
        app.router.add_route("HEAD", "/{path:.*}", self.get)
        app.router.add_route("PUT", "/{path:.*}", self.put)
        return app

    async def get(self, request: web.Request) -> web.StreamResponse:
        kind, name = _classify(request.match_info["path"])
        path = self.root / request.match_info["path"]
        got = await self.remote.read_index(name) if kind == "index" else None
        if (kind == "index" and got is None) or (kind != "index" and not path.is_file()):
            raise web.HTTPNotFound(text=f"no such object: {request.match_info['path']}\n")
        if got is not None:
            return web.Response(body=got[0], content_type="application/json", headers={"ETag": f'"{got[1]}"'})
        return web.FileResponse(path, chunk_size=1 << 20)

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
        self._authorize(request)
        if kind == "format":
            raise web.HTTPForbidden(text="the format file is not writable\n")
        limit = {"blob": self.max_object, "manifest": MAX_MANIFEST_BYTES, "index": MAX_INDEX_BYTES}[kind]
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        final = self.root / rel
        if kind == "index":
            return await self._put_index(request, name, limit)
        if final.exists():
            return web.Response(status=200, text="already present\n")
        tmp = self.root / "tmp" / temp_name("put.")
        hasher = StreamHasher()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                async for chunk in request.content.iter_chunked(1 << 20):
                    hasher.update(chunk)
                    if hasher.size > limit:
                        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=hasher.size)
                    os.write(fd, chunk)
                if hasher.digest().hex != name:
                    raise web.HTTPUnprocessableEntity(
                        text=f"body hashes to {hasher.digest()}, not blake3:{name}; rejected\n")
                if kind == "manifest":
                    with open(tmp, "rb") as f:
                        self._check_manifest(f.read(), rel)
                os.fchmod(fd, 0o444)
                os.fsync(fd)
            finally:
                os.close(fd)
            makedirs(final.parent)
            if link_no_replace(tmp, final):
                fsync_dir(final.parent)
        finally:
            if tmp.exists():
                os.unlink(tmp)
        return web.Response(status=201, text="stored\n")

    def _check_manifest(self, data: bytes, rel: str) -> None:
        try:
            m = Manifest.decode(data, source=rel)
        except InvalidInput as e:
            raise web.HTTPUnprocessableEntity(text=f"{e}\n") from e
        missing = [e for e in m.entries if not (self.root / "blobs" / e.digest.hex[:2] / e.digest.hex).exists()]
        if missing:
            raise web.HTTPConflict(text=f"manifest lists {len(missing)} blob(s) not on the server, e.g. {missing[0].digest}\n")

    async def _put_index(self, request: web.Request, model: str, limit: int) -> web.Response:
        data = await request.content.read(limit + 1)
        if len(data) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
        try:
            idx = Index.decode(data, source=request.path, model=model)
        except InvalidInput as e:
            raise web.HTTPUnprocessableEntity(text=f"{e}\n") from e
        for v, e in idx.versions.items():
            if not (self.root / "manifests" / e.manifest.hex[:2] / f"{e.manifest.hex}.json").exists():
                raise web.HTTPConflict(text=f"index names {model}@{v} -> {e.manifest}, which is not on the server\n")
        expect = None if request.headers.get("If-None-Match") == "*" else request.headers.get("If-Match", "").strip('"')
        try:
            self.remote.write_index_sync(model, data, expect)
        except Conflict as e:
            raise web.HTTPPreconditionFailed(text=f"{e}\n") from e
        return web.Response(status=201 if expect is None else 200, text="index stored\n")


async def start(root: Path, host: str, port: int, token: str | None, max_object: int = DEFAULT_MAX_OBJECT):
    """Start serving; returns (runner, actual port)."""
    runner = web.AppRunner(Server(root, token, max_object).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, port
