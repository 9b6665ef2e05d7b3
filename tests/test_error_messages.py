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
    assert p.returncode == 7 and "read-only server (a static server" in p.stderr and "cas serve" in p.stderr
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


BAD_ENV = [
    ("CAS_PART_SIZE", "lots", "CAS_PART_SIZE"),
    ("CAS_STALL_TIMEOUT", "soon", "CAS_STALL_TIMEOUT"),
    ("CAS_RETRY_ATTEMPTS", "0", "CAS_RETRY_ATTEMPTS"),
    ("CAS_LOCK_TIMEOUT", "-5", "CAS_LOCK_TIMEOUT"),
    ("CAS_OFFLINE", "maybe", "CAS_OFFLINE"),
    ("CAS_DELTA", "sometimes", "delta mode"),
]
BAD_CONFIG = [
    ('[gc]\nkeep_last = "two"\n', "gc.keep_last"),
    ('[gc]\nretention_days = "x"\n', "gc.retention_days"),
    ('[gc]\nmax_size = "lots"\n', "gc.max_size"),
    ('[gc]\ngrace = -1\n', "gc.grace"),
    ('gc = 3\n', "[gc] must be a table"),
    ('remotes = "x"\n', "remotes must be a table"),
    ('[remotes.a]\nurl = 5\n', "has no url"),
]


@pytest.mark.parametrize("var, value, named", BAD_ENV, ids=[v for v, _, _ in BAD_ENV])
def test_a_bad_environment_value_is_a_clear_error(pub, tmp_path, monkeypatch, var, value, named):
    """Before: CAS_PART_SIZE=64M or CAS_STALL_TIMEOUT=soon ended in a traceback, no JSON with --json."""
    monkeypatch.setenv(var, value)
    remote = "http://127.0.0.1:9/" if var == "CAS_STALL_TIMEOUT" else tmp_path / "nas"  # read by HTTP remotes
    p = CasRunner(tmp_path / "mine", tmp_path)("--json", "fetch", "m@1.0.0", "--remote", remote, ok=False)
    import json

    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert named in p.stderr and value in p.stderr, p.stderr
    assert json.loads(p.stdout)["error"]["exit_code"] == 2


@pytest.mark.parametrize("text, named", BAD_CONFIG, ids=[n for _, n in BAD_CONFIG])
def test_a_bad_user_config_value_is_a_clear_error(pub, tmp_path, text, named):
    import json

    with open(os.environ["CAS_CONFIG"], "w") as f:
        f.write(text)
    cas = CasRunner(tmp_path / "pub", tmp_path)
    for cmd in (["gc", "--dry-run"], ["du"], ["fetch", "m@1.0.0"]):
        p = cas("--json", *cmd, ok=False)
        if p.returncode == 0:
            continue  # a command that does not read that key
        assert p.returncode == 2 and "Traceback" not in p.stderr, (cmd, p.stderr)
        assert named in p.stderr and os.environ["CAS_CONFIG"] in p.stderr, (cmd, p.stderr)
        assert json.loads(p.stdout)["error"]["exit_code"] == 2
        break
    else:
        raise AssertionError(f"no command read {named}")


def test_a_bad_settle_time_is_a_clear_error(store, monkeypatch):
    from casstore.errors import InvalidInput
    from casstore.gc.sweep import settle_time

    monkeypatch.setenv("CAS_NAS_SETTLE", "later")
    with pytest.raises(InvalidInput, match="CAS_NAS_SETTLE='later'"):
        settle_time(store)


def test_an_absurd_size_argument_is_a_clear_error(pub):
    p = pub("gc", "--max-size", "9" * 40 + "G", "--dry-run", ok=False)
    assert p.returncode == 2 and "larger than" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_a_store_path_that_is_a_file_is_named_for_reads_too(tmp_path):
    from conftest import CasRunner

    (tmp_path / "afile").write_text("x")
    for args in (("list",), ("du",), ("add", tmp_path / "afile", "--name", "m", "--version", "1")):
        p = CasRunner(tmp_path / "afile", tmp_path)(*args, ok=False)
        assert p.returncode != 0 and "is a file, not a store directory" in p.stderr, (args, p.stderr)


def test_a_misspelt_model_or_version_gets_a_did_you_mean(tmp_path):
    from conftest import CasRunner, make_model

    cas = CasRunner(tmp_path / "s", tmp_path)
    cas("add", make_model(tmp_path / "a", {"w": 10}), "--name", "t2v-A14B", "--version", "1.1.0")
    p = cas("path", "t2v-A14", ok=False)
    assert p.returncode == 3 and "did you mean t2v-A14B?" in p.stderr
    p = cas("path", "t2v-a14b@1.1.0", ok=False)
    assert p.returncode == 3 and "no model t2v-a14b here; did you mean t2v-A14B?" in p.stderr
    p = cas("path", "t2v-A14B@1.1", ok=False)
    assert p.returncode == 3 and "versions here: 1.1.0" in p.stderr and "did you mean 1.1.0?" in p.stderr
    assert "did you mean" not in cas("path", "unrelated", ok=False).stderr


def test_a_version_option_that_does_not_exist_says_how_to_give_a_version(cas):
    """Before: `cas update m --version 1.2` suggested --json or --verbose (click's spelling guess)."""
    p = cas("update", "m", "--version", "1.2", ok=False)
    assert p.returncode == 2 and "--to VERSION" in p.stderr and "--json" not in p.stderr
    p = cas("fetch", "m", "--version", "1.2", ok=False)
    assert p.returncode == 2 and "MODEL@VERSION" in p.stderr
    assert "--json" in cas("fetch", "m", "--jsn", ok=False).stderr  # other misspellings keep click's guess
