import json
import os
import time

import pytest

from casstore.errors import Conflict, InvalidInput, InvalidName, NotFound, StoreFormatError
from casstore.ops.add import add
from casstore.store.hashcache import HashCache
from casstore.store.objects import Store

from conftest import assert_store_consistent, make_model, write_safetensors


def test_add_directory_and_dedup_across_models(store, tmp_path):
    shared = os.urandom(300_000)
    a = make_model(tmp_path / "a", {"vae.pth": shared, "a.bin": 1000, "cfg/config.json": b"{}"})
    b = make_model(tmp_path / "b", {"vae.pth": shared, "b.bin": 2000})
    ra = add(store, a, "t2v", "1.0")
    assert ra.files == 3 and ra.new_blobs == 3 and ra.current
    rb = add(store, b, "i2v", "1.0")
    assert rb.new_blobs == 1 and rb.new_bytes == 2000  # the shared VAE stored nothing new
    assert sum(1 for _ in store.iter_blobs()) == 4
    m = store.get_manifest(ra.manifest)
    assert [e.path for e in m.entries] == ["a.bin", "cfg/config.json", "vae.pth"]
    assert store.resolve("t2v") == ("1.0", ra.manifest)
    assert_store_consistent(store)


def test_blobs_are_read_only_and_hold_the_bytes(store, tmp_path):
    src = make_model(tmp_path / "m", {"w.bin": 5000})
    r = add(store, src, "m", "1")
    e = store.get_manifest(r.manifest).entries[0]
    p = store.blob_path(e.digest)
    assert p.read_bytes() == (src / "w.bin").read_bytes()
    assert p.stat().st_mode & 0o222 == 0


def test_add_single_file(store, tmp_path):
    f = tmp_path / "model.safetensors"
    write_safetensors(f)
    r = add(store, f, "single", "0.1")
    assert [e.path for e in store.get_manifest(r.manifest).entries] == ["model.safetensors"]
    assert r.warnings == []


def test_readd_same_content_is_idempotent_and_refreshes_mtime(store, tmp_path):
    src = make_model(tmp_path / "m", {"w.bin": 5000})
    r1 = add(store, src, "m", "1")
    blob = store.blob_path(store.get_manifest(r1.manifest).entries[0].digest)
    os.utime(blob, (1_000_000, 1_000_000))
    r2 = add(store, src, "m", "1")
    assert r2.unchanged and r2.manifest == r1.manifest and r2.new_blobs == 0
    assert blob.stat().st_mtime > 1_000_000


def test_tag_never_moves_silently(store, tmp_path):
    src = make_model(tmp_path / "m", {"w.bin": 100})
    r1 = add(store, src, "m", "1")
    (src / "w.bin").write_bytes(b"changed")
    with pytest.raises(Conflict) as e:
        add(store, src, "m", "1")
    assert "m@1" in str(e.value) and str(r1.manifest) in str(e.value)
    assert store.refs.get_tag("m", "1") == r1.manifest
    r3 = add(store, src, "m", "1", force=True)
    assert r3.replaced == r1.manifest and store.refs.get_tag("m", "1") == r3.manifest


def test_first_version_becomes_current_only(store, tmp_path):
    src = make_model(tmp_path / "m", {"w.bin": 100})
    add(store, src, "m", "1")
    (src / "w.bin").write_bytes(b"v2")
    r2 = add(store, src, "m", "2")
    assert not r2.current and store.refs.current("m").version == "1"


def test_metadata_recorded(store, tmp_path):
    src = make_model(tmp_path / "m", {"run.sh": b"#!/bin/sh\n"})
    os.chmod(src / "run.sh", 0o755)
    r = add(store, src, "m", "2.0.0", note="big", breaking=True, meta={"arch": "dit"})
    m = store.get_manifest(r.manifest)
    assert (m.note, m.breaking, dict(m.meta)) == ("big", True, {"arch": "dit"})
    assert m.entries[0].mode == 0o755


def test_hash_cache_skips_rehashing_unchanged_files(store, tmp_path):
    src = make_model(tmp_path / "m", {"a.bin": 10_000, "b.bin": 20_000})
    old = time.time() - 60
    for f in src.iterdir():
        os.utime(f, (old, old))
    cache = HashCache(tmp_path / "hc.sqlite")
    r1 = add(store, src, "m", "1", cache=cache)
    assert r1.hashed_bytes == 30_000
    r2 = add(store, src, "m", "1", cache=HashCache(tmp_path / "hc.sqlite"))
    assert r2.hashed_bytes == 0 and r2.cache_hits == 2 and r2.unchanged
    # A change that keeps the size but moves the mtime is hashed again.
    (src / "a.bin").write_bytes(os.urandom(10_000))
    os.utime(src / "a.bin", (old + 1, old + 1))
    r3 = add(store, src, "m", "2", cache=HashCache(tmp_path / "hc.sqlite"))
    assert r3.hashed_bytes == 10_000 and r3.new_blobs == 1


