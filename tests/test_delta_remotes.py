"""Delta updates end to end, with real servers: the bytes nginx sends for `cas update`, maps pushed
through `cas serve` and to a bucket, a server that answers ranges with 200, backfilling maps."""

import http.client
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from casstore.model.digest import Digest
from casstore.model.keys import chunks_key
from casstore.store.objects import Store
from casstore.testing import modelfiles

from conftest import CasRunner, assert_store_consistent, isolated
from servers import CasServe, ThreadedApp, nginx

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _small_maps(monkeypatch):
    monkeypatch.setenv("CAS_DELTA_MIN_SIZE", str(MiB))  # maps for the fixture's 24 MiB shards


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Two releases of m (1.1.0 rewrites three of the 16 1.5 MiB tensors in its first shard and
    inserts a 2 MiB one) pushed to a directory remote, once for the module; returns the
    publisher, the remote and the bytes that changed. A test that changes the remote copies it."""
    base = tmp_path_factory.mktemp("delta")
    old, new, changed = modelfiles.release_pair(base / "src", tensors=16, tensor_size=3 * MiB // 2,
                                                inserted_size=2 * MiB)
    with isolated(base) as env:
        env.setenv("CAS_DELTA_MIN_SIZE", str(MiB))
        pub = CasRunner(base / "pub", base)
        for v, src in (("1.0.0", old), ("1.1.0", new)):
            pub("add", src, "--name", "m", "--version", v)
            pub("push", f"m@{v}", "--remote", base / "nas")
    return pub, base / "nas", changed


def _maps_of(pub: CasRunner, nas: Path, model_version: str) -> int:
    """Bytes of the chunk maps the remote has for the blobs of a version (their map objects)."""
    s = Store.open(pub.store)
    m = s.get_manifest(s.refs.get_tag(*model_version.split("@")))
    return sum((nas / chunks_key(e.digest)).stat().st_size for e in m.entries if (nas / chunks_key(e.digest)).exists())


def test_update_over_nginx_moves_about_the_changed_tensors(published, tmp_path):
    pub, nas, changed = published
    assert len(list((nas / "chunks").rglob("*"))) > 2
    with nginx(nas, tmp_path / "nginx", access_log=True) as web_server:
        user = CasRunner(tmp_path / "user", tmp_path)
        user("fetch", "m@1.0.0", "--remote", web_server.url)
        plan = user.json("update", "m", "--remote", web_server.url, "--dry-run")
        before = len(web_server.requests())
        out = user.json("update", "m", "--remote", web_server.url)
        update = web_server.requests()[before:]
    assert out["switched"] and out["to"] == "1.1.0"
    on_wire = sum(sent for *_, sent, _ in update)
    ideal = changed + _maps_of(pub, nas, "m@1.1.0")
    assert on_wire <= 1.25 * ideal, (on_wire, ideal, update)
    print(f"on the wire: {on_wire} bytes, {on_wire / ideal:.3f}x the changed bytes and maps")
    assert out["bytes_from_local"] == 13 * 3 * MiB // 2  # the 13 unchanged tensors of the changed shard
    # the plan's estimate is what the update then downloaded (it decides the same way)
    assert (plan["download_bytes"], plan["from_local"]) == (out["bytes_downloaded"], out["bytes_from_local"])
    assert any(status == 206 and path.startswith("/blobs/") for _, path, status, _, _ in update)
    maps = [path for _, path, *_ in update if path.startswith("/chunks/")]
    assert maps and len(maps) == len(set(maps)), maps  # each read once: the plan's, reused by the fetch
    assert user("verify").returncode == 0
    assert_store_consistent(Store.open(tmp_path / "user"))


def test_delta_never_and_a_version_pushed_without_maps(published, tmp_path):
    pub, shared_nas, changed = published
    nas = tmp_path / "nas"
    shutil.copytree(shared_nas, nas)
    user = CasRunner(tmp_path / "user", tmp_path)
    user("fetch", "m@1.0.0", "--remote", nas)
    out = user.json("update", "m", "--remote", nas, "--delta", "never")
    # a directory on the store's filesystem is copied whole by the kernel, delta or not
    assert out["bytes_from_local"] == 0 and out["bytes_copied"] > 24 * MiB

    other = CasRunner(tmp_path / "other", tmp_path)  # a version published before maps existed...
    for d in (nas / "chunks").rglob("*"):
        if d.is_file():
            os.unlink(d)
    other("fetch", "m@1.0.0", "--remote", nas)
    assert pub.json("push", "m@1.1.0", "--remote", nas)["maps_sent"] == 0
    backfilled = pub.json("push", "m@1.1.0", "--remote", nas, "--backfill-chunks")  # ...gets them
    assert backfilled["maps_sent"] == 2 and backfilled["blobs_sent"] == 0
    with nginx(nas, tmp_path / "nginx") as web_server:  # over a network, so delta applies
        assert other.json("update", "m", "--remote", web_server.url)["bytes_from_local"] == 13 * 3 * MiB // 2


def _get(url: str, path: str) -> tuple[int, bytes]:
    u = urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read()


def _put(url: str, path: str, body: bytes, token: str) -> tuple[int, str]:
    u = urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("PUT", path, body=body, headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    return r.status, r.read().decode()


@pytest.mark.slow
def test_maps_go_through_cas_serve_and_a_bad_one_is_refused(published, tmp_path, monkeypatch):
    pub, nas, _ = published
    srv = CasServe(tmp_path / "served")
    try:
        monkeypatch.setenv("CAS_TOKEN", srv.token)
        for v in ("1.0.0", "1.1.0"):
            assert pub.json("push", f"m@{v}", "--remote", srv.url)["maps_sent"] >= 1
        user = CasRunner(tmp_path / "user", tmp_path)
        user("fetch", "m@1.0.0", "--remote", srv.url)
        assert user.json("update", "m", "--remote", srv.url)["bytes_from_local"] == 13 * 3 * MiB // 2

        some = next(p for p in (nas / "chunks").rglob("*") if p.is_file())
        status, body = _get(srv.url, f"/chunks/{some.parent.name}/{some.name}")
        assert status == 200 and body == some.read_bytes()
        other = Digest(os.urandom(32).hex())
        status, text = _put(srv.url, f"/{chunks_key(other)}", some.read_bytes(), srv.token)  # a map of another blob
        assert status == 422 and str(other) in text
        assert _get(srv.url, f"/{chunks_key(other)}")[0] == 404
    finally:
        srv.stop()


@pytest.mark.slow
def test_a_server_answering_ranges_with_200_costs_whole_files_only(published, tmp_path):
    pub, nas, _ = published
    served = []

    async def whole(request):  # a static server that ignores Range: 200 and the whole object
        path = nas / request.match_info["path"]
        if not path.is_file():
            raise web.HTTPNotFound()
        data = path.read_bytes()
        served.append((request.headers.get("Range"), len(data)))
        return web.Response(body=data)

    app = web.Application()
    app.router.add_get("/{path:.*}", whole)
    server = ThreadedApp(app)
    try:
        user = CasRunner(tmp_path / "user", tmp_path)
        user("fetch", "m@1.0.0", "--remote", nas)
        out = user.json("update", "m", "--remote", server.url)
    finally:
        server.stop()
    assert out["switched"] and out["bytes_from_local"] == 0
    blob_bytes = sum(n for rng, n in served if rng is None or rng != "bytes=0-0")
    assert blob_bytes < 2 * 30 * MiB  # each changed file once (plus the range probe), never once per gap
    assert user("verify").returncode == 0
