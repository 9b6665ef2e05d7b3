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
