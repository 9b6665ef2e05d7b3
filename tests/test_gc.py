"""GC on real stores, and the NAS behaviours we cannot mount here but can simulate (said so)."""

import asyncio
import json
import os
import random
import shutil
import subprocess
import time

import pytest

from casstore.gc import Policy, execute, plan, read_state
from casstore.model.digest import Digest
from casstore.ops.add import add
from casstore.remotes import blob
from casstore.remotes.directory import DirectoryRemote
from casstore.store.leases import Lease, live_leases
from casstore.store.markers import mark
from casstore.store.objects import Store
from casstore.transfer import lock as download_lock
from casstore.transfer.download import Downloader, Settings

from conftest import CasRunner, assert_store_consistent, kill_at, make_model, timed


def age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def orphan(store, data=None):
    """A blob no manifest lists, as an add killed after its blobs leaves behind."""
    src = store.root.parent / f"orphan-{os.urandom(4).hex()}"
    src.write_bytes(data or os.urandom(5000))
    return store.put_file(src).digest


def versions(store, tmp_path, n, model="m", size=20_000):
    out = []
    for i in range(n):
        r = add(store, make_model(tmp_path / f"{model}{i}", {"w.bin": size, "c.json": f"{i}".encode()}), model, f"1.{i}.0")
        out.append(r.manifest)
    return out


def gc(store, **policy):
    p = plan(read_state(store), Policy(**policy))
    return p, execute(store, p, Policy(**policy))


def test_orphans_go_only_after_the_grace_period(store):
    d = orphan(store)
    p, r = gc(store, grace=3600)
    assert store.has_blob(d) and p.young_spared == 1
    age(store.blob_path(d), 7200)
    p, r = gc(store, grace=3600)
    assert not store.has_blob(d) and r.blobs == 1


def test_gc_stats_only_the_blobs_it_might_free(store, tmp_path, monkeypatch):
    """GC's read takes a referenced blob's size from its manifest and stats only the blobs its
    plan might free: a store in use costs a stat per unreferenced blob, not one per blob, and the
    sizes add up to what is on disk all the same."""
    versions(store, tmp_path, 3)
    orphans = {orphan(store) for _ in range(3)}
    for d in orphans:
        age(store.blob_path(d), 7200)
    on_disk = sum(p.stat().st_size for _, p in store.iter_blobs())
    names = {d.hex for d in store.blob_digests()}
    real, seen = os.stat, []

    def counting(path, *a, **kw):
        if os.path.basename(os.fsdecode(path)) in names:
            seen.append(os.path.basename(os.fsdecode(path)))
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "stat", counting)
    p = plan(read_state(store), Policy(retention_days=None, keep_last=10, grace=3600))
    assert sorted(seen) == sorted(d.hex for d in orphans)
    assert set(p.delete_blobs) == orphans and p.bytes_before == on_disk
    for _, path in store.iter_blobs():  # none as new as the clock (grace 0: a blob stamped this second is young)
        age(path, 7200)
    seen.clear()  # a plan that frees versions stats their blobs too, each once
    p = plan(read_state(store), Policy(retention_days=None, keep_last=0, max_size=0, grace=0))
    freed = set(p.delete_blobs)
    assert len(freed) > len(orphans) and sorted(seen) == sorted(d.hex for d in freed)


def test_limit_removes_lru_non_roots_and_keeps_roots(store, tmp_path):
    versions(store, tmp_path, 5)
    mark(store, "m", "1.1.0", "pins")
    for v, days in (("1.0.0", 9), ("1.1.0", 8), ("1.2.0", 7), ("1.3.0", 6), ("1.4.0", 5)):
        age(store.layout.model_dir("m") / "used" / v, days * 86400)
        age(store.layout.manifest(store.refs.get_tag("m", v)), days * 86400)
    p, r = gc(store, max_size=70_000, retention_days=None, keep_last=1, grace=0)
    # current 1.0.0 (the first added) and pinned 1.1.0 stay; the LRU others go until under 70 kB
    # (no retention period here: with one, every version unused for that long would go).
    assert [v for _, v, _ in p.delete_versions] == ["1.2.0", "1.3.0"]
    assert sorted(store.refs.tags("m")) == ["1.0.0", "1.1.0", "1.4.0"]
    assert_store_consistent(store)


def test_cannot_meet_the_limit_says_why(cas, tmp_path):
    cas("add", make_model(tmp_path / "a", {"w": 50_000}), "--name", "m", "--version", "1")
    out = cas.json("gc", "--max-size", "10K", "--grace", "0")
    assert out["plan"]["shortfall"] > 0 and "current" in out["plan"]["kept"]["m@1"]
    p = cas("gc", "--max-size", "10K", "--grace", "0", "--dry-run")
    assert "cannot get under 10.0 KiB" in p.stderr and "keep m@1: current" in p.stderr


