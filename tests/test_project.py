"""Projects end to end with real processes and a real git repository."""

import json
import os
import subprocess

import pytest

from casstore.ops.project import Project
from casstore.store.objects import Store
from casstore.store.roots import project_roots

from conftest import CasRunner, make_model

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout


def same(a, b):
    return subprocess.run(["diff", "-r", str(a), str(b)], capture_output=True).returncode == 0


def project(tmp_path, nas, requirement):
    """A project directory requiring t2v at ``requirement`` from ``nas``, and a `cas` runner in it."""
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "cas.toml").write_text(f'remote = "{nas}"\n[models.t2v]\nversion = "{requirement}"\n')
    return proj, CasRunner(tmp_path / "s", proj)


@pytest.fixture
def published(tmp_path):
    """t2v 1.0.0 and 1.1.0 (and a breaking 2.0.0) on a directory remote."""
    pub = CasRunner(tmp_path / "pub", tmp_path)
    srcs = {}
    for v, cfg in (("1.0.0", b'{"v": 1}'), ("1.1.0", b'{"v": 2}'), ("2.0.0", b'{"v": 3}')):
        src = make_model(tmp_path / f"src-{v}", {"config.json": cfg, "model.bin": 200_000 if v != "1.1.0" else 210_000})
        if v == "1.1.0":
            (src / "model.bin").write_bytes((tmp_path / "src-1.0.0" / "model.bin").read_bytes() + b"x" * 10_000)
        pub("add", src, "--name", "t2v", "--version", v, *(["--breaking"] if v == "2.0.0" else []))
        pub("push", f"t2v@{v}", "--remote", tmp_path / "nas")
        srcs[v] = src
    return tmp_path / "nas", srcs


def test_lock_commit_clone_sync_update_rollback_tamper(tmp_path, published):
    nas, srcs = published
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "cas.toml").write_text(f'remote = "{nas}"\n[models.t2v]\nversion = "1.0.0"\npath = "weights/t2v"\n')
    me = CasRunner(tmp_path / "my-store", repo)
    assert me.json("lock")["models"] == {"t2v": "1.0.0"}
    lock = json.loads((repo / "cas.lock").read_text())
    assert [f["path"] for f in lock["models"]["t2v"]["files"]] == ["config.json", "model.bin"]
    git(repo, "init", "-q")
    git(repo, "add", "cas.toml", "cas.lock")
    git(repo, "commit", "-qm", "pin t2v 1.0.0")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    colleague = CasRunner(tmp_path / "colleague-store", clone)
    colleague("sync", "--frozen")
    assert same(srcs["1.0.0"], clone / "weights" / "t2v")
    assert (clone / "weights/t2v/model.bin").stat().st_mode & 0o222 == 0
    # The project is a GC root of the colleague's store.
    roots = project_roots(Store.open(tmp_path / "colleague-store"))
    assert [str(d) for d in roots.manifests] == [lock["models"]["t2v"]["manifest"]]

    # Update: the requirement moves to ^1.1; the lock diff names the weight file that changed.
    me("lock", "t2v@^1.1")
    assert git(repo, "diff", "--stat", "cas.lock").strip()
    diff = git(repo, "diff", "cas.lock")
    assert '"model.bin"' in diff and '"version": "1.1.0"' in diff and "config.json" in diff
    git(repo, "commit", "-qam", "t2v 1.1.0")
    git(clone, "pull", "-q")
    res = colleague.json("sync", "--frozen")
    assert res["models"] == {"t2v": "1.1.0"}
    assert same(srcs["1.1.0"], clone / "weights" / "t2v")

    # Roll back: the previous lock, synced again, materialises 1.0.0 without downloading.
    git(clone, "revert", "--no-edit", "HEAD")
    res = colleague.json("sync", "--frozen")
    assert res["models"] == {"t2v": "1.0.0"} and res["bytes_downloaded"] == 0
    assert same(srcs["1.0.0"], clone / "weights" / "t2v")

    # Offline, with everything local: works; a fresh store offline: says precisely what is missing.
    colleague("sync", "--frozen", "--offline")
    p = CasRunner(tmp_path / "empty-store", clone)("sync", "--offline", ok=False)
    assert p.returncode == 3 and "t2v@1.0.0" in p.stderr and "manifest" in p.stderr

    # Someone moves the published 1.0.0 tag on the remote: a frozen sync refuses it.
    import asyncio

    from casstore.model.digest import Digest
    from casstore.remotes.directory import DirectoryRemote

    remote = DirectoryRemote(nas)
    data, tag = asyncio.run(remote.read_index("t2v"))
    idx = json.loads(data)
    idx["versions"]["1.0.0"]["manifest"] = idx["versions"]["1.1.0"]["manifest"]
    remote.write_index_sync("t2v", json.dumps(idx).encode(), tag)
    assert Digest.of_bytes((nas / "index" / "t2v.json").read_bytes()).hex != tag
    p = CasRunner(tmp_path / "third-store", clone)("sync", "--frozen", ok=False)
    assert p.returncode == 5 and "moved" in p.stderr
    assert not (tmp_path / "third-store" / "refs" / "t2v").exists()

    # A registration whose cas.lock has gone is dropped.
    (clone / "cas.lock").unlink()
    assert project_roots(Store.open(tmp_path / "colleague-store")).manifests == {}


