"""Runtime requirements of a version (`--requires`), checked against the running environment."""

import json

import pytest

from casstore.errors import InvalidInput
from casstore.model import runtime

from conftest import CasRunner, make_model

MISSING = "surely-not-installed-casstore-test>=1.0"


def test_unmet_names_what_is_missing_or_too_old():
    meta = {runtime.META_KEY: runtime.encode(runtime.parse(["torch>=2.4", "python>=3.10", "diffusers>=0.31", "x; python_version<'3'"]))}
    got = runtime.unmet(meta, installed={"torch": "2.3.1", "python": "3.11.7"})
    assert got == ["diffusers>=0.31 (not installed)", "torch>=2.4 (found 2.3.1)"]
    assert runtime.unmet(meta, installed={"torch": "2.5", "python": "3.11", "diffusers": "0.31.0"}) == []
    with pytest.raises(InvalidInput, match="torch>>2"):
        runtime.parse(["torch>>2"])


@pytest.fixture
def env(tmp_path):
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", make_model(tmp_path / "a", {"w": b"1"}), "--name", "m", "--version", "1.0.0", "--requires", "click>=1")
    pub("add", make_model(tmp_path / "b", {"w": b"2"}), "--name", "m", "--version", "1.1.0", "--requires", MISSING,
        "--requires", "python>=3.8")
    for v in ("1.0.0", "1.1.0"):
        pub("push", f"m@{v}", "--remote", tmp_path / "nas")
    return pub, tmp_path / "nas"


def test_use_refuses_what_this_environment_cannot_run(env):
    pub, _ = env
    p = pub("use", "m@1.1.0", ok=False)
    assert p.returncode == 5 and MISSING in p.stderr and "not installed" in p.stderr and "--ignore-requirements" in p.stderr
    assert pub.json("show", "m@1.1.0")["requires"] == ["python>=3.8", MISSING]  # sorted
    assert "not met here" in pub("show", "m@1.1.0").stdout
    pub("use", "m@1.1.0", "--ignore-requirements")
    assert pub.json("log", "m")["history"][0]["version"] == "1.1.0"


def test_update_and_check_updates_report_and_do_not_select(env, tmp_path):
    _, nas = env
    user = CasRunner(tmp_path / "user", tmp_path)
    user("fetch", "m@1.0.0", "--remote", nas)
    [info] = user.json("check-updates", "--remote", nas)["models"]
    assert info["latest"] == "1.1.0" and info["unmet_requirements"] == [f"{MISSING} (not installed)"]
    p = user("update", "m", "--remote", nas, ok=False)
    assert p.returncode == 5 and MISSING in p.stderr
    assert user.json("log", "m")["history"][0]["version"] == "1.0.0"
    assert user.json("update", "m", "--remote", nas, "--ignore-requirements")["to"] == "1.1.0"


def test_sync_refuses_a_locked_version_it_cannot_run(env, tmp_path):
    _, nas = env
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "cas.toml").write_text(f'remote = "{nas}"\n[models.m]\nversion = "1.1.0"\n')
    user = CasRunner(tmp_path / "user", proj)
    p = user("sync", ok=False)
    assert p.returncode == 5 and MISSING in p.stderr
    assert not (proj / "models" / "m" / "w").exists()
    user("sync", "--ignore-requirements")
    assert (proj / "models" / "m" / "w").read_bytes() == b"2"


def test_a_bad_requirement_stops_add_before_it_starts(tmp_path):
    cas = CasRunner(tmp_path / "s", tmp_path)
    p = cas("add", make_model(tmp_path / "a", {"w": 10}), "--name", "m", "--version", "1", "--requires", "torch>>2", ok=False)
    assert p.returncode == 2 and "torch>>2" in p.stderr
    assert json.loads(cas("--json", "list").stdout)["models"] == []


def test_check_updates_recommends_what_runs_here_and_update_takes_it(tmp_path):
    pub = CasRunner(tmp_path / "pub", tmp_path)
    for v, req in (("1.0.0", ()), ("1.1.1", ("--requires", "python>=3.8")), ("1.1.5", ("--requires", MISSING))):
        pub("add", make_model(tmp_path / v, {"w": v.encode()}), "--name", "m", "--version", v, *req)
        pub("push", f"m@{v}", "--remote", tmp_path / "nas")
    pub("add", make_model(tmp_path / "local", {"w": b"x"}), "--name", "never-pushed", "--version", "1")
    user = CasRunner(tmp_path / "user", tmp_path)
    user("fetch", "m@1.0.0", "--remote", tmp_path / "nas")
    user("add", make_model(tmp_path / "local2", {"w": b"y"}), "--name", "never-pushed", "--version", "1")
    p = user("check-updates", "--remote", tmp_path / "nas")  # exit 0: one unpublished model is one line
    assert "never-pushed" in p.stdout and "cannot check" in p.stdout
    assert "`cas update` takes 1.1.1" in p.stdout and f"skipped 1.1.5: needs {MISSING}" in p.stdout
    infos = {i["model"]: i for i in user.json("check-updates", "--remote", tmp_path / "nas")["models"]}
    assert infos["m"]["latest"] == "1.1.5" and infos["m"]["recommended"] == "1.1.1"
    assert infos["m"]["skipped"] == [{"version": "1.1.5", "why": f"needs {MISSING} (not installed)"}]
    assert infos["never-pushed"]["error"] and infos["never-pushed"]["recommended"] is None
    assert user.json("update", "m", "--remote", tmp_path / "nas")["to"] == "1.1.1"  # not 1.1.5, then exit 5
