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


def _attacker(port, n, request=b"GET /casstore-remote.json HTTP/1.1\r\nHost: x\r\n\r\n", read=True):
    """``n`` keep-alive connections from another loopback address (127.0.0.2), one request each."""
    import socket

    socks = []
    for _ in range(n):
        c = socket.socket()
        c.bind(("127.0.0.2", 0))
        c.settimeout(5)
        try:
            c.connect(("127.0.0.1", port))
            c.sendall(request)
            if read:
                c.recv(65536)
        except OSError:
            c.close()
            continue
        socks.append(c)
    return socks


def _get(url, timeout=5.0):
    import urllib.request

    return urllib.request.urlopen(url, timeout=timeout).read()


def test_keepalive_connections_from_one_address_do_not_starve_others(tmp_path):
    """Before: 540 keep-alive connections from one address, each sending a request now and then,
    held every slot; other clients got no answer until they stopped."""
    import time

    s = CasServe(tmp_path / "r", token=None, extra=("--max-connections", "64", "--max-connections-per-client", "16"))
    port = urlsplit(s.url).port
    held = []
    try:
        for _ in range(3):  # the attacker keeps re-opening and poking its connections
            held += _attacker(port, 40)
            for c in held:
                try:
                    c.sendall(b"GET /casstore-remote.json HTTP/1.1\r\nHost: x\r\n\r\n")
                except OSError:
                    pass
            assert _get(s.url + "casstore-remote.json") == b'{"casstore_remote": 1}\n'
        time.sleep(0.5)
        alive = 0
        for c in held:  # drained: open is what neither ended nor was reset
            c.setblocking(False)
            try:
                while c.recv(65536):
                    pass
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        assert alive <= 16, f"{alive} connections of one address still open"
    finally:
        for c in held:
            c.close()
        s.stop()


def test_clients_that_never_read_are_cut_off(tmp_path):
    """Before: readers that asked for a 40 MiB blob and never read it held their connections and
    request slots for ever."""
    import time

    data = os.urandom(40 << 20)
    d = Digest.of_bytes(data)
    root = tmp_path / "r"
    (root / "blobs" / d.hex[:2]).mkdir(parents=True)
    (root / "blobs" / d.hex[:2] / d.hex).write_bytes(data)
    s = CasServe(root, token=None, extra=("--send-timeout", "1", "--max-connections-per-client", "8"))
    port = urlsplit(s.url).port
    readers = _attacker(port, 8, f"GET {blob_path(d)} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), read=False)
    try:
        time.sleep(3)  # past the send timeout
        cut = 0
        for c in readers:
            c.settimeout(2)
            try:
                while c.recv(1 << 20):
                    pass
                cut += 1  # the server closed it
            except OSError:
                cut += 1  # reset
        assert cut == len(readers) == 8
        assert _get(s.url + "casstore-remote.json") == b'{"casstore_remote": 1}\n'
    finally:
        for c in readers:
            c.close()
        s.stop()
