"""`cas serve` refuses bad pushes: no token, wrong token, wrong bytes, too big, hostile paths."""

import http.client
import os
from urllib.parse import urlsplit

import pytest

from casstore.digest import Digest
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
    from casstore.manifest import Entry, Manifest

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