def test_live_lease_protects_and_dead_lease_is_cleaned(store):
    d = orphan(store)
    age(store.blob_path(d), 7200)
    with Lease(store, "test", [d]) as lease:
        gc(store, grace=3600)
        assert store.has_blob(d)
        # As if its process had died without removing it: a lease of a pid that is gone.
        rec = json.loads(lease.path.read_text())
        dead = subprocess.Popen(["true"])
        dead.wait()
        rec["pid"] = dead.pid
        lease.path.write_text(json.dumps(rec))
        scan = live_leases(store)
        assert d not in scan.held and scan.dead == [lease.path]
        p, r = gc(store, grace=3600)
        assert not store.has_blob(d) and not lease.path.exists() and r.cleaned >= 1


def test_project_roots_and_keep_markers(store, tmp_path):
    from casstore.store.markers import mark

    versions(store, tmp_path, 3)
    mark(store, "m", "1.1.0", "keep")
    p, _ = gc(store, max_size=0, retention_days=None, keep_last=0, grace=0)
    assert sorted(store.refs.tags("m")) == ["1.0.0", "1.1.0"]
    assert dict(p.kept)["m@1.1.0"] == ("rollback root",)


@pytest.mark.slow
def test_kill_9_during_gc_then_gc_completes(tmp_path):
    cas = CasRunner(tmp_path / "s", tmp_path)
    store = Store.open(tmp_path / "s")
    for i in range(40):
        add(store, make_model(tmp_path / f"v{i}", {f"f{j}": 2000 for j in range(15)}), "m", f"1.{i}.0")
    for _ in range(300):
        orphan(store, os.urandom(300))
    rnd = random.Random(3)
    argv = cas.argv("gc", "--max-size", "100K", "--grace", "0", "--retention-days", "0", "--keep-last", "1")
    # Calibrate on a copy: interpreter start and store open, then a whole collection.
    shutil.copytree(tmp_path / "s", tmp_path / "cal", symlinks=True)
    cal = CasRunner(tmp_path / "cal", tmp_path)
    t_start = timed(cal.argv("log", "m"))
    t_gc = timed(cal.argv(*argv[argv.index("gc"):]))
    killed = 0
    for _ in range(6):
        for _ in range(300):  # work for every round
            orphan(store, os.urandom(300))
        # within the first 70 % of one calibrated run: a loaded machine (CI) runs later ones faster or slower
        killed += kill_at(argv, t_start + rnd.uniform(0.1, 0.7) * (t_gc - t_start))
        assert_store_consistent(store)
    assert killed >= 4, f"only {killed} of 6 collections were still running when killed"
    out = cas.json("gc", "--max-size", "100K", "--grace", "0", "--retention-days", "0", "--keep-last", "1")
    assert out["plan"]["shortfall"] == 0
    assert_store_consistent(store)
    assert cas("verify").returncode == 0


