"""Errors name the cause and the next step (real servers and processes)."""

import os

import pytest

from conftest import CasRunner, make_model
from servers import CasServe, nginx


@pytest.fixture
def pub(tmp_path):
    cas = CasRunner(tmp_path / "pub", tmp_path)
    cas("add", make_model(tmp_path / "src", {"w.bin": 1000}), "--name", "m", "--version", "1.0.0")
    cas("push", "m@1.0.0", "--remote", tmp_path / "nas")
    return cas


def test_a_wrong_url_or_missing_directory_is_not_called_unpublished(pub, tmp_path):
    p = pub("fetch", "m", "--remote", tmp_path / "no-such-dir", ok=False)
    assert p.returncode == 3 and "no casstore remote at" in p.stderr and "not published" not in p.stderr
    with nginx(tmp_path, tmp_path / "ngx") as srv:  # the parent of the remote: a wrong base URL
        p = pub("fetch", "m", "--remote", srv.url, ok=False)
        assert p.returncode == 3 and f"no casstore remote at {srv.url}" in p.stderr
        p = pub("fetch", "m", "--remote", srv.url + "nas/", ok=False)  # the right one works
        assert p.returncode == 0, p.stderr
    p = pub("fetch", "other", "--remote", tmp_path / "nas", ok=False)
    assert p.returncode == 3 and "model other is not published" in p.stderr


def test_pushing_to_a_static_server_says_so(pub, tmp_path):
    with nginx(tmp_path / "nas", tmp_path / "ngx") as srv:
        pub("add", make_model(tmp_path / "src2", {"w.bin": 2000}), "--name", "m", "--version", "1.1.0")
        p = pub("push", "m@1.1.0", "--remote", srv.url, ok=False)
    assert p.returncode == 7 and "read-only static server" in p.stderr and "cas serve" in p.stderr
    assert "Unclosed" not in p.stderr and "Traceback" not in p.stderr


def test_refusals_name_the_token_variable(pub, tmp_path):
    srv = CasServe(tmp_path / "served")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_TOKEN")}
        import subprocess

        p = subprocess.run(pub.argv("push", "m@1.0.0", "--remote", srv.url), capture_output=True, text=True, env=env)
        assert p.returncode == 7 and "no token was sent" in p.stderr and "CAS_TOKEN" in p.stderr
        p = subprocess.run(pub.argv("push", "m@1.0.0", "--remote", srv.url), capture_output=True, text=True,
                           env={**env, "CAS_TOKEN": "wrong"})
        assert p.returncode == 7 and "not accepted" in p.stderr and "wrong" not in p.stderr
        assert "Unclosed" not in p.stderr
    finally:
        srv.stop()


def test_an_unusable_store_path_names_the_way_out(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    cas = CasRunner(tmp_path / "file" / "store", tmp_path)
    p = cas("add", make_model(tmp_path / "src", {"a": 1}), "--name", "m", "--version", "1", ok=False)
    assert p.returncode == 1 and "CAS_HOME" in p.stderr and "--store" in p.stderr and "Errno" not in p.stderr


def test_reading_commands_do_not_create_a_store(tmp_path):
    cas = CasRunner(tmp_path / "nowhere", tmp_path)
    assert cas("list").returncode == 0 and cas.json("du")["models"] == []
    p = cas("show", "m", ok=False)
    assert p.returncode == 3 and "no casstore store at" in p.stderr
    assert not (tmp_path / "nowhere").exists()
