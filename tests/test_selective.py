"""Selective fetch (`--include`/`--exclude`, cas.toml's `include =`): a GPU node that needs one
expert of a model fetches only its files, gets a read-only directory of just those, keeps the
selection through updates, and GC treats the partial version like any other."""

import json
import os

import pytest

from casstore.model.globs import Selection
from casstore.store.objects import Store

from conftest import CasRunner, assert_store_consistent, make_model, publish

EXPERT = 256 << 10


@pytest.fixture
def published(tmp_path):
    """t2v@1.0.0 and 1.1.0 (1.1.0 changes one low-noise shard and one high-noise shard) on a
    directory remote; the sizes of what each selection needs."""
    nas = tmp_path / "nas"
    files = {"config.json": b'{"m": 1}', "vae.pth": 64 << 10,
             "high_noise/shard-1.safetensors": EXPERT, "high_noise/shard-2.safetensors": EXPERT,
             "low_noise/shard-1.safetensors": EXPERT, "low_noise/shard-2.safetensors": EXPERT}
    src = make_model(tmp_path / "v1", files)
    pub = publish(tmp_path, src, "t2v", "1.0.0", nas)
    make_model(src, {"low_noise/shard-2.safetensors": EXPERT, "high_noise/shard-1.safetensors": EXPERT})
    pub("add", src, "--name", "t2v", "--version", "1.1.0")
    pub("push", "t2v@1.1.0", "--remote", nas)
    return nas, src


def listing(d) -> set[str]:
    return {os.path.relpath(os.path.join(r, n), d) for r, _, names in os.walk(d) for n in names}


def test_selection_rules():
    sel = Selection.of(["low_noise/", "*.json"], ["*-2.safetensors"])
    assert sel.selects("low_noise/shard-1.safetensors") and sel.selects("config.json") and sel.selects("a/b.json")
    assert not sel.selects("low_noise/shard-2.safetensors") and not sel.selects("high_noise/shard-1.safetensors")
    assert Selection.of(["low_noise/*"]).selects("low_noise/deep/x.bin")
    assert Selection.of(exclude=["high_noise"]).selects("vae.pth")
    assert not Selection.of(exclude=["high_noise"]).selects("high_noise/x")
    assert Selection.of() is None
    assert Selection.decode(sel.encode()) == sel


def test_fetch_include_downloads_only_the_selected_files(tmp_path, published):
    nas, _ = published
    cas = CasRunner(tmp_path / "gpu", tmp_path)
    out = cas.json("fetch", "t2v@1.0.0", "--remote", nas, "--include", "low_noise/*", "--include", "config.json",
                   "--print-path")
    assert out["bytes_downloaded"] == 2 * EXPERT + 8 and out["selected"] == 3 and out["files"] == 6
    assert listing(out["path"]) == {"config.json", "low_noise/shard-1.safetensors", "low_noise/shard-2.safetensors"}
    # `cas path` of the version, and of the model (it became current), give the same directory
    assert cas("path", "t2v@1.0.0").stdout.strip() == out["path"] == cas("path", "t2v").stdout.strip()
    store = Store.open(tmp_path / "gpu")
    assert_store_consistent(store)
    assert cas("verify").returncode == 0
    (v,) = [v for m in cas.json("list")["models"] for v in m["versions"]]
    assert v["partial"] is True and v["files"] == 3 and "1.0.0 (part)" in cas("list").stdout
    shown = cas.json("show", "t2v@1.0.0")
    assert len(shown["entries"]) == 3 and shown["meta"]["cas.selection-of"] != out["manifest"]
    # the same selection again: nothing to download, not even the index (works offline)
    again = cas.json("--offline", "fetch", "t2v@1.0.0", "--include", "low_noise/*", "--include", "config.json")
    assert again["bytes_downloaded"] == 0 and again["manifest"] == out["manifest"]


def test_exclude_and_dry_run_agree_with_the_fetch(tmp_path, published):
    nas, _ = published
    cas = CasRunner(tmp_path / "gpu", tmp_path)
    plan = cas.json("fetch", "t2v@1.0.0", "--remote", nas, "--exclude", "high_noise/", "--dry-run")
    assert plan["bytes_missing"] == 2 * EXPERT + (64 << 10) + 8 and plan["files"] == 4
    assert not (tmp_path / "gpu" / "refs").exists() or not os.listdir(tmp_path / "gpu" / "refs")
    out = cas.json("fetch", "t2v@1.0.0", "--remote", nas, "--exclude", "high_noise/")
    assert out["bytes_downloaded"] == plan["bytes_missing"]


def test_a_selection_of_nothing_is_an_error_that_names_it(tmp_path, published):
    nas, _ = published
    cas = CasRunner(tmp_path / "gpu", tmp_path)
    p = cas("fetch", "t2v@1.0.0", "--remote", nas, "--include", "experts/*", ok=False)
    assert p.returncode == 2, p.stderr
    assert "--include experts/*" in p.stderr and "t2v@1.0.0" in p.stderr and "none of its 6 files" in p.stderr
    assert cas("list").stdout.strip() == "" or "t2v" not in cas("list").stdout


def test_a_whole_fetch_after_a_partial_one_downloads_the_rest(tmp_path, published):
    nas, _ = published
    cas = CasRunner(tmp_path / "gpu", tmp_path)
    part = cas.json("fetch", "t2v@1.0.0", "--remote", nas, "--include", "low_noise/")
    whole = cas.json("fetch", "t2v@1.0.0", "--remote", nas, "--print-path")
    assert whole["bytes_downloaded"] == 2 * EXPERT + (64 << 10) + 8 and whole["bytes_reused"] == 2 * EXPERT
    assert len(listing(whole["path"])) == 6 and cas("path", "t2v@1.0.0").stdout.strip() == whole["path"]
    store = Store.open(tmp_path / "gpu")
    assert store.refs.get_partial("t2v", "1.0.0") is None and whole["manifest"] != part["manifest"]
    assert_store_consistent(store)


