"""`cas serve` refuses bad pushes: no token, wrong token, wrong bytes, too big, hostile paths."""

import http.client
import os
from urllib.parse import urlsplit

import pytest

from casstore.model.digest import Digest

from servers import CasServe

DATA = os.urandom(5000)
D = Digest.of_bytes(DATA)


@pytest.fixture
def srv(tmp_path):
    s = CasServe(tmp_path / "remote", max_object="4K")
    yield s
    s.stop()


def put(srv, path, body, token=None, headers=None):
    u = urlsplit(srv.url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    c.request("PUT", path, body=body, headers=h)
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    return r.status, text


def blob_path(d):
    return f"/blobs/{d.hex[:2]}/{d.hex}"


def files_under(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root) for n in ns if "tmp" not in d)


def test_push_refusals(srv, tmp_path):
    small = b"hello"
    ds = Digest.of_bytes(small)
    before = files_under(srv.root)
    assert put(srv, blob_path(ds), small)[0] == 401
    assert put(srv, blob_path(ds), small, token="wrong")[0] == 403
    status, text = put(srv, blob_path(ds), b"hellO", token=srv.token)
    assert status == 422 and str(ds) in text
    assert put(srv, blob_path(D), DATA, token=srv.token)[0] == 413  # over --max-object-size 4K
    for evil in ("/blobs/../../etc/passwd", "/blobs/ab/..%2F..%2Fx", f"/blobs/zz/{ds.hex}", "/index/..json",
                 f"/blobs/{ds.hex[:2]}/{ds.hex}/../../x", "/manifests/" + "A" * 64):
        assert put(srv, evil, small, token=srv.token)[0] in (400, 404), evil
    assert files_under(srv.root) == before
    assert not os.path.exists("/etc/passwd.tmp")
    assert put(srv, blob_path(ds), small, token=srv.token)[0] == 201
    assert (srv.root / "blobs" / ds.hex[:2] / ds.hex).read_bytes() == small
    assert not os.listdir(srv.root / "tmp")


def test_manifest_needs_its_blobs_and_valid_paths(srv):
    from casstore.model.manifest import Entry, Manifest

    m = Manifest("m", "1", (Entry("a", 5, Digest.of_bytes(b"hello")),))
    data = m.encode()
    status, text = put(srv, f"/manifests/{m.digest().hex[:2]}/{m.digest().hex}.json", data, token=srv.token)
    assert status == 409 and "not on the server" in text
    evil = data.replace(b'"a"', b'"../a"')
    de = Digest.of_bytes(evil)
    status, text = put(srv, f"/manifests/{de.hex[:2]}/{de.hex}.json", evil, token=srv.token)
    assert status == 422 and "../a" in text


def test_read_only_without_token(tmp_path):
    s = CasServe(tmp_path / "ro", token=None)
    try:
        assert put(s, blob_path(Digest.of_bytes(b"x")), b"x", token="anything")[0] == 403
    finally:
        s.stop()


@pytest.mark.slow  # a thousand connections: a stress run
def test_idle_connections_do_not_starve_a_real_request(tmp_path):
    """1,000 connections that send half a request line and stop (slowloris): a normal GET is
    still answered within a second, and the idle ones are closed at the header deadline."""
    import resource
    import socket
    import time
    import urllib.request

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))  # the test's own sockets
    s = CasServe(tmp_path / "r", token=None, extra=("--header-timeout", "3", "--max-connections", "256"))
    u = urlsplit(s.url)
    socks = []
    try:
        for _ in range(1000):
            c = socket.create_connection((u.hostname, u.port), timeout=5)
            c.sendall(b"GET /casstore-remote.json HT")
            socks.append(c)
        t0 = time.monotonic()
        body = urllib.request.urlopen(s.url + "casstore-remote.json", timeout=5).read()
        assert time.monotonic() - t0 < 1.0
        assert body == b'{"casstore_remote": 1}\n'
        deadline = time.monotonic() + 10
        open_ = socks
        while open_ and time.monotonic() < deadline:  # bounded: every idle one must be closed by then
            time.sleep(0.5)
            still = []
            for c in open_:
                c.setblocking(False)
                try:
                    if c.recv(1) != b"":
                        still.append(c)
                except BlockingIOError:
                    still.append(c)
                except OSError:
                    pass
            open_ = still
        assert not open_, f"{len(open_)} idle connections still open after the header deadline"
        assert s.proc.poll() is None
    finally:
        for c in socks:
            c.close()
        s.stop()
    err = s.proc.stderr.read()
    assert "Too many open files" not in err and "Traceback" not in err


def test_a_large_index_pushed_in_pieces_is_accepted(tmp_path):
    """A ~1 MB index sent in 16 KiB pieces with pauses is read whole by the server, not cut at
    whatever was buffered (it was rejected with 422 before)."""
    import socket
    import time

    from casstore.model.index import Index, IndexEntry
    from casstore.model.manifest import Entry, Manifest

    s = CasServe(tmp_path / "r")
    try:
        blob = b"hello"
        assert put(s, blob_path(Digest.of_bytes(blob)), blob, token=s.token)[0] == 201
        m = Manifest("m", "1.0.0", (Entry("a", 5, Digest.of_bytes(blob)),))
        md = m.digest()
        assert put(s, f"/manifests/{md.hex[:2]}/{md.hex}.json", m.encode(), token=s.token)[0] == 201
        data = Index("m", {f"1.0.{i}": IndexEntry(md, 1, False, 5, 1) for i in range(8000)}).encode()
        assert len(data) > 900_000
        u = urlsplit(s.url)
        c = socket.create_connection((u.hostname, u.port), timeout=10)
        c.sendall(f"PUT /index/m.json HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {s.token}\r\n"
                  f"If-None-Match: *\r\nContent-Length: {len(data)}\r\n\r\n".encode())
        for i in range(0, len(data), 16 << 10):
            c.sendall(data[i : i + (16 << 10)])
            time.sleep(0.002)
        reply = c.recv(200).decode()
        c.close()
        assert reply.startswith("HTTP/1.1 201"), reply
        assert (tmp_path / "r" / "index" / "m.json").read_bytes() == data
    finally:
        s.stop()
