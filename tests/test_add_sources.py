"""`cas add` of the trees teams already have: symlinked HF snapshots, `hf download --local-dir`
folders, Git LFS pointer checkouts; excludes; SHA-256 beside BLAKE3."""

from __future__ import annotations

import hashlib
import os

import pytest

from casstore.errors import InvalidInput
from casstore.ops.add import add

from conftest import assert_store_consistent, make_model

POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
           b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")


def _hf_snapshot(root, files):
    """An HF-cache-shaped repo: blobs named by SHA-256, a snapshot of relative symlinks."""
    blobs, snap = root / "blobs", root / "snapshots" / ("c" * 40)
    blobs.mkdir(parents=True)
    for rel, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        (blobs / sha).write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blobs / sha, link.parent))
    return snap


def test_move_of_a_symlinked_snapshot_links_the_targets_and_keeps_the_links(store, tmp_path):
    files = {"model.safetensors": os.urandom(1 << 20), "sub/config.json": b"{}", "dup.json": b"{}"}
    snap = _hf_snapshot(tmp_path / "models--o--n", files)
    r = add(store, snap, "o/n", "1", move=True)
    m = store.get_manifest(r.manifest)
    assert {e.path for e in m.entries} == set(files)
    for e in m.entries:
        link = snap / e.path
        assert link.is_symlink()  # HF's snapshot is unchanged
        assert os.path.samefile(link, store.blob_path(e.digest))  # its target is now the blob: no second copy
        assert link.read_bytes() == files[e.path]
    assert r.methods == {"hardlink": 2}
    assert_store_consistent(store)


def test_default_excludes_keep_local_dir_metadata_out(store, tmp_path):
    src = make_model(tmp_path / "local", {
        "model.safetensors": 2048, "config.json": b"{}",
        ".cache/huggingface/download/model.safetensors.metadata": b"abc\n1700000000.1\n",
        ".cache/huggingface/.gitignore": b"*", ".git/HEAD": b"ref", "sub/.DS_Store": b"x", "notes.txt~": b"x",
    })
    r1 = add(store, src, "m", "1")
    assert {e.path for e in store.get_manifest(r1.manifest).entries} == {"model.safetensors", "config.json"}
    assert ".cache/huggingface/ (.cache/huggingface/)" in r1.excluded
    # the same weights on another machine, with other timestamps: the same manifest
    (src / ".cache/huggingface/download/model.safetensors.metadata").write_bytes(b"abc\n1800000000.9\n")
    again = add(store, src, "m", "1")
    assert again.unchanged and again.manifest == r1.manifest


def test_exclude_patterns_and_no_default_excludes(store, tmp_path):
    src = make_model(tmp_path / "s", {"a.bin": 10, "logs/x.log": 5, "deep/y.log": 5, "tmp/z": 1, ".git/HEAD": b"r"})
    r = add(store, src, "m", "1", exclude=["*.log", "tmp/"])
    assert {e.path for e in store.get_manifest(r.manifest).entries} == {"a.bin"}
    r = add(store, src, "m", "2", default_excludes=False, exclude=["*.log"])
    assert {e.path for e in store.get_manifest(r.manifest).entries} == {"a.bin", "tmp/z"}  # .git/ never
    with pytest.raises(InvalidInput, match=r"no files to add \(1 excluded, e\.g\. x\.log \(\*\)\)"):
        add(store, src / "logs", "m", "3", exclude=["*"])


def test_a_git_lfs_pointer_is_refused_naming_it(store, tmp_path, cas):
    src = make_model(tmp_path / "repo", {"model.safetensors": POINTER, "config.json": b"{}"})
    with pytest.raises(InvalidInput, match=r"model\.safetensors is a Git LFS pointer.*git lfs pull"):
        add(store, src, "m", "1")
    assert list(store.iter_blobs()) == []
    p = cas("add", src, "--name", "m", "--version", "1", ok=False)
    assert p.returncode == 2 and "Git LFS pointer" in p.stderr and "4d7a2146" in p.stderr
    r = add(store, src, "m", "1", allow_lfs_pointers=True)
    assert r.files == 2


def test_sha256_is_recorded_from_the_same_read_and_survives_the_cache(store, tmp_path):
    big = os.urandom(5 << 20)  # over the threaded-hash threshold
    src = make_model(tmp_path / "s", {"big.bin": big, "small.json": b"{}"})
    old = 1_600_000_000
    for p in src.iterdir():
        os.utime(p, (old, old))  # old enough for the stat cache to trust
    r = add(store, src, "m", "1", sha256=True)
    m = store.get_manifest(r.manifest)
    assert m.schema == 2
    shas = {e.path: e.sha256 for e in m.entries}
    assert shas == {"big.bin": hashlib.sha256(big).hexdigest(), "small.json": hashlib.sha256(b"{}").hexdigest()}
    again = add(store, src, "m", "2", sha256=True)  # stat cache and SHA-256 table: nothing is read again
    assert again.hashed_bytes == 0
    assert {e.path: e.sha256 for e in store.get_manifest(again.manifest).entries} == shas
    plain = add(store, src, "m", "3")
    assert store.get_manifest(plain.manifest).schema == 1  # without --sha256, the old format
    assert add(store, src, "m", "1").unchanged  # re-adding without --sha256 is the same version


def test_cli_add_sha256_and_exclude(cas, tmp_path):
    src = make_model(tmp_path / "s", {"a.bin": 100, "b.log": 3})
    out = cas.json("add", src, "--name", "m", "--version", "1", "--sha256", "--exclude", "*.log")
    assert out["files"] == 1 and out["excluded"] == ["b.log (*.log)"]
    m = cas.json("show", "m@1")
    entry = m["entries"][0] if "entries" in m else m["manifest"]["entries"][0]
    assert entry["sha256"] == hashlib.sha256((src / "a.bin").read_bytes()).hexdigest()


def test_the_user_config_can_make_sha256_the_default(cas, tmp_path, monkeypatch):
    src = make_model(tmp_path / "s", {"a.bin": 100})
    (tmp_path / "cfg.toml").write_text("[add]\nsha256 = true\n")
    monkeypatch.setenv("CAS_CONFIG", str(tmp_path / "cfg.toml"))
    cas("add", src, "--name", "m", "--version", "1")
    assert "sha256" in cas.json("show", "m@1")["entries"][0]
    cas("add", src, "--name", "m", "--version", "2", "--no-sha256")
    assert "sha256" not in cas.json("show", "m@2")["entries"][0]
    (tmp_path / "cfg.toml").write_text("[add]\nsha256 = 3\n")
    p = cas("add", src, "--name", "m", "--version", "3", ok=False)
    assert p.returncode == 2 and "add.sha256" in p.stderr
