"""The cache tiers of docs/guides/team-server.md, as documented (nginx with its `slice` block,
varnish with its VCL) in front of an nginx origin, 8 `cas fetch` processes of one version at once:
the origin sends each byte about once (before: the guide's snippet cached nothing, and a plain
proxy_cache sent the version several times over). And reads carry no token unless refused."""

import re
import subprocess
from pathlib import Path

import pytest

from conftest import CasRunner, make_model, publish
from servers import Nginx, NginxBlock, Varnish

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "team-server.md"
READERS = 8


def documented(marker: str, lang: str) -> str:
    text = GUIDE.read_text()
    m = re.search(rf"<!-- {marker}:[^>]*-->\s*```{lang}\n(.*?)```\s*<!-- /{marker} -->", text, re.S)
    assert m, f"no {marker} block in {GUIDE}"
    return m.group(1)


def start_cache(tier: str, origin, workdir: Path):
    host, port = origin.url.rstrip("/").removeprefix("http://").split(":")
    if tier == "nginx slice":
        return NginxBlock(documented("cache-tier", "nginx"), workdir, {
            "listen 80;": "listen 127.0.0.1:{port};",
            "/var/cache/nginx/cas": str(workdir / "store"),
            "max_size=500g": "max_size=1g",
            "http://origin.example.com": origin.url.rstrip("/"),
        })
    return Varnish(documented("cache-tier-varnish", "vcl"), workdir, {
        '.host = "origin.example.com";': f'.host = "{host}";', '.port = "80";': f'.port = "{port}";'})


@pytest.mark.slow  # eight fetch processes through a rate-limited origin: 12-36 s each
@pytest.mark.parametrize("tier", ["nginx slice", "varnish"])
def test_eight_readers_through_a_documented_cache_cost_the_origin_one_version(tmp_path, tier):
    src = make_model(tmp_path / "src", {"w.bin": 40 << 20, "v.bin": 3 << 20, "config.json": b"{}"}
                     | {f"t{i}.json": 1000 + i for i in range(20)})
    nas = tmp_path / "www" / "cas"
    publish(tmp_path, src, "m", "1.0.0", nas)
    size = sum(p.stat().st_size for p in src.iterdir())
    # A far origin: filling the large blob takes longer than nginx's default 5 s cache lock.
    origin = Nginx(tmp_path / "www", tmp_path / "origin", access_log=True, limit_rate="6m")
    cache = start_cache(tier, origin, tmp_path / "cache")
    try:
        readers = [CasRunner(tmp_path / f"node{i}", tmp_path) for i in range(READERS)]
        procs = [subprocess.Popen(r.argv("fetch", "m@1.0.0", "--remote", cache.url + "cas/"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in readers]
        for p in procs:
            _, err = p.communicate(timeout=180)
            assert p.returncode == 0, err
        for r in readers:
            assert r("verify").returncode == 0
        sent = sum(n for method, path, status, n, _ in origin.requests() if "/blobs/" in path)
    finally:
        cache.stop()
        origin.stop()
    assert sent <= 1.05 * size, f"the origin sent {sent / size:.2f}x the version's blobs for {READERS} readers"


def recording_server(root: Path, require: str | None):
    """Serves ``root`` (ranges too); records each request's Authorization; with ``require``, a
    request without that bearer token gets 401."""
    from aiohttp import web

    from servers import ThreadedApp

    seen: list[tuple[str, str | None]] = []

    async def handle(request):
        auth = request.headers.get("Authorization")
        seen.append((request.path, auth))
        if require and auth != f"Bearer {require}":
            return web.Response(status=401)
        path = root / request.path.lstrip("/")
        if not path.is_file():
            return web.Response(status=404)
        data = path.read_bytes()
        if rng := request.headers.get("Range"):
            a, b = rng.removeprefix("bytes=").split("-")
            a, b = int(a), (int(b) + 1 if b else len(data))
            return web.Response(status=206, body=data[a:b], headers={"Content-Range": f"bytes {a}-{b - 1}/{len(data)}"})
        return web.Response(body=data, headers={"Accept-Ranges": "bytes"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    srv = ThreadedApp(app)
    srv.seen = seen
    return srv


def test_reads_carry_no_token_until_one_is_refused_without_it(tmp_path, monkeypatch):
    """A cache in front of the origin never caches a request with Authorization (varnish's
    builtin VCL: 4.01x the version from the origin with CAS_TOKEN set on the readers). Reads now
    go without the token; where the origin refuses them (401), the token follows, once learned."""
    src = make_model(tmp_path / "src", {"w.bin": 3 << 20, "config.json": b"{}"})  # both HTTP paths
    publish(tmp_path, src, "m", "1.0.0", tmp_path / "nas")
    monkeypatch.setenv("CAS_TOKEN", "push-token")
    for require in (None, "push-token"):
        srv = recording_server(tmp_path / "nas", require)
        try:
            node = CasRunner(tmp_path / f"node-{require}", tmp_path)
            node("fetch", "m@1.0.0", "--remote", srv.url)
            assert node("verify").returncode == 0
        finally:
            srv.stop()
        sent = [auth for _, auth in srv.seen]
        if require is None:
            assert sent and all(a is None for a in sent), srv.seen
        else:  # refused once without it (per HTTP path at most), then always sent
            assert sent.count(None) <= 2 and sent[-1] == "Bearer push-token", srv.seen
            assert sent.count("Bearer push-token") >= 3, srv.seen
