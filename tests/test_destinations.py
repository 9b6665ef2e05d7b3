"""Nothing a cloned project or a user-named path says can make casstore write or delete outside
the destination, or into .git (real `cas` processes on real files; docs/security.md).

Each attack checks what is on disk afterwards, not only the exit code: the files outside the
destination are byte-for-byte what they were, and nothing was written where it must not be.
"""

import os
import shutil
import stat
import subprocess

import pytest

from casstore.errors import InvalidInput, UnsafeDestination
from casstore.fs.destination import Destination
from casstore.ops.add import add
from casstore.ops.checkout import checkout
from casstore.ops.project import Project

from accounts import GROUP, give_to, readable_base, run_as
from conftest import CasRunner, make_model


def snapshot(root):
    """Every path under ``root`` with its type and bytes, to prove nothing changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None)
    return out


@pytest.fixture
def victim(tmp_path):
    v = make_model(tmp_path / "elsewhere", {"precious.txt": b"keep me", "sub/data.bin": b"\x00" * 100})
    return v, snapshot(v)


@pytest.fixture
def published(tmp_path):
    """m@1.0.0 on a directory remote, with a file that would be a git hook if it landed in .git/hooks."""
    src = make_model(tmp_path / "src", {"pre-commit": b"#!/bin/sh\necho pwned > /tmp/pwned\n", "config.json": b"{}"})
    os.chmod(src / "pre-commit", 0o755)
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", src, "--name", "m", "--version", "1.0.0")
    pub("push", "m@1.0.0", "--remote", tmp_path / "nas")
    return tmp_path / "nas"


def clone(tmp_path, nas, path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "cas.toml").write_text(f'remote = "{nas}"\n[models.m]\nversion = "1.0.0"\npath = "{path}"\n')
    return repo, CasRunner(tmp_path / "store", repo)


def test_sync_refuses_a_committed_symlink_on_the_model_path(tmp_path, published, victim):
    v, before = victim
    repo, cas = clone(tmp_path, published, "models/m")
    (repo / "models").mkdir()
    os.symlink(os.path.relpath(v, repo / "models"), repo / "models" / "m")  # as a clone would check it out
    p = cas("sync", ok=False)
    assert p.returncode == 2 and "symlink" in p.stderr and str(repo / "models" / "m") in p.stderr
    assert snapshot(v) == before


def test_sync_refuses_a_symlink_higher_up_the_path(tmp_path, published, victim):
    v, before = victim
    repo, cas = clone(tmp_path, published, "models/m")
    os.symlink(v, repo / "models")
    p = cas("sync", ok=False)
    assert p.returncode == 2 and str(repo / "models") in p.stderr
    assert snapshot(v) == before


@pytest.mark.parametrize("path", [".git/hooks", "sub/.git/hooks", ".GIT/hooks", "../outside", "/abs/path"])
def test_a_project_path_into_git_or_outside_is_refused_when_cas_toml_is_read(tmp_path, published, path):
    repo, cas = clone(tmp_path, published, path)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    hooks_before = sorted(os.listdir(repo / ".git" / "hooks"))
    p = cas("sync", ok=False)
    assert p.returncode == 2 and "cas.toml" in p.stderr and path.split("/")[0] in p.stderr
    assert sorted(os.listdir(repo / ".git" / "hooks")) == hooks_before
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert not (tmp_path / "outside").exists()


def test_checkout_refuses_a_symlink_destination_with_clean(tmp_path, store, victim):
    v, before = victim
    add(store, make_model(tmp_path / "src", {"a.txt": b"a"}), "m", "1")
    os.symlink(v, tmp_path / "dest")
    with pytest.raises(UnsafeDestination, match="symlink"):
        checkout(store, store.load("m")[2], tmp_path / "dest", clean=True)
    assert snapshot(v) == before
    cas = CasRunner(store.root, tmp_path)
    p = cas("checkout", "m", tmp_path / "dest", "--clean", ok=False)
    assert p.returncode == 2 and str(tmp_path / "dest") in p.stderr
    assert snapshot(v) == before


def test_checkout_into_a_git_directory_is_refused(tmp_path, store):
    add(store, make_model(tmp_path / "src", {"pre-commit": b"x"}), "m", "1")
    (tmp_path / "repo" / ".git" / "hooks").mkdir(parents=True)
    with pytest.raises(UnsafeDestination, match=".git"):
        checkout(store, store.load("m")[2], tmp_path / "repo" / ".git" / "hooks")
    assert os.listdir(tmp_path / "repo" / ".git" / "hooks") == []


def test_clean_removes_only_inside_and_never_follows(tmp_path, store, victim):
    v, before = victim
    add(store, make_model(tmp_path / "src", {"keep.txt": b"k", "d/keep2.txt": b"k2"}), "m", "1")
    m = store.load("m")[2]
    dest = tmp_path / "dest"
    checkout(store, m, dest)
    os.symlink(v, dest / "d" / "linked-dir")  # a link to a directory outside: the link goes, not its files
    os.symlink(v / "precious.txt", dest / "linked-file")
    (dest / "stale.bin").write_bytes(b"old")
    (dest / "empty" / "deeper").mkdir(parents=True)
    (dest / ".git" / "objects").mkdir(parents=True)  # a repository the user made here is not ours to clean
    (dest / ".git" / "objects" / "x").write_bytes(b"git object")
    os.mkfifo(dest / "fifo")
    res = checkout(store, m, dest, clean=True)
    assert sorted(res.removed) == ["d/linked-dir", "linked-file", "stale.bin"]
    assert sorted(os.listdir(dest)) == [".git", "d", "fifo", "keep.txt"]
    assert (dest / ".git" / "objects" / "x").read_bytes() == b"git object"
    assert snapshot(v) == before


def test_a_directory_swapped_for_a_symlink_after_the_check_is_not_followed(tmp_path, store, victim):
    """The time-of-check/time-of-use race: the destination is held open by descriptor, so moving
    it away and putting a symlink in its place redirects nothing."""
    v, before = victim
    add(store, make_model(tmp_path / "src", {"a/x.txt": b"x", "b/y.txt": b"y"}), "m", "1")
    m = store.load("m")[2]
    (tmp_path / "proj").mkdir()
    with Destination.under(tmp_path / "proj", "models/m") as d:
        os.rename(tmp_path / "proj" / "models", tmp_path / "proj" / "moved")
        os.symlink(v, tmp_path / "proj" / "models")
        checkout(store, m, d, clean=True)
    assert snapshot(v) == before
    assert (tmp_path / "proj" / "moved" / "m" / "a" / "x.txt").read_bytes() == b"x"


def test_a_subdirectory_replaced_by_a_symlink_is_refused(tmp_path, store, victim):
    v, before = victim
    add(store, make_model(tmp_path / "src", {"a/x.txt": b"x"}), "m", "1")
    m = store.load("m")[2]
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(v, dest / "a")
    with pytest.raises(UnsafeDestination, match="symlink"):
        checkout(store, m, dest)
    assert snapshot(v) == before


def test_a_file_in_place_of_the_target_is_replaced_not_written_through(tmp_path, store, victim):
    v, before = victim
    add(store, make_model(tmp_path / "src", {"a.txt": b"new"}), "m", "1")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.link(v / "precious.txt", dest / "a.txt")  # a hard link to a file outside
    checkout(store, store.load("m")[2], dest, link="copy")
    assert (dest / "a.txt").read_bytes() == b"new"
    assert snapshot(v) == before


def test_cas_toml_field_types_are_checked(tmp_path):
    for body, what in (('[models.m]\npath = 3\n', "path"), ('remote = ["x"]\n', "remote"),
                       ('[models.m]\nversion = 1.5\n', "version"), ('models = "x"\n', "models"),
                       ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested")):
        (tmp_path / "cas.toml").write_text(body)
        with pytest.raises(InvalidInput, match=what):
            Project.load(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating users needs root (CI runs as root)")
def test_sync_through_a_symlink_as_an_unprivileged_user(users):
    """The same attack as a normal account: its own files outside the project survive."""
    user = users[0]
    with readable_base("cas-sync-attack-") as (base, lib):
        home = base / "home"
        home.mkdir()
        shutil.chown(home, user, GROUP)
        src = make_model(base / "src", {"config.json": b"{}", "w.bin": 1000})
        for cmd in (("add", src, "--name", "m", "--version", "1.0.0"), ("push", "m@1.0.0", "--remote", home / "nas")):
            p = run_as(user, lib, home, "--store", home / "pub", *cmd)
            assert p.returncode == 0, p.stderr
        mine = make_model(home / "mine", {"thesis.tex": b"years of work"})
        repo = home / "repo"
        (repo / "models").mkdir(parents=True)
        (repo / "cas.toml").write_text(f'remote = "{home / "nas"}"\n[models.m]\nversion = "1.0.0"\npath = "models/m"\n')
        os.symlink("../../mine", repo / "models" / "m")
        give_to(user, home)
        before = snapshot(mine)
        p = run_as(user, lib, home, "--store", home / "store", "sync", cwd=repo)
        assert p.returncode == 2 and "symlink" in p.stderr, p.stderr
        assert snapshot(mine) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="creating users needs root (CI runs as root)")
def test_checkout_clean_through_a_symlink_as_an_unprivileged_user(users):
    user = users[0]
    with readable_base("cas-checkout-attack-") as (base, lib):
        home = base / "home"
        home.mkdir()
        src = make_model(base / "src", {"a.txt": b"model"})
        mine = make_model(home / "mine", {"notes.txt": b"mine"})
        os.symlink(mine, home / "dest")
        give_to(user, home)
        before = snapshot(mine)
        assert run_as(user, lib, home, "--store", home / "store", "add", src, "--name", "m", "--version", "1").returncode == 0
        p = run_as(user, lib, home, "--store", home / "store", "checkout", "m", home / "dest", "--clean")
        assert p.returncode == 2 and "symlink" in p.stderr, p.stderr
        assert snapshot(mine) == before