@pytest.mark.slow  # three clocks, as three machines on one NAS (faketime processes)
def test_clock_skew_uses_the_store_clock(tmp_path):
    """The local clock an hour ahead or behind the store's file times (faketime; a NAS's clock
    cannot be set here). Fresh objects are still spared; a live lock is still not broken."""
    faketime = shutil.which("faketime")
    assert faketime, "faketime is needed (CI installs it from Debian packages)"
    cas = CasRunner(tmp_path / "s", tmp_path)
    store = Store.open(tmp_path / "s")
    d = orphan(store)
    for skew in ("+1h", "-1h"):
        p = subprocess.run([faketime, "-f", skew, *cas.argv("--json", "gc", "--grace", "600")], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert store.has_blob(d), f"a fresh blob was collected with the local clock at {skew}"
    # A download lock held by a live process on another host, refreshed just now (on a blob over
    # SMALL_BLOB: a small blob is fetched without a lock).
    data = os.urandom(2 << 20)
    dg = Digest.of_bytes(data)
    nas = DirectoryRemote(tmp_path / "nas")
    asyncio.run(nas.write(blob(dg), data))
    (store.layout.tmp / "locks").mkdir(exist_ok=True)
    lock = store.layout.tmp / "locks" / f"{dg.hex}.lock"
    lock.write_text(json.dumps({"host": "other-host", "pid": 1, "time": time.time()}))
    code = (f"import asyncio; from casstore.store.objects import Store; from casstore.transfer.download import Downloader, Settings; "
            f"from casstore.remotes.directory import DirectoryRemote; from casstore.model.digest import Digest; "
            f"asyncio.run(Downloader(Store.open({str(tmp_path / 's')!r}), [DirectoryRemote({str(tmp_path / 'nas')!r})], "
            f"Settings(stale_after=60)).fetch({{Digest({dg.hex!r}): {len(data)}}}))")
    for skew in ("+1h", "-1h"):
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run([faketime, "-f", skew, "python3", "-c", code], timeout=3, capture_output=True)
        assert json.loads(lock.read_text())["host"] == "other-host" and not store.has_blob(dg)


def test_smb_rename_fails_with_eacces_a_few_times(store, tmp_path, monkeypatch):
    """SMB clients fail a rename or link with EACCES while another client has the file open;
    simulated by failing os.link three times."""
    real_link, fails = os.link, {"n": 0}

    def flaky(src, dst, *a, **kw):
        if fails["n"] < 3:
            fails["n"] += 1
            raise PermissionError(13, "Permission denied (simulated SMB sharing violation)", str(dst))
        return real_link(src, dst, *a, **kw)

    monkeypatch.setattr(os, "link", flaky)
    r = add(store, make_model(tmp_path / "m", {"a": 100}), "m", "1")
    assert fails["n"] == 3 and store.refs.get_tag("m", "1") == r.manifest
    monkeypatch.setattr(os, "link", real_link)
    assert_store_consistent(store)


def test_lying_lock_still_one_correct_blob(store, tmp_path, monkeypatch):
    """A download lock that always succeeds (as flock does on some NFS/Lustre mounts; simulated
    by making the lock a no-op): two concurrent downloads of one blob both succeed, one copy stays."""
    data = os.urandom(3 << 20)
    d = Digest.of_bytes(data)
    nas = DirectoryRemote(tmp_path / "nas")
    asyncio.run(nas.write(blob(d), data))
    nas.local_file = lambda key: None  # type: ignore[method-assign]  # streamed, as from a NAS mount

    async def no_lock(store, digest, stale_after, timeout):
        lk = store.layout.locks / f"{digest.hex}.{os.urandom(6).hex()}.fake"
        lk.write_text("{}")
        return lk

    monkeypatch.setattr(download_lock, "acquire", no_lock)

    async def both():
        a = Downloader(store, [nas], Settings(part_size=256 << 10, jobs=2))
        b = Downloader(Store.open(store.root), [nas], Settings(part_size=256 << 10, jobs=2))
        return await asyncio.gather(a.fetch({d: len(data)}), b.fetch({d: len(data)}))

    sa, sb = asyncio.run(both())
    assert sa.bytes_downloaded + sb.bytes_downloaded >= len(data)
    assert store.blob_path(d).read_bytes() == data
    assert [x for x, _ in store.iter_blobs()] == [d]


def test_a_version_collected_between_the_check_and_the_lease_is_fetched_again(tmp_path, monkeypatch):
    """`cas fetch` of a version the store holds, while a GC collects it at that very moment (the
    stress test met this): the fetch goes to the remote instead of failing."""
    from casstore.ops import fetch as fetch_op

    from conftest import publish

    nas = tmp_path / "nas"
    publish(tmp_path, make_model(tmp_path / "src", {"w.bin": 5000, "c.json": b"{}"}), "m", "1.0.0", nas)
    store = Store.open(tmp_path / "s")
    remote = DirectoryRemote(nas)
    first = asyncio.run(fetch_op.fetch(store, [remote], "m", "1.0.0"))
    gone = next(e.digest for e in store.get_manifest(first.manifest).entries if e.path == "w.bin")
    real = fetch_op._complete_locally

    def collected_right_after(store, model, version, selection=None):
        here = real(store, model, version, selection)
        store.refs.delete_tag(model, version)  # as GC does: the tag first, then the blobs
        os.unlink(store.blob_path(gone))
        return here

    monkeypatch.setattr(fetch_op, "_complete_locally", collected_right_after)
    again = asyncio.run(fetch_op.fetch(store, [remote], "m", "1.0.0"))
    assert again.stats.bytes_downloaded == 5000 and store.has_blob(gone)
    assert store.refs.get_tag("m", "1.0.0") == first.manifest
    assert_store_consistent(store)


def test_what_a_bulk_read_built_is_still_collected_once_dropped():
    """bulk() hands what it built to the collector's oldest generation: cycles made inside it are
    still freed by a full collection, and the collector is on again as it was."""
    import gc
    import weakref

    from casstore.gc.state import bulk

    class Node:
        pass

    assert gc.isenabled()
    with bulk():
        assert not gc.isenabled()
        a, b = Node(), Node()
        a.other, b.other = b, a
        ref = weakref.ref(a)
    assert gc.isenabled()
    del a, b
    gc.collect()
    assert ref() is None