def test_update_keeps_the_selection_and_downloads_only_what_changed_in_it(tmp_path, published):
    nas, _ = published
    cas = CasRunner(tmp_path / "gpu", tmp_path)
    cas("fetch", "t2v@1.0.0", "--remote", nas, "--include", "low_noise/")
    plan = cas.json("update", "t2v", "--remote", nas, "--dry-run")
    assert plan["changed"] == ["low_noise/shard-2.safetensors"] and plan["added"] == [] and plan["removed"] == []
    assert plan["download_bytes"] == EXPERT
    up = cas.json("update", "t2v", "--remote", nas)
    assert up["bytes_downloaded"] == EXPERT
    path = cas("path", "t2v").stdout.strip()
    assert listing(path) == {"low_noise/shard-1.safetensors", "low_noise/shard-2.safetensors"}
    # a new selection on update: the high-noise expert of a node that held the whole 1.0.0
    other = CasRunner(tmp_path / "gpu2", tmp_path)
    other("fetch", "t2v@1.0.0", "--remote", nas)
    up2 = other.json("update", "t2v", "--remote", nas, "--include", "high_noise/")
    assert listing(other("path", "t2v").stdout.strip()) == {"high_noise/shard-1.safetensors",
                                                            "high_noise/shard-2.safetensors"}
    assert up2["bytes_downloaded"] == EXPERT  # shard-1 changed; shard-2 was here in the whole 1.0.0
    assert_store_consistent(Store.open(tmp_path / "gpu2"))


def test_gc_treats_a_partial_version_as_a_version(tmp_path, published):
    nas, _ = published
    cas = CasRunner(tmp_path / "gpu", tmp_path)
    cas("fetch", "t2v@1.0.0", "--remote", nas, "--include", "low_noise/")
    hard = ["gc", "--max-size", "0", "--grace", "0", "--retention-days", "0", "--keep-last", "0"]
    cas(*hard)
    store = Store.open(tmp_path / "gpu")
    assert store.refs.get_partial("t2v", "1.0.0") is not None  # current: a root
    assert len(listing(cas("path", "t2v").stdout.strip())) == 2
    cas("fetch", "t2v@1.1.0", "--remote", nas)
    cas("use", "t2v@1.1.0")
    freed = cas.json(*hard)
    assert freed["result"]["versions"] == 1 and store.refs.get_partial("t2v", "1.0.0") is None
    assert_store_consistent(store)
    assert cas("verify").returncode == 0


def test_rm_drops_a_partial_version(tmp_path, published):
    nas, _ = published
    cas = CasRunner(tmp_path / "gpu", tmp_path)
    cas("fetch", "t2v@1.0.0", "--remote", nas)
    cas("fetch", "t2v@1.1.0", "--remote", nas, "--include", "config.json")
    cas("rm", "t2v@1.1.0")
    assert Store.open(tmp_path / "gpu").refs.get_partial("t2v", "1.1.0") is None
    assert cas("path", "t2v@1.1.0", ok=False).returncode == 3


def test_sync_materialises_only_the_selected_files_and_keeps_them(tmp_path, published):
    nas, _ = published
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "cas.toml").write_text(f'remote = "{nas}"\n[models.t2v]\nversion = "1.0.0"\npath = "w"\n'
                                   'include = ["low_noise/", "config.json"]\n')
    cas = CasRunner(tmp_path / "store", proj)
    out = cas.json("sync")
    assert out["bytes_downloaded"] == 2 * EXPERT + 8
    assert listing(proj / "w") == {"config.json", "low_noise/shard-1.safetensors", "low_noise/shard-2.safetensors"}
    lock = json.loads((proj / "cas.lock").read_text())
    assert len(lock["models"]["t2v"]["files"]) == 6  # the lock pins the whole published manifest
    cas("gc", "--max-size", "0", "--grace", "0", "--retention-days", "0", "--keep-last", "0")
    cas("--offline", "sync", "--frozen")  # everything it needs survived the GC: the project is a root
    assert_store_consistent(Store.open(tmp_path / "store"))
    # the selection changes: the directory follows, and only the new files are fetched
    (proj / "cas.toml").write_text(f'remote = "{nas}"\n[models.t2v]\nversion = "1.0.0"\npath = "w"\n'
                                   'exclude = ["high_noise/"]\n')
    out = cas.json("sync")
    assert out["bytes_downloaded"] == 64 << 10
    assert listing(proj / "w") == {"config.json", "vae.pth", "low_noise/shard-1.safetensors",
                                   "low_noise/shard-2.safetensors"}


def test_the_python_api_fetches_a_selection(tmp_path, published, monkeypatch):
    import casstore

    nas, _ = published
    path = casstore.fetch("t2v@1.0.0", remote=str(nas), store=tmp_path / "api", include=["config.json"])
    assert listing(path) == {"config.json"}


def test_a_partial_version_is_never_pushed(tmp_path, published):
    nas, _ = published
    cas = CasRunner(tmp_path / "gpu", tmp_path)
    cas("fetch", "t2v@1.0.0", "--remote", nas, "--include", "config.json")
    p = cas("push", "t2v@1.0.0", "--remote", tmp_path / "other", ok=False)
    assert p.returncode == 2 and "partial version" in p.stderr and "--include config.json" in p.stderr
    assert not (tmp_path / "other" / "index").exists()
