"""The network a team has: HTTPS_PROXY/HTTP_PROXY/NO_PROXY on both HTTP paths (aiohttp and the
engine's threads), a CONNECT tunnel for https, netrc, SSL_CERT_FILE. Before, `cas fetch`
connected directly whatever the environment said. Real nginx, a real tinyproxy, and a recording
proxy that keeps every byte it relays."""

import os
import subprocess

import pytest

from conftest import CasRunner, make_model, publish
from servers import Nginx, RecordingProxy, Tinyproxy

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
              "no_proxy")


@pytest.fixture
def published(tmp_path):
    nas = tmp_path / "nas"
    # a blob over 1 MiB goes through the engine's threads, small ones through aiohttp
    publish(tmp_path, make_model(tmp_path / "src", {"w.bin": 3 << 20, "config.json": b"{}"}), "m", "1.0.0", nas)
    return nas


def env_with(**over):
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(over)
    return env


def fetch(tmp_path, url, env, name="mine"):
    cas = CasRunner(tmp_path / name, tmp_path)
    return subprocess.run(cas.argv("fetch", "m@1.0.0", "--remote", url, "-v"), capture_output=True, text=True,
                          env=env, timeout=120)


def test_http_goes_through_tinyproxy_and_no_proxy_bypasses_it(tmp_path, published):
    ngx = Nginx(tmp_path, tmp_path / "ngx")
    proxy = Tinyproxy(tmp_path / "tp")
    try:
        url = ngx.url + "nas/"
        p = fetch(tmp_path, url, env_with(HTTP_PROXY=proxy.url))
        assert p.returncode == 0, p.stderr
        logged = proxy.log()
        assert "index/m.json" in logged and "/blobs/" in logged, logged  # both paths went through it
        before = logged.count("/blobs/")
        p = fetch(tmp_path, url, env_with(HTTP_PROXY=proxy.url, NO_PROXY="127.0.0.1"), name="bypass")
        assert p.returncode == 0, p.stderr
        assert proxy.log().count("/blobs/") == before  # NO_PROXY: straight to nginx
    finally:
        proxy.stop()
        ngx.stop()


def test_https_tunnels_through_a_proxy_that_never_sees_the_token(tmp_path, published):
    ngx = Nginx(tmp_path, tmp_path / "ngx", tls=True)
    proxy = RecordingProxy()
    tp = Tinyproxy(tmp_path / "tp")
    try:
        url = ngx.url + "nas/"
        token = "a-token-the-proxy-must-not-read"
        env = env_with(HTTPS_PROXY=proxy.url, SSL_CERT_FILE=str(ngx.cert), CAS_TOKEN=token)
        p = fetch(tmp_path, url, env)
        assert p.returncode == 0, p.stderr
        assert proxy.connects and all(c == f"127.0.0.1:{ngx.port}" for c in proxy.connects)
        assert token.encode() not in proxy.seen and b"index/m.json" not in proxy.seen  # all inside TLS
        p = fetch(tmp_path, url, env_with(HTTPS_PROXY=tp.url, SSL_CERT_FILE=str(ngx.cert)), name="via-tinyproxy")
        assert p.returncode == 0, p.stderr
        assert "CONNECT" in tp.log() or f"127.0.0.1:{ngx.port}" in tp.log(), tp.log()
    finally:
        tp.stop()
        proxy.stop()
        ngx.stop()


def test_a_token_is_not_sent_through_a_plain_http_proxy(tmp_path, published):
    ngx = Nginx(tmp_path, tmp_path / "ngx")
    proxy = RecordingProxy()
    try:
        token = "a-token-the-proxy-must-not-read"
        env = env_with(HTTP_PROXY=proxy.url, CAS_TOKEN=token)
        p = fetch(tmp_path, ngx.url + "nas/", env)
        assert p.returncode == 0, p.stderr  # reads carry no token unless refused without it
        # a push does carry one: withheld from the plain-HTTP proxy, and said so
        pub = CasRunner(tmp_path / "pub", tmp_path)
        p = subprocess.run(pub.argv("push", "m@1.0.0", "--remote", ngx.url + "other/"), capture_output=True, text=True,
                           env=env, timeout=120)
        assert p.returncode != 0 and "not sending the token" in p.stderr, p.stderr
        assert b"GET http://127.0.0.1" in proxy.seen and b"PUT http://127.0.0.1" in proxy.seen
        assert token.encode() not in proxy.seen
    finally:
        proxy.stop()
        ngx.stop()


def test_netrc_credentials_are_used_when_no_token_is_configured(tmp_path, published):
    from aiohttp import web

    from servers import ThreadedApp

    seen = []

    async def handle(request):
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    srv = ThreadedApp(app)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password s3cret\n")
    os.chmod(netrc, 0o600)
    try:
        fetch(tmp_path, srv.url, env_with(NETRC=str(netrc)))
    finally:
        srv.stop()
    import base64

    assert seen and all(a == "Basic " + base64.b64encode(b"alice:s3cret").decode() for a in seen), seen
