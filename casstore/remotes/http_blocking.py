"""Blocking ranged GETs for the bulk of a fetch (``HttpRemote.read_into``), run on the engine's
threads.

Through aiohttp, one event loop received, parsed and wrote the bytes of every connection: on 2
cores that one thread was the bottleneck (a fetch from nginx took ~1.5x curl's time). Here each
thread reads its range with ``http.client`` into a buffer of its own and hands each piece to the
engine, which writes it into the partial file (docs/benchmarks.md). HEAD, small objects, the
index and uploads stay on aiohttp.

The rules are the async path's: the token stays with the remote's origin (http_rules.py and
``HttpRemote.request_headers``), compressed bodies are refused, a ranged answer must be for
the range asked and not one byte longer.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from casstore.errors import RangesIgnored, RemoteProtocolError, RemoteRefused, RemoteTooSlow, RemoteUnreachable
from casstore.remotes.base import CHUNK, Key, check_range_answer
from casstore.remotes.http_rules import (
    MAX_REDIRECTS,
    Origin,
    origin,
    proxy_authorization,
    proxy_for,
    redirect,
    refuse_encoding,
    ssl_context,
    tls_failure,
)

log = logging.getLogger("casstore")


class Connections:
    """Keep-alive connections by origin, shared by the engine's threads. ``close`` shuts every
    socket, idle or in use, so a thread waiting on a silent server returns at once."""

    def __init__(self, connect_timeout: float, stall_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.stall_timeout = stall_timeout
        self._lock = threading.Lock()
        self._idle: dict[tuple[Origin, str | None], list[http.client.HTTPConnection]] = {}
        self._open: set[http.client.HTTPConnection] = set()

    def get(self, where: Origin, proxy: str | None = None) -> tuple[http.client.HTTPConnection, bool]:
        """A connection to ``where`` (through ``proxy``: a CONNECT tunnel for https, the proxy
        itself for http), and whether it was idle in the pool (it may have been closed by the
        server since: the caller retries such a one once on a new connection)."""
        key = (where, proxy)
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        scheme, host, port = where
        conn: http.client.HTTPConnection
        if proxy is not None:
            _, phost, pport = origin(proxy)
            auth = proxy_authorization(proxy)
            if scheme == "https":
                conn = http.client.HTTPSConnection(phost, pport, timeout=self.connect_timeout, context=ssl_context())
                conn.set_tunnel(host, port, headers={"Proxy-Authorization": auth} if auth else None)
            else:
                conn = http.client.HTTPConnection(phost, pport, timeout=self.connect_timeout)
        elif scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self.connect_timeout, context=ssl_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        conn.response_class = _Response
        conn.connect()  # OSError: the caller names the URL
        assert conn.sock is not None
        conn.sock.settimeout(self.stall_timeout)  # seconds without a byte, from here on
        with self._lock:
            self._open.add(conn)
        return conn, False

    def put(self, where: Origin, conn: http.client.HTTPConnection, proxy: str | None = None) -> None:
        with self._lock:
            if conn in self._open:
                self._idle.setdefault((where, proxy), []).append(conn)
                return
        conn.close()  # closed meanwhile

    def drop(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._open.discard(conn)
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._open, self._idle = self._open, set(), {}
        for conn in conns:
            try:
                if conn.sock is not None:
                    conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


MAX_INTERIM = 20  # 1xx answers before the real one; more is a server stalling us


class _Response(http.client.HTTPResponse):
    """http.client skips "100 Continue" only; any other interim answer (102, 103 Early Hints) would
    be taken for the response. Skipped here too, a bounded number of times."""

    def _read_status(self):
        for _ in range(MAX_INTERIM):
            version, status, reason = super()._read_status()
            if not 100 < status < 200 or status == 101:
                return version, status, reason
            http.client._read_headers(self.fp)  # the interim answer's headers
        raise http.client.HTTPException(f"more than {MAX_INTERIM} interim (1xx) responses")


def _head(conn: http.client.HTTPConnection, deadline: float) -> http.client.HTTPResponse:
    """``conn.getresponse()`` within ``deadline`` seconds for the whole head: the socket timeout
    restarts at every byte, so a server dripping its headers is cut off by a timer that shuts the
    socket down (``TimeoutError``)."""
    fired = threading.Event()

    def cut() -> None:
        fired.set()
        try:
            if conn.sock is not None:
                conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    timer = threading.Timer(deadline, cut)
    timer.daemon = True
    timer.start()
    try:
        resp = conn.getresponse()
    except (http.client.HTTPException, OSError) as e:
        if fired.is_set():
            raise TimeoutError(f"no complete response head within {deadline:g}s") from e
        raise
    finally:
        timer.cancel()
    if fired.is_set():  # what was parsed before the cut is no answer
        raise TimeoutError(f"no complete response head within {deadline:g}s")
    return resp


_buffers = threading.local()


def _buffer() -> memoryview:
    buf = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = memoryview(bytearray(CHUNK))
    return buf


def read_into(remote, key: Key, start: int, end: int, sink: Callable[[memoryview], bool]) -> None:
    """Bytes [start, end) of ``key`` from ``remote`` (an ``HttpRemote``), given to ``sink`` in
    order; ``sink`` returns False to stop early (the connection is then dropped). A read refused
    without the token is asked again with it (``HttpRemote.reads_need_token``)."""
    try:
        _read_into(remote, key, start, end, sink)
    except RemoteRefused as e:
        if e.status not in (401, 403) or not remote.reads_need_token():
            raise
        _read_into(remote, key, start, end, sink)


def _read_into(remote, key: Key, start: int, end: int, sink: Callable[[memoryview], bool]) -> None:
    want = end - start
    url = remote.url + key.path
    extra = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity", "User-Agent": "casstore"}
    conns: Connections = remote.connections
    for _ in range(MAX_REDIRECTS + 1):
        where = origin(url)
        u = urlsplit(url)
        proxy = proxy_for(url)
        # through a proxy, plain HTTP asks the proxy for the absolute URL; https tunnels (CONNECT)
        target = url if proxy and u.scheme == "http" else (u.path or "/") + (f"?{u.query}" if u.query else "")
        headers = remote.request_headers(url, extra, write=False)
        if proxy and u.scheme == "http" and (auth := proxy_authorization(proxy)):
            headers["Proxy-Authorization"] = auth
        log.debug("GET %s (%s, on %s)", url, extra["Range"], threading.current_thread().name)
        for fresh in (False, True):
            try:
                conn, reused = conns.get(where, proxy)
            except ssl.SSLError as e:
                raise tls_failure(url, e) from e
            except OSError as e:
                raise RemoteUnreachable(f"cannot connect to {url}: {e}", url=url, digest=key.digest) from e
            try:
                conn.request("GET", target, headers=headers)
                resp = _head(conn, conns.stall_timeout)
                break
            except TimeoutError as e:
                conns.drop(conn)
                raise RemoteTooSlow(f"GET {url}: no complete answer within {conns.stall_timeout:g}s "
                                    "(CAS_STALL_TIMEOUT)", url=url, digest=key.digest) from e
            except ssl.SSLError as e:  # the handshake happens at the first request on a new connection
                conns.drop(conn)
                raise tls_failure(url, e) from e
            except (http.client.HTTPException, OSError) as e:
                conns.drop(conn)
                if reused and not fresh:  # the server closed an idle keep-alive connection: once more, anew
                    continue
                raise RemoteUnreachable(f"GET {url} failed: {type(e).__name__}: {e}", url=url,
                                        digest=key.digest) from e
        nxt = redirect(url, resp.status, resp.headers)
        if nxt is None:
            break
        conns.drop(conn)
        url = nxt
    else:
        raise RemoteProtocolError(f"too many redirects from {remote.url + key.path}", url=remote.url + key.path)
    clean = False
    try:
        if resp.status != 206:
            if resp.status == 200:  # the range was ignored: the async path reads such answers (it skips to start)
                remote.ranges = False
                raise RangesIgnored(f"{url} answered a ranged request with the whole object", url=url,
                                    digest=key.digest)
            raise remote.status_error(resp.status, resp.reason, url, resp.headers, "GET")
        refuse_encoding(resp.headers, url, key)
        declared = resp.getheader("Content-Length")
        check_range_answer(url, key, start, want, int(declared) if declared and declared.isdigit() else None,
                           resp.getheader("Content-Range", ""))
        left = resp.length or 0
        counted = not resp.chunked and resp.length is not None
        buf = _buffer()
        got = 0
        while got < want:
            try:
                # What one read of the socket brings (a drip must reach the engine's speed check),
                # up to 1 MiB, into this thread's buffer rather than a new object per piece.
                # ``length`` is http.client's count of the body left, kept so that it ends the
                # response (and may reuse the connection) at 0.
                if counted:
                    n = resp.fp.readinto1(buf[: min(len(buf), want - got)])
                    left -= n
                    resp.length = left
                    data = buf[:n]
                else:  # chunked, or no length: http.client decodes it
                    data = memoryview(resp.read1(min(CHUNK, want - got)))
            except TimeoutError as e:
                raise RemoteTooSlow(f"GET {url} went silent after {got} bytes (CAS_STALL_TIMEOUT)", url=url,
                                    digest=key.digest) from e
            except (http.client.HTTPException, OSError) as e:
                raise RemoteProtocolError(f"GET {url} broke after {got} bytes: {type(e).__name__}: {e}", url=url,
                                          digest=key.digest, retryable=True) from e
            if not data:
                raise RemoteProtocolError(f"{url} ended after {got} of {want} bytes", url=url, digest=key.digest,
                                          retryable=True)
            got += len(data)
            if not sink(data):
                return
        if counted:
            resp.read()  # nothing is left: this closes the response
        if not resp.isclosed():  # no length declared (chunked): it must end here
            try:
                more = resp.read(1)
            except (http.client.HTTPException, OSError):
                more = b""
            if more:
                raise RemoteProtocolError(f"{url} sent more than the {want} bytes asked for", url=url,
                                          digest=key.digest)
        clean = resp.isclosed() and not resp.will_close
    finally:
        if clean:
            conns.put(where, conn, proxy)
        else:
            conns.drop(conn)
