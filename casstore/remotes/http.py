"""A remote over HTTP(S): any static server for reads (nginx, a CDN), `cas serve` for writes.

Hostile servers get errors, not damage: bodies are counted against the size asked for (more is
an error, less is an error), compressed bodies are refused rather than inflated, redirects are
followed by hand so a token never crosses to another origin, and plain HTTP is refused except
on loopback or with ``insecure``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from casstore.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    RemoteError,
    RemoteProtocolError,
    RemoteRefused,
    RemoteStatusError,
    RemoteTooSlow,
    RemoteUnreachable,
)
from casstore.model.index import MAX_INDEX_BYTES
from casstore.remotes import http_blocking
from casstore.remotes.base import CHUNK, FORMAT_FILE, Key, Paced, Remote, check_range_answer, index_path, is_loopback
from casstore.remotes.http_rules import (
    MAX_REDIRECTS,
    netrc_authorization,
    origin,
    proxy_authorization,
    proxy_for,
    redirect,
    refuse_encoding,
    ssl_context,
    tls_failure,
)

log = logging.getLogger("casstore")


async def read_capped(content: aiohttp.StreamReader, limit: int, source: str) -> bytes:
    """A whole body, however it is split on the wire (``read(n)`` returns only what is buffered),
    refused as soon as it passes ``limit``."""
    buf = bytearray()
    while chunk := await content.readany():
        buf += chunk
        if len(buf) > limit:
            raise RemoteProtocolError(f"{source} is larger than {limit} bytes", url=source)
    return bytes(buf)


def _retry_after(headers) -> float | None:
    v = headers.get("Retry-After")
    try:
        return max(0.0, float(v)) if v is not None else None
    except ValueError:
        return None


class HttpRemote(Remote):
    def __init__(self, url: str, *, token: str | None = None, insecure: bool = False,
                 stall_timeout: float | None = None, connect_timeout: float = 30.0) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise InvalidInput(f"invalid remote URL {url!r}: expected http(s)://host/path")
        if u.scheme == "http" and not insecure and not is_loopback(u.hostname):
            raise InvalidInput(
                f"refusing plain HTTP to {url}: use https://, or --insecure if you accept the risk"
            )
        self.url = url.rstrip("/") + "/"
        self._token = token
        self._read_auth = False  # whether reads carry the token: once a read without it was refused
        self._warned_proxy = False
        self._netrc: str | None = None  # the netrc entry's header for this host, read once
        if stall_timeout is None:  # the stack's default (remotes/layers.Tuning); open_remote passes the setting
            stall_timeout = 30.0
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=stall_timeout)
        # One deadline for a response's whole head (status line, interim responses, headers): the
        # stall timer restarts at every byte, so a server dripping header bytes or streaming
        # "103 Early Hints" would otherwise hold a request for ever.
        self.head_timeout = stall_timeout
        self.connections = http_blocking.Connections(connect_timeout, stall_timeout)
        self._session: aiohttp.ClientSession | None = None
        self.ranges: bool | None = None  # learned from the server's answers

    def describe(self, key: Key | str) -> str:
        return self.url + (key.path if isinstance(key, Key) else key)

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                auto_decompress=False,
                connector=aiohttp.TCPConnector(limit=64, ssl=ssl_context() if self.url.startswith("https:") else True),
                headers={"Accept-Encoding": "identity", "User-Agent": "casstore"},
            )
        return self._session

    async def close(self) -> None:
        self.connections.close()
        if self._session is not None:
            await self._session.close()

    threaded_reads = True

    def read_into(self, key: Key, start: int, end: int, sink) -> None:
        http_blocking.read_into(self, key, start, end, sink)

    def reads_need_token(self) -> bool:
        """Told that a read without the token was refused (401/403): whether to ask again with it
        (once per remote per run). Reads carry no token until then, so a cache in front of the
        origin (which never caches a request with ``Authorization``) and every proxy see none."""
        if self._token is None or self._read_auth:
            return False
        self._read_auth = True
        log.debug("%s refused a read without the token; sending it on reads from now on", self.url)
        return True

    async def _request(self, method: str, rel: str, **kw) -> aiohttp.ClientResponse:
        resp = await self._request_once(method, rel, **kw)
        if method in ("GET", "HEAD") and resp.status in (401, 403) and self.reads_need_token():
            resp.release()
            resp = await self._request_once(method, rel, **kw)
        return resp

    async def _request_once(self, method: str, rel: str, **kw) -> aiohttp.ClientResponse:
        """One request, following redirects by hand; the token stays with the first origin."""
        url = self.url + rel
        headers = dict(kw.pop("headers", {}))
        for _ in range(MAX_REDIRECTS + 1):
            h = self.request_headers(url, headers, write=method not in ("GET", "HEAD"))
            proxy = proxy_for(url)
            auth = proxy_authorization(proxy) if proxy else None
            via: dict[str, Any] = {"proxy": proxy, "proxy_headers": {"Proxy-Authorization": auth} if auth else None}
            log.debug("%s %s%s%s", method, url, f" ({h['Range']})" if "Range" in h else "",
                      f" via {origin(proxy)[1]}" if proxy else "")
            try:
                if method in ("GET", "HEAD"):  # an upload's head follows its body: the stall timer bounds it
                    async with asyncio.timeout(self.head_timeout):
                        resp = await self._sess().request(method, url, headers=h, allow_redirects=False, **via, **kw)
                else:
                    resp = await self._sess().request(method, url, headers=h, allow_redirects=False, **via, **kw)
            except aiohttp.ClientSSLError as e:
                raise tls_failure(url, e) from e
            except aiohttp.ClientConnectorError as e:
                raise RemoteUnreachable(f"cannot connect to {url}: {e}", url=url) from e
            except TimeoutError as e:
                raise RemoteTooSlow(f"{method} {url}: no complete answer within {self.head_timeout:g}s "
                                    "(CAS_STALL_TIMEOUT)", url=url) from e
            except (aiohttp.ClientError, OSError) as e:
                raise RemoteUnreachable(f"{method} {url} failed: {type(e).__name__}: {e}", url=url) from e
            nxt = redirect(url, resp.status, resp.headers)
            if nxt is not None:
                resp.release()
                url = nxt
                continue
            return resp
        raise RemoteProtocolError(f"too many redirects from {self.url + rel}", url=self.url + rel)

    def request_headers(self, url: str, extra: dict[str, str], *, write: bool) -> dict[str, str]:
        """A request's headers: the token only for the remote's own origin (``url`` may be
        where a redirect led), on a read only once reads were refused without it, and never in
        plain HTTP through a proxy, which would read it; without a token, the host's netrc entry
        if there is one."""
        h = dict(extra)
        if origin(url) != origin(self.url):
            return h
        if self._token and not (write or self._read_auth):
            return h
        if self._token:
            if url.startswith("http:") and proxy_for(url):
                if not self._warned_proxy:
                    log.warning("not sending the token for %s through the plain-HTTP proxy %s; set NO_PROXY for "
                                "that host or use https://", self.url, origin(proxy_for(url) or "")[1])
                    self._warned_proxy = True
                return h
            h["Authorization"] = f"Bearer {self._token}"
        else:
            if self._netrc is None:
                self._netrc = netrc_authorization(self.url) or ""
            if self._netrc:
                h["Authorization"] = self._netrc
        return h

    def _error(self, resp: aiohttp.ClientResponse, what: str) -> Exception:
        return self.status_error(resp.status, resp.reason or "", str(resp.url), resp.headers, what)

    def status_error(self, status: int, reason: str, url: str, headers, what: str) -> Exception:
        """The error for an answer with an unexpected status (``headers``: any mapping)."""
        if status == 404:
            return NotFound(f"{url} does not exist (404)")
        if status == 405 and what == "PUT":
            return RemoteRefused(f"{url} does not accept uploads (405): it is a read-only server (a static server, or "
                                 f"`cas serve` of a store); push to a writable `cas serve` or to a directory remote, and "
                                 f"let this server serve what is published",
                                 url=url, status=405)
        if status in (401, 403):
            if self._token is None:
                return RemoteRefused(f"{what} {url} refused ({status}) and no token was sent: set CAS_TOKEN (or "
                                     f"CAS_TOKEN_<REMOTE NAME>) or `token` for this remote in the user config",
                                     url=url, status=status)
            return RemoteRefused(f"{what} {url} refused ({status}): the token sent (from CAS_TOKEN, "
                                 f"CAS_TOKEN_<REMOTE NAME> or the user config) is not accepted there",
                                 url=url, status=status)
        if status == 412:
            return Conflict(f"{url} changed while publishing (412); try again")
        if status == 422:
            return IntegrityError(f"{url} rejected the upload (422)")
        retryable = status in (408, 425, 429) or status >= 500
        return RemoteStatusError(f"{what} {url} failed: HTTP {status} {reason}", url=url, status=status,
                                 retryable=retryable, retry_after=_retry_after(headers))

    async def looks_like_remote(self) -> bool:
        try:
            resp = await self._request("HEAD", FORMAT_FILE)
        except RemoteError:
            return False
        async with resp:
            return resp.status == 200

    async def stat(self, key: Key) -> int | None:
        resp = await self._request("HEAD", key.path)
        async with resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise self._error(resp, "HEAD")
            return resp.content_length

    async def read(self, key: Key, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        resp = await self._request("GET", key.path, headers=headers)
        async with resp:
            url = str(resp.url)
            if resp.status not in (200, 206):
                raise self._error(resp, "GET")
            refuse_encoding(resp.headers, url, key)
            skip, want = 0, None if end is None else end - start
            declared = resp.content_length
            if resp.status == 206:
                self.ranges = True
                check_range_answer(url, key, start, want, declared, resp.headers.get("Content-Range", ""))
            elif declared is not None and key.size is not None and declared != key.size:
                raise RemoteProtocolError(f"{url} declared {declared} bytes for an object of {key.size}", url=url, digest=key.digest, retryable=True)
            elif "Range" in headers:
                # The server ignored Range (python -m http.server, some CDNs): the whole object
                # comes; skip to ``start`` while streaming and tell the engine not to split.
                self.ranges = False
                skip = start
                if declared is None:
                    raise RemoteProtocolError(f"{url} ignored the range and sent a body of undeclared length; refusing it, "
                                              f"as it could send more than the object", url=url, digest=key.digest)
                if want is not None and declared < start + want:
                    raise RemoteProtocolError(f"{url} declared {declared} bytes, fewer than the {start + want} asked for",
                                              url=url, digest=key.digest, retryable=True)
            else:
                if self.ranges is None:
                    self.ranges = "bytes" in resp.headers.get("Accept-Ranges", "").lower()
                if declared is not None and want is not None and declared != want:
                    raise RemoteProtocolError(f"{url} declared {declared} bytes for a request of {want}", url=url, digest=key.digest, retryable=True)
            got = 0
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                        if not chunk:
                            continue
                    if want is not None and got + len(chunk) > want:
                        if resp.status == 206 or "Range" not in headers:
                            raise RemoteProtocolError(f"{url} sent more than the {want} bytes asked for", url=url, digest=key.digest)
                        chunk = chunk[: want - got]  # a whole-object answer: stop where the range ends
                    got += len(chunk)
                    yield chunk
                    if want is not None and got == want and resp.status == 200 and "Range" in headers:
                        resp.close()  # the rest of the object is not ours to read
                        return
            except TimeoutError as e:
                raise RemoteTooSlow(f"GET {url} went silent after {got} bytes (CAS_STALL_TIMEOUT)", url=url,
                                    digest=key.digest) from e
            except (aiohttp.ClientError, OSError) as e:
                raise RemoteProtocolError(f"GET {url} broke after {got} bytes: {type(e).__name__}: {e}", url=url,
                                          digest=key.digest, retryable=True) from e
            if want is not None and got < want:
                raise RemoteProtocolError(f"{url} ended after {got} of {want} bytes", url=url, digest=key.digest, retryable=True)

    async def write(self, key: Key, source: Path | bytes | Paced) -> None:
        if isinstance(source, bytes):
            resp = await self._request("PUT", key.path, data=source)
        else:
            with source.open() if isinstance(source, Paced) else open(source, "rb") as f:
                resp = await self._request("PUT", key.path, data=f)
        async with resp:
            if resp.status not in (200, 201, 204):
                raise self._error(resp, "PUT")

    async def read_index(self, model: str) -> tuple[bytes, str] | None:
        from casstore.model.digest import Digest

        resp = await self._request("GET", index_path(model))
        async with resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise self._error(resp, "GET")
            try:
                data = await read_capped(resp.content, MAX_INDEX_BYTES, str(resp.url))
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                raise RemoteProtocolError(f"GET {resp.url} broke: {type(e).__name__}: {e}", url=str(resp.url),
                                          retryable=True) from e
            return data, Digest.of_bytes(data).hex

    async def write_index(self, model: str, data: bytes, expect: str | None) -> None:
        headers = {"If-None-Match": "*"} if expect is None else {"If-Match": f'"{expect}"'}
        resp = await self._request("PUT", index_path(model), data=data, headers=headers)
        async with resp:
            if resp.status not in (200, 201, 204):
                raise self._error(resp, "PUT")
