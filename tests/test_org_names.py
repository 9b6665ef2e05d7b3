"""`ORG/NAME` model names, as on the Hugging Face hub: one path component on disk and in every
remote (``ORG~NAME``), the same validation everywhere, and old names unchanged."""

from __future__ import annotations

import os

import pytest

from casstore.errors import InvalidName
from casstore.model.keys import index_key, tags_key
from casstore.model.names import Ref, model_from_part, model_part, validate_model

from conftest import CasRunner, make_model
from servers import CasServe

ORG = "Wan-AI/Wan2.2-T2V-A14B"


def test_an_org_name_is_one_component_and_round_trips():
    assert model_part(ORG) == "Wan-AI~Wan2.2-T2V-A14B"
    assert model_from_part(model_part(ORG)) == ORG
    assert index_key(ORG) == "index/Wan-AI~Wan2.2-T2V-A14B.json"
    assert tags_key(ORG) == "refs/Wan-AI~Wan2.2-T2V-A14B/tags"
    assert model_part("t2v-A14B") == "t2v-A14B"  # names without an organisation are unchanged
    assert Ref.parse(f"{ORG}@1.1.0") == Ref(ORG, "1.1.0")


@pytest.mark.parametrize("bad", ["a/b/c", "/a", "a/", "a//b", "../a", "a/..", "a/.b", "a~b", "a\\b",
                                  "a/" + "b" * 129])
def test_bad_org_names_are_refused(bad):
    with pytest.raises(InvalidName):
        validate_model(bad)
    if "~" not in bad:
        with pytest.raises(InvalidName):
            model_from_part(bad.replace("/", "~"))


@pytest.mark.parametrize("bad", ["a~b~c", "a~~b", "~a", "a/b", "a~"])
def test_bad_components_name_no_model(bad):
    with pytest.raises(InvalidName):
        model_from_part(bad)


def test_an_org_model_through_add_push_fetch_path_and_gc(tmp_path):
    src = make_model(tmp_path / "src", {"model.safetensors": 3000, "config.json": b"{}"})
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", src, "--name", ORG, "--version", "1.1.0")
    assert (tmp_path / "pub" / "refs" / "Wan-AI~Wan2.2-T2V-A14B" / "tags" / "1.1.0").is_file()
    assert not (tmp_path / "pub" / "refs" / "Wan-AI").exists()
    assert [m["model"] for m in pub.json("list")["models"]] == [ORG]

    srv = CasServe(tmp_path / "served")
    try:
        for remote in (tmp_path / "dir-remote", srv.url):
            env = {"CAS_TOKEN": srv.token} if remote == srv.url else {}
            os.environ.update(env)
            try:
                pub("push", f"{ORG}@1.1.0", "--remote", remote)
                dst = CasRunner(tmp_path / f"dst-{len(str(remote))}", tmp_path)
                dst("fetch", f"{ORG}@1.1.0", "--remote", remote)
                view = dst("path", f"{ORG}@1.1.0").stdout.strip()
                assert open(os.path.join(view, "config.json"), "rb").read() == b"{}"
                assert dst.json("verify")["ok"]
                dst("gc")
                assert dst("path", ORG).returncode == 0  # the current version survives GC
            finally:
                for k in env:
                    os.environ.pop(k)
        assert (tmp_path / "dir-remote" / "index" / "Wan-AI~Wan2.2-T2V-A14B.json").is_file()
        assert (tmp_path / "served" / "index" / "Wan-AI~Wan2.2-T2V-A14B.json").is_file()
    finally:
        srv.stop()


def test_a_remote_name_has_no_organisation(cas, tmp_path):
    p = cas("remote", "add", "team/nas", tmp_path / "r", ok=False)
    assert p.returncode == 2 and "invalid remote name 'team/nas'" in p.stderr
