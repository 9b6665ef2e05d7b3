import os

from casstore.ops.add import add
from casstore.ops.verify import verify

from conftest import make_model, write_safetensors


def corrupt(path, data=b"evil"):
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(data)


def test_clean_store_verifies(store, tmp_path):
    add(store, make_model(tmp_path / "m", {"a": 5000, "b/c": 10}), "m", "1")
    r = verify(store)
    assert r.ok and r.blobs == 2 and r.manifests == 1 and r.problems == []


def test_corrupt_blob_quarantined_and_users_named(store, tmp_path):
    shared = os.urandom(3000)
    add(store, make_model(tmp_path / "a", {"vae.pth": shared, "x": 10}), "t2v", "1.0")
    r2 = add(store, make_model(tmp_path / "b", {"vae/vae.pth": shared}), "i2v", "1.0")
    d = store.get_manifest(r2.manifest).entries[0].digest
    corrupt(store.blob_path(d))
    r = verify(store, jobs=2)
    assert not r.ok
    [p] = [p for p in r.problems if p.kind == "corrupt"]
    assert p.what == str(d)
    assert sorted(p.used_by) == ["i2v@1.0:vae/vae.pth", "t2v@1.0:vae.pth"]
    assert not store.has_blob(d) and len(r.quarantined) == 1 and os.path.exists(r.quarantined[0])
    # Now it is reported as missing, not served.
    r = verify(store, "t2v")
    assert [p.kind for p in r.problems] == ["missing"]


def test_fast_checks_sizes(store, tmp_path):
    r = add(store, make_model(tmp_path / "a", {"w": 3000}), "m", "1")
    blob = store.blob_path(store.get_manifest(r.manifest).entries[0].digest)
    corrupt(blob, b"same size")
    assert verify(store, fast=True).ok  # same size: only a full verify sees it
    os.truncate(blob, 10)
    rep = verify(store, fast=True)
    assert [p.kind for p in rep.problems] == ["wrong-size"]


def test_format_findings_do_not_fail(store, tmp_path):
    src = make_model(tmp_path / "a", {"config.json": b"{oops"})
    write_safetensors(src / "w.safetensors")
    add(store, src, "m", "1")
    r = verify(store)
    assert r.ok and [p.kind for p in r.problems] == ["format"]
    assert "config.json" in r.problems[0].detail


def test_dangling_tag_reported(store, tmp_path):
    r = add(store, make_model(tmp_path / "a", {"w": 30}), "m", "1")
    os.unlink(store.layout.manifest(r.manifest))
    rep = verify(store)
    assert not rep.ok and rep.problems[0].kind == "bad-ref" and "m@1" in rep.problems[0].used_by
