import os
import stat

import pytest

from casstore import path as cas_path
from casstore.errors import CasError, NotFound
from casstore.ops.add import add
from casstore.ops.checkout import checkout, view

from accounts import open_to_all, readable_base, run_as
from conftest import make_model

FILES = {"model.bin": 20_000, "sub/config.json": b'{"a": 1}', "sub/deep/tok.txt": b"hello"}


@pytest.fixture
def version(store, tmp_path):
    src = make_model(tmp_path / "src", FILES)
    os.chmod(src / "sub/deep/tok.txt", 0o755)
    r = add(store, src, "m", "1.0")
    return src, r.manifest, store.get_manifest(r.manifest)


def same_tree(a, b):
    for dirpath, _, names in os.walk(a):
        for n in names:
            rel = os.path.relpath(os.path.join(dirpath, n), a)
            assert open(os.path.join(b, rel), "rb").read() == open(os.path.join(a, rel), "rb").read(), rel
    return True


def test_view_is_relative_symlinks_and_reused(store, version):
    src, digest, m = version
    v = view(store, digest, m)
    assert same_tree(src, v)
    link = v / "sub" / "config.json"
    assert link.is_symlink() and not os.readlink(link).startswith("/")
    assert view(store, digest, m) == v
    assert cas_path(store, "m@1.0") == v == cas_path(store, "m")


@pytest.mark.parametrize("mode", ["auto", "hardlink", "symlink", "copy"])
def test_checkout_modes(store, version, tmp_path, mode):
    src, _, m = version
    dest = tmp_path / f"out-{mode}"
    r = checkout(store, m, dest, link=mode)
    assert r.files == 3 and same_tree(src, dest)
    f = dest / "model.bin"
    if mode != "symlink":
        assert f.stat().st_mode & 0o222 == 0, "materialised files are read-only"
    if mode == "copy":
        assert os.stat(dest / "sub/deep/tok.txt").st_mode & 0o111
    # A second checkout leaves linked files alone.
    r2 = checkout(store, m, dest, link=mode)
    assert r2.unchanged == 3 and r2.files == 0


def test_reflink_unsupported_is_a_clear_error(store, version, tmp_path):
    _, _, m = version
    try:
        checkout(store, m, tmp_path / "r", link="reflink")
    except CasError as e:
        assert "--link reflink is not possible" in str(e)
    else:  # a reflink-capable filesystem: the files must still be right
        assert same_tree(version[0], tmp_path / "r")


def test_changed_copy_is_replaced(store, version, tmp_path):
    _, _, m = version
    dest = tmp_path / "d"
    checkout(store, m, dest, link="copy")
    f = dest / "model.bin"
    os.chmod(f, 0o644)
    f.write_bytes(b"x" * f.stat().st_size)  # same size, new mtime, writable
    r = checkout(store, m, dest, link="copy")
    assert r.files == 1 and r.unchanged == 2
    assert f.read_bytes() == (version[0] / "model.bin").read_bytes()


def test_existing_file_replaced_not_written_through(store, version, tmp_path):
    _, _, m = version
    dest = tmp_path / "d"
    (dest / "sub").mkdir(parents=True)
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    os.link(outside, dest / "sub" / "config.json")  # a hard link to a file outside DEST
    os.symlink(outside, dest / "model.bin")  # a symlink at a target path
    checkout(store, m, dest, link="copy")
    assert outside.read_text() == "precious"
    assert (dest / "sub" / "config.json").read_bytes() == b'{"a": 1}'
    assert not (dest / "model.bin").is_symlink()


def test_symlink_in_dest_path_refused(store, version, tmp_path):
    _, _, m = version
    dest = tmp_path / "d"
    dest.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, dest / "sub")
    with pytest.raises(CasError) as e:
        checkout(store, m, dest)
    assert str(dest / "sub") in str(e.value) and "symlink" in str(e.value)
    assert os.listdir(elsewhere) == []


def test_clean_removes_only_unlisted(store, version, tmp_path):
    _, _, m = version
    dest = tmp_path / "d"
    make_model(dest, {"extra.txt": b"x", "old/stale.bin": b"y"})
    checkout(store, m, dest)
    assert (dest / "extra.txt").exists()
    r = checkout(store, m, dest, clean=True)
    assert r.removed == ["extra.txt", "old/stale.bin"]
    assert not (dest / "old").exists() and (dest / "model.bin").exists()


def test_missing_blob_is_not_found(store, version, tmp_path):
    _, digest, m = version
    blob = store.blob_path(m.entries[0].digest)
    os.chmod(blob.parent, 0o755)
    os.unlink(blob)
    with pytest.raises(NotFound) as e:
        checkout(store, m, tmp_path / "x")
    assert str(m.entries[0].digest) in str(e.value)
    with pytest.raises(NotFound):
        view(store, digest, m)


def test_views_are_read_only_all_the_way_down(store, tmp_path):
    add(store, make_model(tmp_path / "src", {"a/b/c.bin": b"x", "d.txt": b"y"}), "m", "1")
    version, d, m = store.load("m")
    v = view(store, d, m)
    for p in (v, v / "a", v / "a" / "b"):
        assert stat.S_IMODE(os.stat(p).st_mode) & 0o222 == 0, p