def test_frozen_refuses_a_stale_lock_and_sync_relocks(tmp_path, published):
    nas, srcs = published
    proj, c = project(tmp_path, nas, "^1.0")
    p = c("sync", "--frozen", ok=False)
    assert p.returncode == 5 and "t2v is in cas.toml but not locked" in p.stderr
    res = c.json("sync")  # not frozen: locks first
    assert res["models"] == {"t2v": "1.1.0"} and res["relocked"][0]["to"] == "1.1.0"
    assert same(srcs["1.1.0"], proj / "models" / "t2v")


def test_hand_edited_file_list_is_an_integrity_error(tmp_path, published):
    nas, _ = published
    proj, c = project(tmp_path, nas, "1.0.0")
    c("lock")
    text = (proj / "cas.lock").read_text().replace('"size": 200000', '"size": 200001')
    (proj / "cas.lock").write_text(text)
    p = c("sync", "--frozen", ok=False)
    assert p.returncode == 4 and "does not match manifest" in p.stderr
    assert not (proj / "models").exists()


def test_unsatisfiable_requirement_and_fetch_records(tmp_path, published):
    nas, _ = published
    proj, c = project(tmp_path, nas, "^3")
    p = c("lock", ok=False)
    assert p.returncode == 3 and "no published version of t2v satisfies '^3'" in p.stderr
    assert not (proj / "cas.lock").exists()
    c("fetch", "t2v@1.1.0", "--remote", nas)
    loaded = Project.load(proj)
    assert loaded.models["t2v"].requirement == "1.1.0"
    assert loaded.read_lock().models["t2v"].version == "1.1.0"


def test_init_and_first_lock_create_cas_toml_and_keep_its_comments(tmp_path, published):
    nas, _ = published
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q")
    me = CasRunner(tmp_path / "s", repo)
    out = me.json("lock", "t2v@1.0.0", "--remote", nas)  # no cas.toml yet: the first lock starts one
    assert out["models"] == {"t2v": "1.0.0"} and (repo / "cas.toml").is_file() and (repo / "cas.lock").is_file()
    other = tmp_path / "other"
    other.mkdir()
    you = CasRunner(tmp_path / "s2", other)
    assert you.json("init", "--remote", str(nas))["project"] == str(other / "cas.toml")
    toml = other / "cas.toml"
    toml.write_text(toml.read_text() + "\n# our pinned models, reviewed in PRs\n[models.t2v]  # the big one\n"
                    'version = "1.0.0"\npath = "w/t2v"  # where sync puts it\n')
    you("lock", "t2v@^1.0")
    text = toml.read_text()
    assert "# our pinned models, reviewed in PRs" in text and "# the big one" in text and "# where sync puts it" in text
    assert 'version = "^1.0"' in text and Project.load(other).models["t2v"].requirement == "^1.0"
    assert you.json("init")["project"] == str(toml) and toml.read_text() == text  # an existing one is kept


def test_remote_add_refuses_to_replace_without_force(tmp_path, published):
    nas, _ = published
    me = CasRunner(tmp_path / "s", tmp_path)
    me("remote", "add", "team", nas, "--default")
    p = me("remote", "add", "team", tmp_path / "elsewhere", ok=False)
    assert p.returncode == 5 and "already" in p.stderr and "(the default)" in p.stderr and "--force" in p.stderr
    me("remote", "add", "team", nas)  # the same URL again is fine
    me("remote", "add", "team", tmp_path / "elsewhere", "--force")
    assert me.json("remote", "list")["remotes"][0]["url"] == str(tmp_path / "elsewhere")


def test_sync_keeps_the_materialised_weights_out_of_git(tmp_path, published):
    nas, _ = published
    proj, cas = project(tmp_path, nas, "1.0.0")
    (proj / ".gitignore").write_text("*.pyc")  # no trailing newline: kept, and added after
    out = cas.json("sync")
    assert out["gitignored"] == ["/models/t2v/"]
    assert (proj / ".gitignore").read_text() == "*.pyc\n/models/t2v/\n"
    assert cas.json("sync")["gitignored"] == []  # once
    git(proj, "init", "-q")
    git(proj, "add", "-A")
    assert "models/" not in git(proj, "status", "--porcelain", "--untracked-files=all")


def test_a_fetch_in_a_project_never_replaces_the_locked_version(tmp_path, published):
    """Before: `cas fetch t2v@1.0.0 -q` rewrote (downgraded) the committed cas.lock, silently."""
    nas, _ = published
    proj, c = project(tmp_path, nas, "^1.0")
    c("lock")
    locked = (proj / "cas.lock").read_bytes()
    assert Project.load(proj).read_lock().models["t2v"].version == "1.1.0"
    p = c("fetch", "t2v@1.0.0", "--remote", nas)
    assert (proj / "cas.lock").read_bytes() == locked
    assert "keeps t2v@1.1.0; `cas lock t2v@1.0.0` records this version instead" in p.stderr
    assert (proj / "cas.lock").read_bytes() == locked and c("fetch", "t2v@1.0.0", "--remote", nas, "-q").stderr == ""
    c("lock", "t2v@1.0.0")
    assert Project.load(proj).read_lock().models["t2v"].version == "1.0.0"
