import os

import pytest

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


def test_corrupt_blob_quarantined_and_users_named(store, tmp_path, helper_or_not):
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


def test_fast_checks_sizes_and_stamps(store, tmp_path):
    r = add(store, make_model(tmp_path / "a", {"w": 3000}), "m", "1")
    blob = store.blob_path(store.get_manifest(r.manifest).entries[0].digest)
    assert verify(store, fast=True).ok
    st = os.stat(blob)
    corrupt(blob, b"same size")  # a write: the mtime is no longer casstore's stamp (store/stamps.py)
    os.chmod(blob, 0o444)
    rep = verify(store, fast=True)
    assert [p.kind for p in rep.problems] == ["corrupt"] and "written after it was stored" in rep.problems[0].detail
    r = add(store, make_model(tmp_path / "b", {"w": 3000}), "m", "2")
    blob = store.blob_path(store.get_manifest(r.manifest).entries[0].digest)
    os.chmod(blob, 0o644)
    os.truncate(blob, 10)
    rep = verify(store, "m", "2", fast=True)
    assert [p.kind for p in rep.problems] == ["wrong-size"]
    # Same size, the stamp forged back: only a full verify sees that (what --fast cannot promise).
    r = add(store, make_model(tmp_path / "c", {"w": 3000}), "m", "3")
    blob = store.blob_path(store.get_manifest(r.manifest).entries[0].digest)
    st = os.stat(blob)
    corrupt(blob, b"same size")
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert verify(store, "m", "3", fast=True).ok and not verify(store, "m", "3").ok


def test_a_check_stamps_a_blob_again_without_making_it_young(store, tmp_path, helper_or_not):
    """verify marks an unstamped blob whose bytes are right (a store from before stamps) at the
    second its mtime already had: a check is no use, and GC must still take an old orphan."""
    from casstore.gc import Policy, execute, plan, read_state
    from casstore.store import stamps

    src = tmp_path / "orphan"
    src.write_bytes(os.urandom(5000))
    d = store.put_file(src).digest
    old = os.stat(store.blob_path(d)).st_mtime - 7200.5  # unstamped: half a second
    os.utime(store.blob_path(d), (old, old))
    assert verify(store).ok
    st = os.stat(store.blob_path(d))
    assert stamps.is_stamped(st) and abs(st.st_mtime - old) < 1
    p = plan(read_state(store), Policy(grace=3600))
    assert p.delete_blobs == (d,)
    execute(store, p, Policy(grace=3600))
    assert not store.has_blob(d)


def test_format_findings_do_not_fail(store, tmp_path, helper_or_not):
    src = make_model(tmp_path / "a", {"config.json": b"{oops"})
    write_safetensors(src / "w.safetensors")
    add(store, src, "m", "1")
    r = verify(store)
    assert r.ok and [p.kind for p in r.problems] == ["format"]
    assert "config.json" in r.problems[0].detail


def test_dangling_tag_reported(store, tmp_path, helper_or_not):
    r = add(store, make_model(tmp_path / "a", {"w": 30}), "m", "1")
    os.unlink(store.layout.manifest(r.manifest))
    rep = verify(store)
    assert not rep.ok and rep.problems[0].kind == "bad-ref" and "m@1" in rep.problems[0].used_by


