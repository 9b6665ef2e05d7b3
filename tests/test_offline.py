"""Offline GPU nodes: a version complete in the store never needs a remote (real processes)."""

import os
import subprocess

import pytest

import casstore

from conftest import CasRunner, isolated, make_model
from servers import refusing_port


@pytest.fixture(scope="module")
def nas(tmp_path_factory):
    """A directory remote with m@1.0.0, m@1.1.0 and m@2.0.0 (made once; the tests only read it)."""
    base = tmp_path_factory.mktemp("offline-remote")
    with isolated(base):
        pub = CasRunner(base / "pub", base)
        for v in ("1.0.0", "1.1.0"):
            pub("add", make_model(base / f"src{v}", {"w.bin": 20_000, "v.json": v.encode()}), "--name", "m", "--version", v)
            pub("push", f"m@{v}", "--remote", base / "nas")
        pub("add", make_model(base / "src2", {"w.bin": 100}), "--name", "m", "--version", "2.0.0")
        pub("push", "m@2.0.0", "--remote", base / "nas")
    return base / "nas"


@pytest.fixture
def node(tmp_path, nas):
    """A user store holding m@1.0.0 and m@1.1.0 fetched from that remote; the configured
    default remote is then an HTTP address where nothing listens (the remote is down)."""
    user = CasRunner(tmp_path / "store", tmp_path)
    for v in ("1.0.0", "1.1.0"):
        user("fetch", f"m@{v}", "--remote", nas)
    user("remote", "add", "down", f"http://127.0.0.1:{refusing_port()}/", "--default")
    return user


def test_a_version_complete_here_needs_no_remote(node):
    res = node.json("fetch", "m@1.0.0")  # the configured remote is down
    assert res["version"] == "1.0.0" and res["bytes_downloaded"] == 0 and res["retries"] == 0
    path = casstore.fetch("m@1.1.0", store=str(node.store))  # the Python API returns the cached path
    assert (path / "v.json").read_bytes() == b"1.1.0"
    # With every remote unreachable, a bare model is the newest version here, with one warning.
    p = node("fetch", "m")
    assert "using m@1.1.0, the newest version in the store" in p.stderr
    assert p.stderr.count("warning") <= 1 and "cannot connect" in p.stderr


def test_offline_resolves_a_bare_model_to_the_newest_here_and_refuses_the_rest(node):
    for env, flag in (({**os.environ, "CAS_OFFLINE": "1"}, []), (None, ["--offline"])):
        def run(*args, flag=flag, env=env):
            return subprocess.run(node.argv(*flag, *args), capture_output=True, text=True, env=env, timeout=60)

        p = run("--json", "fetch", "m")
        assert p.returncode == 0, p.stderr
        assert '"version": "1.1.0"' in p.stdout
        p = run("fetch", "m@2.0.0")
        assert p.returncode == 3 and "offline" in p.stderr and "m@2.0.0" in p.stderr
        p = run("versions", "m")
        assert p.returncode == 7 and "offline" in p.stderr


def test_nothing_here_and_offline_says_what_is_missing(tmp_path):
    cas = CasRunner(tmp_path / "empty", tmp_path)
    p = subprocess.run(cas.argv("fetch", "m"), capture_output=True, text=True, timeout=60,
                       env={**os.environ, "CAS_OFFLINE": "1"})
    assert p.returncode == 3 and "offline" in p.stderr and "any version of m" in p.stderr


def test_https_to_a_plain_http_server_is_an_error_to_fix_not_a_remote_that_is_down(node, tmp_path):
    """Before: counted as "unreachable", so `cas fetch m` served the newest local version, exit 0."""
    from servers import CasServe

    srv = CasServe(tmp_path / "plain", token=None)
    try:
        https = srv.url.replace("http://", "https://")
        p = node("fetch", "m", "--remote", https, ok=False)
        assert p.returncode == 7, p.stderr
        assert "TLS with" in p.stderr and "plain HTTP: use http://" in p.stderr and "newest version" not in p.stderr
    finally:
        srv.stop()