@pytest.mark.skipif(os.geteuid() != 0, reason="creating users needs root (CI runs as root)")
def test_gc_removes_a_read_only_view_as_a_normal_user(users):
    user = users[0]
    with readable_base("cas-view-") as (base, lib):
        home = base / "home"
        src = make_model(base / "src", {"a/b.bin": b"one"})
        open_to_all(base / "src")
        run = lambda *a: run_as(user, lib, home, "--store", home / "store", *a)  # noqa: E731
        for v, data in (("1", b"one"), ("2", b"two")):
            (src / "a" / "b.bin").write_bytes(data)
            assert run("add", src, "--name", "m", "--version", v).returncode == 0
        path = run("path", "m@1").stdout.strip()
        assert run("use", "m@2").returncode == 0
        assert run("rm", "m@1").returncode == 0
        p = run("gc", "--grace", "0")
        assert p.returncode == 0, p.stderr
        assert not os.path.exists(path)


# Writes through a materialised file (as root, who ignores the read-only bits: most containers).
# Before: `echo hi >> co/config.json` rewrote the blob, and `cas sync --frozen` exited 0 leaving
# the edit in place; only a full `cas verify` noticed.

def _append_as_root(path):
    with open(path, "ab") as f:  # through the hard link (or symlink) to the blob's inode
        f.write(b"hi\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="writing a read-only file needs root (CI runs as root)")
def test_a_write_through_a_hard_link_is_noticed_by_sync_and_repaired(tmp_path):
    import json
    import subprocess

    from conftest import CasRunner, publish

    nas = tmp_path / "nas"
    publish(tmp_path, make_model(tmp_path / "src", {"config.json": b'{"a": 1}', "w.bin": 50_000}), "m", "1", nas)
    proj = tmp_path / "proj"
    proj.mkdir()
    subprocess.run(["git", "init", "-q", str(proj)], check=True)
    (proj / "cas.toml").write_text(f'remote = "{nas}"\n[models.m]\nversion = "1"\nlink = "hardlink"\n')
    cas = CasRunner(tmp_path / "store", proj)
    cas("sync")
    cfg = proj / "models/m/config.json"
    assert os.stat(cfg).st_nlink == 2
    _append_as_root(cfg)
    out = json.loads(cas("--json", "sync", "--frozen").stdout)
    assert cfg.read_bytes() == b'{"a": 1}' and out["restored"] == ["models/m/config.json"]
    p = cas("sync", "--frozen")
    assert "changed" not in p.stderr  # repaired: nothing more to say
    assert cas("verify").returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="writing a read-only file needs root (CI runs as root)")
@pytest.mark.parametrize("through", ["checkout", "view"])
def test_a_write_through_a_link_is_noticed_by_checkout_path_and_verify_fast(store, version, tmp_path, through):
    from casstore.errors import BlobsChanged

    src, digest, m = version
    if through == "checkout":
        co = tmp_path / "co"
        checkout(store, m, co, link="hardlink")
        target = co / "sub/config.json"
    else:
        target = view(store, digest, m) / "sub/config.json"
    _append_as_root(target)
    with pytest.raises(BlobsChanged, match="sub/config.json") as e:
        (checkout(store, m, tmp_path / "again") if through == "checkout" else view(store, digest, m))
    assert "quarantine" in str(e.value) and "cas fetch m@1.0" in str(e.value)
    with pytest.raises(NotFound):
        view(store, digest, m)  # the changed blob is out of the store: it is never served again


@pytest.mark.skipif(os.geteuid() != 0, reason="writing a read-only file needs root (CI runs as root)")
def test_verify_fast_notices_a_same_size_write(store, version, tmp_path):
    from casstore.ops.verify import verify

    _, _, m = version
    co = tmp_path / "co"
    checkout(store, m, co, link="hardlink")
    with open(co / "model.bin", "r+b") as f:  # the same size: before, --fast (sizes only) passed it
        f.write(b"XXXX")
    rep = verify(store, fast=True)
    assert [p.kind for p in rep.problems] == ["corrupt"] and rep.quarantined


def test_refreshing_a_changed_blob_keeps_it_marked(store, version, tmp_path):
    from casstore.ops.switch import use
    from casstore.store import stamps

    _, _, m = version
    blob = store.blob_path(m.entries[0].digest)
    st = os.stat(blob)
    assert stamps.is_stamped(st)
    os.utime(blob)  # as a write would leave it: the current time, with nanoseconds
    use(store, "m", "1.0")  # refreshes every blob it relies on
    assert not stamps.is_stamped(os.stat(blob))  # still marked for the next check


def test_a_copy_of_another_blob_with_the_same_size_and_mtime_is_replaced(store, tmp_path):
    """Copies were taken as up to date by size and mtime alone: two same-size blobs stamped in one
    second (store/stamps.py) made a sync to the next version keep the old file."""
    a = add(store, make_model(tmp_path / "a", {"w.bin": b"A" * 1000}), "m", "1")
    b = add(store, make_model(tmp_path / "b", {"w.bin": b"B" * 1000}), "m", "2")
    ma, mb = store.get_manifest(a.manifest), store.get_manifest(b.manifest)
    same = os.stat(store.blob_path(ma.entries[0].digest))
    os.utime(store.blob_path(mb.entries[0].digest), ns=(same.st_atime_ns, same.st_mtime_ns))
    co = tmp_path / "co"
    checkout(store, ma, co, link="copy")
    assert checkout(store, mb, co, link="copy").files == 1
    assert (co / "w.bin").read_bytes() == b"B" * 1000
    assert checkout(store, mb, co, link="copy").unchanged == 1  # and an untouched copy is kept