def test_a_hostile_published_file_neither_crashes_add_nor_hides_a_corrupt_blob(cas, tmp_path):
    """Before: a config.json or safetensors header nested very deep, a dtype that is not a string or
    an absurd shape made `cas add` crash, and a whole-store `cas verify` crash after silently
    quarantining another model's corrupt blob (nothing on stdout with --json)."""
    import json
    import struct

    def safetensors(path, header):
        raw = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(16))

    src = tmp_path / "hostile"
    src.mkdir()
    (src / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    safetensors(src / "a.safetensors", {"t": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}})
    safetensors(src / "b.safetensors", {"t": {"dtype": "F32", "shape": [2**62] * 40, "data_offsets": [0, 4]}})
    raw = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    (src / "c.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    p = cas("add", src, "--name", "hostile", "--version", "1")
    assert "Traceback" not in p.stderr and "nested too deeply" in p.stderr and "dtype" in p.stderr, p.stderr
    assert cas("add", src, "--name", "hostile", "--version", "2", "--strict", ok=False).returncode == 2
    cas("add", make_model(tmp_path / "other", {"w.bin": 5000}), "--name", "other", "--version", "1")
    from casstore.store.objects import Store

    store = Store.open(cas.store)
    d = store.load("other", "1")[2].entries[0].digest
    corrupt(store.blob_path(d))
    p = cas("--json", "verify", ok=False)
    report = json.loads(p.stdout)
    assert p.returncode == 4 and "Traceback" not in p.stderr
    assert any(x["kind"] == "corrupt" and x["what"] == str(d) for x in report["problems"])
    assert any(x["kind"] == "format" and "nested too deeply" in x["detail"] for x in report["problems"])
    assert report["quarantined"] and not store.has_blob(d)


def test_sha256_checked_only_when_asked_and_a_lying_manifest_is_not_a_corrupt_blob(store, tmp_path):
    import dataclasses

    r = add(store, make_model(tmp_path / "m", {"a.bin": 5000, "b.bin": 7000}), "m", "1", sha256=True)
    m = store.get_manifest(r.manifest)
    assert verify(store, sha256=True).ok
    # A manifest (say, from a remote) records a wrong SHA-256 for a blob whose BLAKE3 is right.
    lie = dataclasses.replace(m.entries[0], sha256="0" * 64)
    liar = dataclasses.replace(m, version="2", entries=(lie, *m.entries[1:]))
    store.refs.set_tag("m", "2", store.put_manifest(liar))
    assert verify(store).ok  # without --sha256, BLAKE3 is the identity and it holds
    rep = verify(store, sha256=True)
    [p] = rep.problems
    assert p.kind == "sha256" and p.what == str(lie.digest) and "m@2:a.bin record " + "0" * 64 in p.detail
    assert not rep.ok and rep.quarantined == [] and store.has_blob(lie.digest)
    corrupt(store.blob_path(m.entries[1].digest))
    rep = verify(store, sha256=True)
    assert {p.kind for p in rep.problems} == {"sha256", "corrupt"}
    assert not store.has_blob(m.entries[1].digest)  # the corrupt one is quarantined


@pytest.fixture(params=["in-process", "helper"])
def helper_or_not(request, monkeypatch):
    """verify's small blobs checked by its own thread, or by its helper process (ops/quickcheck.py),
    which it starts only for a store of many of them: here for any number."""
    from casstore.ops import verify as verify_module

    monkeypatch.setattr(verify_module, "HELPER_MIN", 0 if request.param == "helper" else 1 << 60)
    monkeypatch.setattr(verify_module, "HELPER_MANIFESTS", 0 if request.param == "helper" else 1 << 60)
    started = []
    real = verify_module.quickcheck.Helper

    def counting(*a):
        started.append(a)
        return real(*a)

    monkeypatch.setattr(verify_module.quickcheck, "Helper", counting)
    yield request.param
    assert bool(started) == (request.param == "helper" and verify_module.usable_cores() > 1)


def test_every_kind_of_damage_found_whatever_its_size(store, tmp_path, helper_or_not):
    """verify streams the store by fan-out directory, large blobs first, small ones in batches
    through one read each (ops/verify.py), in this process or its helper: each path still finds
    and names its damage, and a FIFO under blobs/ does not hang it."""
    from casstore.model.digest import Digest
    from casstore.ops.verify import LARGE

    files = {"large.bin": LARGE + 5, "mid.bin": 3 << 20, "small.bin": 900, "short.bin": 700, "ok.bin": 100,
             "link.bin": 300}
    r = add(store, make_model(tmp_path / "a", files), "m", "1")
    by = {e.path: e for e in store.get_manifest(r.manifest).entries}
    for name in ("large.bin", "mid.bin", "small.bin"):
        corrupt(store.blob_path(by[name].digest))
    short = store.blob_path(by["short.bin"].digest)
    os.chmod(short, 0o644)
    os.truncate(short, 10)
    link = store.blob_path(by["link.bin"].digest)
    os.unlink(link)
    os.symlink(store.blob_path(by["ok.bin"].digest), link)
    stray = os.urandom(500)
    fifo = store.blob_path(Digest.of_bytes(stray))  # a FIFO named like an unreferenced blob
    os.makedirs(fifo.parent, exist_ok=True)
    os.mkfifo(fifo)
    rep = verify(store, jobs=2)
    kinds = {p.what: p.kind for p in rep.problems}
    assert kinds == {str(by["large.bin"].digest): "corrupt", str(by["mid.bin"].digest): "corrupt",
                     str(by["small.bin"].digest): "corrupt", str(by["short.bin"].digest): "wrong-size",
                     str(by["link.bin"].digest): "corrupt", str(Digest.of_bytes(stray)): "corrupt"}, rep.problems
    assert all(p.used_by == [f"m@1:{n}"] for n, e in by.items() for p in rep.problems if p.what == str(e.digest))
    assert rep.blobs == 7 and len(rep.quarantined) == 6
    again = verify(store)  # what was quarantined is now missing, nothing else
    assert sorted(p.kind for p in again.problems) == ["missing"] * 5, again.problems


def test_a_helper_that_stops_hands_its_batches_back(store, tmp_path, monkeypatch):
    """A helper process that dies (killed, out of memory) costs its batches a check in verify's
    own process, never a blob left unchecked."""
    from casstore.ops import verify as verify_module

    real = verify_module.quickcheck.Helper
    started = []

    class Dead(real):
        def __init__(self, *a):
            super().__init__(*a)
            self.proc.kill()
            self.proc.wait()
            started.append(self)

    monkeypatch.setattr(verify_module, "HELPER_MIN", 0)
    monkeypatch.setattr(verify_module.quickcheck, "Helper", Dead)
    r = add(store, make_model(tmp_path / "a", {f"f{i}.bin": 200 + i for i in range(40)}), "m", "1")
    bad = store.get_manifest(r.manifest).entries[7].digest
    corrupt(store.blob_path(bad))
    rep = verify(store)
    assert [(p.kind, p.what) for p in rep.problems] == [("corrupt", str(bad))] and rep.blobs == 40
    assert bool(started) == (verify_module.usable_cores() > 1)  # the helpers were there to fail


def test_manifests_read_by_helpers_or_not_give_the_same_report(store, tmp_path, helper_or_not):
    """A manifest that no longer matches its digest, one that is not JSON, and one with a view
    to check are read by verify itself, which names what is wrong; the rest by the helpers
    (ops/quickcheck.manifests), with the same entries: a corrupt blob of theirs is found."""
    from casstore.ops.checkout import view

    rs = [add(store, make_model(tmp_path / f"v{i}", {"w.bin": 300 + i, "c.json": b"{}"}), "m", f"{i}")
          for i in range(5)]
    view(store, rs[1].manifest, store.get_manifest(rs[1].manifest))
    store.layout.manifest(rs[2].manifest).chmod(0o644)
    store.layout.manifest(rs[2].manifest).write_bytes(b"{not json")
    data = store.layout.manifest(rs[3].manifest).read_bytes()
    store.layout.manifest(rs[3].manifest).chmod(0o644)
    store.layout.manifest(rs[3].manifest).write_bytes(data.replace(b'"3"', b'"9"'))
    bad = store.get_manifest(rs[4].manifest).entries[1].digest
    corrupt(store.blob_path(bad))
    gone = store.get_manifest(rs[0].manifest).entries[1].digest  # only the entries say it should be there
    os.unlink(store.blob_path(gone))
    rep = verify(store)
    kinds = sorted((p.kind, p.what) for p in rep.problems)
    assert kinds == sorted([("bad-ref", str(rs[2].manifest)), ("bad-ref", str(rs[3].manifest)),
                            ("corrupt", str(bad)), ("missing", str(gone))]), rep.problems
    assert rep.manifests == 3 and rep.blobs == 5  # four w.bin and one c.json, the same in each


def test_a_helper_reads_a_manifests_entries_as_verify_does(store, tmp_path):
    """What a helper answers for a batch of manifests (ops/quickcheck.manifests) is every entry's
    digest and size, the JSON and safetensors paths, and an X for a manifest it would not read."""
    from casstore.ops import quickcheck
    from casstore.ops.verify import LARGE

    rs = [add(store, make_model(tmp_path / f"v{i}", {"w.bin": 300 + i, f"d/c{i}.json": b"{}", "x": 7 + i}), "m", f"{i}")
          for i in range(3)]
    store.layout.manifest(rs[2].manifest).chmod(0o644)
    store.layout.manifest(rs[2].manifest).write_bytes(b"[]")
    helper = quickcheck.Helper(os.path.join(store.layout.blobs, ""), LARGE,
                               os.path.join(store.root / "manifests", ""))
    try:
        lines = helper.submit_manifests([r.manifest.hex for r in rs]).result(timeout=30)[""]
    finally:
        helper.close()
    records = b"".join(bytes.fromhex(rest[0]) for kind, _, *rest in lines if kind == "D")
    got = sorted((records[i:i + 32].hex(), int.from_bytes(records[i + 32:i + 40], "little"))
                 for i in range(0, len(records), 40))
    want = sorted((e.digest.hex, e.size) for r in rs[:2] for e in store.get_manifest(r.manifest).entries)
    assert got == want
    assert sorted((m, bytes.fromhex(p).decode()) for kind, m, _, p in (x for x in lines if x[0] == "F")) == \
        sorted((r.manifest.hex, f"d/c{i}.json") for i, r in enumerate(rs[:2]))
    assert [x[1] for x in lines if x[0] == "X"] == [rs[2].manifest.hex]