def test_recent_files_not_cached(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    c = HashCache(tmp_path / "hc.sqlite")
    from casstore.model.digest import Digest

    c.put(os.stat(f), Digest.of_bytes(b"x"))
    assert c.get(os.stat(f)) is None  # racy: written within the last two seconds


def test_move_leaves_read_only_links(store, tmp_path):
    shared = os.urandom(4000)
    store_other = make_model(tmp_path / "o", {"s.bin": shared})
    add(store, store_other, "o", "1")
    src = make_model(tmp_path / "m", {"a.bin": 3000, "s.bin": shared})
    content = (src / "a.bin").read_bytes()
    r = add(store, src, "m", "1", move=True)
    assert r.methods == {"hardlink": 1}  # s.bin was already stored; a.bin was linked, not copied
    m = store.get_manifest(r.manifest)
    for e in m.entries:
        assert os.path.samefile(src / e.path, store.blob_path(e.digest))
        assert (src / e.path).stat().st_mode & 0o222 == 0
    assert (src / "a.bin").read_bytes() == content
    assert_store_consistent(store)


@pytest.mark.parametrize("model,version", [("../x", "1"), ("m", "1/../../x"), ("", "1"), ("m", "")])
def test_bad_names(store, tmp_path, model, version):
    src = make_model(tmp_path / "m", {"a": 1})
    with pytest.raises(InvalidName):
        add(store, src, model, version)
    assert list(store.iter_blobs()) == []


def test_missing_source(store, tmp_path):
    with pytest.raises(NotFound) as e:
        add(store, tmp_path / "nope", "m", "1")
    assert "nope" in str(e.value)


def test_dangling_symlink_in_source(store, tmp_path):
    src = make_model(tmp_path / "m", {"a": 10})
    os.symlink(tmp_path / "gone", src / "b")
    with pytest.raises(NotFound) as e:
        add(store, src, "m", "1")
    assert str(src / "b") in str(e.value)
    assert list(store.iter_blobs()) == [] and store.refs.models() == []


def test_unreadable_source_file(tmp_path):
    """A real EACCES: as root, drop the capabilities that let root read any file (setpriv)."""
    import shutil
    import subprocess
    import sys

    src = make_model(tmp_path / "m", {"a": 10, "b": 10})
    os.chmod(src / "b", 0)
    prefix = []
    if os.geteuid() == 0:
        assert shutil.which("setpriv"), "util-linux's setpriv is needed to test unreadable files as root"
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    p = subprocess.run(
        [*prefix, sys.executable, "-m", "casstore_cli.main", "--store", str(tmp_path / "store"),
         "add", str(src), "--name", "m", "--version", "1"],
        capture_output=True, text=True,
    )
    assert p.returncode == 1, p.stderr
    assert f"cannot read source file {src / 'b'}" in p.stderr
    s = Store.open(tmp_path / "store")
    assert s.refs.models() == [] and list(s.iter_blobs()) == []


def test_strict_format_check(store, tmp_path):
    src = make_model(tmp_path / "m", {"config.json": b"{not json", "ok.json": b"[]"})
    warned = []
    r = add(store, src, "m", "1", warn=warned.append)
    assert len(r.warnings) == 1 and "config.json" in warned[0]
    with pytest.raises(InvalidInput) as e:
        add(store, src, "m", "2", strict=True)
    assert "config.json" in str(e.value)
    assert store.refs.get_tag("m", "2") is None


def test_unknown_store_format_refused(tmp_path):
    s = Store.open(tmp_path / "s")
    fmt = s.layout.format_file
    os.chmod(fmt, 0o644)
    fmt.write_text(json.dumps({"casstore_store": 99}))
    with pytest.raises(StoreFormatError) as e:
        Store.open(tmp_path / "s")
    assert "99" in str(e.value)


def test_non_store_directory_refused(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "important.txt").write_text("x")
    with pytest.raises(StoreFormatError):
        Store.open(tmp_path / "d")
    assert (tmp_path / "d" / "important.txt").read_text() == "x"


def test_readd_restores_a_missing_blob(store, tmp_path):
    src = make_model(tmp_path / "m", {"a.bin": 3000, "b.bin": 10})
    r = add(store, src, "m", "1")
    d = store.get_manifest(r.manifest).entries[0].digest
    os.unlink(store.blob_path(d))  # as if verify had quarantined it
    r2 = add(store, src, "m", "1")
    assert r2.unchanged and r2.manifest == r.manifest and r2.new_blobs == 1
    assert_store_consistent(store)


def test_move_hashes_each_file_once(store, tmp_path):
    """--move links a new file into the store, makes it read-only and hashes it there, once: the
    source is never hashed on its own first."""
    from unittest import mock

    import casstore.store.objects as objects

    src = make_model(tmp_path / "src", {"w.bin": 5 << 20, "c.json": b"{}"})
    hashed = []
    real = objects.hash_file

    def counting(path, **kw):
        hashed.append(path)
        return real(path, **kw)

    def never(*a, **kw):
        raise AssertionError("the source was hashed before it was staged")

    with mock.patch("casstore.ops.add.hash_file", never), mock.patch.object(objects, "hash_file", counting):
        r = add(store, src, "m", "1.0", move=True, cache=HashCache(tmp_path / "hc.sqlite"))
    assert r.new_blobs == 2
    assert len(hashed) == 2 and all(str(store.layout.tmp) in str(p) for p in hashed)
    assert_store_consistent(store)


def test_a_first_copy_of_a_size_no_manifest_lists_is_hashed_once(store, tmp_path, monkeypatch):
    """A copied file is hashed before it is copied only if a blob of its size may be here: a
    shared file is then read and never written. Any other is copied and hashed once (staged)."""
    from unittest import mock

    import casstore.ops.add as add_module

    for name, value in (("PREHASH_WORTH", 0), ("_AFFORD", 1), ("_PER_MANIFEST", 0)):
        monkeypatch.setattr(add_module, name, value)  # small files here: the rule, not its cost bounds
    shared = os.urandom(300_000)
    add(store, make_model(tmp_path / "a", {"vae.pth": shared, "a.bin": 1000}), "t2v", "1.0",
        cache=HashCache(tmp_path / "hc.sqlite"))
    twin = os.urandom(5000)
    b = make_model(tmp_path / "b", {"vae.pth": shared, "b.bin": 2000, "same-size.bin": os.urandom(300_000),
                                    "twin1.bin": twin, "twin2.bin": twin})
    prehashed, staged = [], []
    real_hash, real_stage = add_module.hash_file, Store.stage_file

    def hashing(path, **kw):
        prehashed.append(os.path.basename(path))
        return real_hash(path, **kw)

    def staging(self, path, **kw):
        staged.append(os.path.basename(path))
        return real_stage(self, path, **kw)

    with mock.patch.object(add_module, "hash_file", hashing), mock.patch.object(Store, "stage_file", staging):
        rb = add(store, b, "i2v", "1.0", cache=HashCache(tmp_path / "hc2.sqlite"))
    assert sorted(prehashed) == ["same-size.bin", "vae.pth"]  # a blob of 300,000 bytes is listed
    # the shared VAE never copied; twins both copied (the rule cannot tell them from distinct
    # shards of one size), one copy published
    assert sorted(staged) == ["b.bin", "same-size.bin", "twin1.bin", "twin2.bin"]
    assert rb.new_blobs == 3 and rb.new_bytes == 307_000
    assert [p.name for p in store.layout.tmp.iterdir() if p.is_file()] == []
    m = store.get_manifest(rb.manifest)
    assert all(store.blob_path(e.digest).read_bytes() == (b / e.path).read_bytes() for e in m.entries)
    assert_store_consistent(store)


def test_sizes_are_not_read_where_that_costs_more_than_a_first_hash(store, tmp_path, monkeypatch):
    """Manifests the reports' cache lacks are parsed to learn their sizes, unless there are too
    many for the bytes to hash: then every file is hashed first, as before the rule."""
    import casstore.ops.add as add_module

    monkeypatch.setattr(add_module, "PREHASH_WORTH", 0)
    for i in range(3):
        add(store, make_model(tmp_path / f"v{i}", {"w.bin": 1000 + i}), "m", f"1.{i}", cache=HashCache(tmp_path / "hc"))
    fresh = add_module.scan(make_model(tmp_path / "new", {"x.bin": 3 << 20}))
    monkeypatch.setattr(add_module, "_PER_MANIFEST", (3 << 20) // add_module._AFFORD // 3 + 1)
    assert add_module._sizes_not_listed(store, fresh) == set()  # 3 manifests to parse: over budget
    monkeypatch.setattr(add_module, "_PER_MANIFEST", (3 << 20) // add_module._AFFORD // 3)
    assert add_module._sizes_not_listed(store, fresh) == {3 << 20}
    assert add_module._sizes_not_listed(store, fresh) == {3 << 20}  # learned and cached: nothing left to parse


def test_a_copy_staged_whole_whose_blob_is_here_already_stores_nothing_twice(store, tmp_path, monkeypatch):
    """A blob no manifest lists (an interrupted add's) escapes the size rule: the file is copied,
    and the copy dropped when it is found to be that blob."""
    import casstore.ops.add as add_module

    for name, value in (("PREHASH_WORTH", 0), ("_AFFORD", 1)):
        monkeypatch.setattr(add_module, name, value)
    data = os.urandom(200_000)
    orphan = tmp_path / "orphan"
    orphan.write_bytes(data)
    d = store.put_file(orphan).digest
    staged, real = [], Store.stage_file
    monkeypatch.setattr(Store, "stage_file", lambda self, path, **kw: staged.append(path) or real(self, path, **kw))
    r = add(store, make_model(tmp_path / "a", {"w.bin": data}), "m", "1.0", cache=HashCache(tmp_path / "hc.sqlite"))
    assert [p.name for p in staged] == ["w.bin"]
    assert r.new_blobs == 0 and store.get_manifest(r.manifest).entries[0].digest == d
    assert [p.name for p in store.layout.tmp.iterdir() if p.is_file()] == []
    assert_store_consistent(store)


def test_a_failed_move_leaves_nothing_staged(store, tmp_path):
    """Files staged (linked into tmp) before an error are removed: no blob, no temp file."""
    from unittest import mock

    src = make_model(tmp_path / "src", {f"f{i}.bin": 100_000 for i in range(6)})
    real, calls = Store.stage_file, []

    def failing(self, path, **kw):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(5, "I/O error reading the source")
        return real(self, path, **kw)

    with mock.patch.object(Store, "stage_file", failing), pytest.raises(OSError):
        add(store, src, "m", "1.0", jobs=1, move=True, cache=HashCache(tmp_path / "hc.sqlite"))
    assert list(store.iter_blobs()) == [] and store.refs.get_tag("m", "1.0") is None
    assert [p.name for p in store.layout.tmp.iterdir() if p.is_file()] == []


def test_the_view_is_linked_while_the_blobs_are_written(store, tmp_path, monkeypatch):
    """add builds its view's links in tmp/ beside the blob writes, before the manifest exists,
    and renames them into place after the tag: a sound view, nothing left in tmp/."""
    import casstore.ops.add as add_mod
    from casstore.ops.checkout import view_problem

    src = make_model(tmp_path / "m", {"x.bin": 300_000, "sub/y.json": b"{}", "sub/deep/z.bin": 1000})
    events = []
    real_links, real_manifest = add_mod.build_links, Store.put_manifest

    def links(*a):
        events.append("links")
        return real_links(*a)

    def manifest(self, m):
        events.append("manifest")
        return real_manifest(self, m)

    monkeypatch.setattr(add_mod, "build_links", links)
    monkeypatch.setattr(Store, "put_manifest", manifest)
    r = add(store, src, "m", "1", cache=HashCache(tmp_path / "hc.sqlite"))
    assert events == ["links", "manifest"]
    m = store.get_manifest(r.manifest)
    assert view_problem(store, store.layout.view(r.manifest), m) is None
    assert (store.layout.view(r.manifest) / "sub/deep/z.bin").read_bytes() == (src / "sub/deep/z.bin").read_bytes()
    assert list(store.layout.tmp.iterdir()) == []


def test_an_add_that_fails_after_linking_its_view_leaves_no_links(store, tmp_path, monkeypatch):
    src = make_model(tmp_path / "m", {"x.bin": 300_000, "y.bin": 1000})

    def refusing(self, m):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Store, "put_manifest", refusing)
    with pytest.raises(OSError):
        add(store, src, "m", "1", cache=HashCache(tmp_path / "hc.sqlite"))
    assert list(store.layout.tmp.iterdir()) == []
    assert list((store.root / "views").iterdir()) == []


def test_links_built_for_a_manifest_another_writer_beat_are_removed(store, tmp_path, monkeypatch):
    """Another add tags the same files first (its manifest differs only in its date): ours
    returns the winner, whose view is built as usual, and the links made for ours are not left
    in tmp/ or views/."""
    import dataclasses

    from casstore.ops.checkout import view_problem

    src = make_model(tmp_path / "m", {"x.bin": 300_000, "sub/y.bin": 1000})
    real = Store.put_manifest
    won = []

    def raced(self, m):
        if not won:  # the other writer's manifest and tag land between our blobs and our manifest
            other = dataclasses.replace(m, created=m.created + 1)
            won.append(real(self, other))
            self.refs.set_tag(m.name, m.version, won[0])
        return real(self, m)

    monkeypatch.setattr(Store, "put_manifest", raced)
    r = add(store, src, "m", "1", cache=HashCache(tmp_path / "hc.sqlite"))
    assert r.manifest == won[0] and r.unchanged
    assert list(store.layout.tmp.iterdir()) == []
    assert [p.name for p in (store.root / "views").iterdir()] == [store.layout.view(won[0]).name]
    assert view_problem(store, store.layout.view(won[0]), store.get_manifest(won[0])) is None
    assert_store_consistent(store)
