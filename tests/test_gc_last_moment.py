"""GC's last-moment checks, made deterministic: a hook runs between moving a blob aside and the
final check (gc/sweep.py), where a concurrent writer or a kill would strike."""

import os
import time

from casstore.gc import Policy, execute, plan, read_state, recover_trash
from casstore.gc import sweep as execute_module
from casstore.model.digest import Digest
from casstore.ops.add import add
from casstore.ops.switch import rollback, use
from casstore.store.leases import Lease
from casstore.store.refs import HISTORY_KEEP

from conftest import assert_store_consistent, make_model

NOW_POLICY = Policy(retention_days=None, keep_last=0, grace=0)


def orphan(store, data: bytes) -> Digest:
    d = store.put_file(_file(store, data)).digest
    t = time.time() - 7200
    os.utime(store.blob_path(d), (t, t))
    return d


def _file(store, data: bytes):
    p = store.root.parent / f"src-{os.urandom(4).hex()}"
    p.write_bytes(data)
    return p


def run_gc(store):
    p = plan(read_state(store), NOW_POLICY)
    return p, execute(store, p, NOW_POLICY)


def test_a_lease_taken_after_the_blob_was_set_aside_puts_it_back(store, monkeypatch):
    d = orphan(store, os.urandom(10_000))
    leases = []

    def writer_arrives(digest):
        assert digest == d and not store.has_blob(d)  # set aside at this moment
        lease = Lease(store, "test", [d])
        lease.__enter__()
        leases.append(lease)

    monkeypatch.setattr(execute_module, "after_set_aside", writer_arrives)
    p, r = run_gc(store)
    assert p.delete_blobs == (d,)
    assert store.has_blob(d) and r.spared == 1 and r.blobs == 0
    leases[0].__exit__(None, None, None)


def test_a_refresh_after_the_blob_was_set_aside_puts_it_back(store, monkeypatch):
    d = orphan(store, os.urandom(10_000))

    def writer_refreshes(digest):
        trash = store.layout.gc_trash
        (aside,) = [trash / n for n in os.listdir(trash) if n.startswith(digest.hex)]
        os.utime(aside)  # a writer that found the blob present touches it (through its old name's inode)
        time.sleep(0.05)  # the re-mark reads the store's clock later than the touch (with grace 0 that lost it)

    monkeypatch.setattr(execute_module, "after_set_aside", writer_refreshes)
    _, r = run_gc(store)
    assert store.has_blob(d) and r.spared == 1


def test_without_interference_the_blob_goes(store, monkeypatch):
    d = orphan(store, os.urandom(10_000))
    seen = []
    monkeypatch.setattr(execute_module, "after_set_aside", seen.append)
    _, r = run_gc(store)
    assert seen == [d] and not store.has_blob(d) and r.blobs == 1
    assert os.listdir(store.layout.gc_trash) == []


def gc_killed_after_set_aside(store) -> None:
    """Run a GC in a child process that dies (os._exit, as kill -9 would leave things) right
    after moving its first blob aside."""
    pid = os.fork()
    if pid == 0:
        try:
            execute_module.after_set_aside = lambda d: os._exit(9)
            run_gc(store)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9


def test_a_gc_killed_after_setting_aside_is_recovered(store, tmp_path):
    src = make_model(tmp_path / "m", {"w.bin": 20_000})
    add(store, src, "m", "1.0.0")
    kept = {e.digest for e in store.load("m")[2].entries}
    junk = orphan(store, os.urandom(10_000))

    gc_killed_after_set_aside(store)
    assert not store.has_blob(junk) and len(os.listdir(store.layout.gc_trash)) == 1

    # A blob someone needs again (here: leased) comes back from the trash.
    with Lease(store, "test", [junk]):
        recover_trash(store, {junk}, set(), old_enough=0.0)
    assert store.has_blob(junk) and os.listdir(store.layout.gc_trash) == []

    # Killed again; the next GC completes the job, and what versions use was never touched.
    gc_killed_after_set_aside(store)
    assert not store.has_blob(junk) and len(os.listdir(store.layout.gc_trash)) == 1
    _, r = run_gc(store)
    assert not store.has_blob(junk) and os.listdir(store.layout.gc_trash) == []
    assert all(store.has_blob(d) for d in kept)
    assert_store_consistent(store)


def test_history_is_compacted_by_gc_and_keeps_working(store, tmp_path):
    for i in range(3):
        add(store, make_model(tmp_path / f"m{i}", {"w.bin": 1000, "c.json": f"{i}".encode()}), "m", f"1.{i}.0")
    n = HISTORY_KEEP + 20
    for i in range(n):
        use(store, "m", f"1.{(i + 1) % 3}.0")  # never the current one: every call switches
    before = store.refs.history("m")
    assert len(before) == n + 1
    _, r = run_gc(store)
    after = store.refs.history("m")
    assert len(after) == HISTORY_KEEP and after == before[-HISTORY_KEEP:]
    assert r.cleaned >= n + 1 - HISTORY_KEEP
    assert store.refs.current("m") == before[-1]
    back = rollback(store, "m")
    assert back.seq == before[-1].seq + 1 and back.version == before[-1].previous


def test_a_checkout_under_a_lease_reads_a_blob_a_gc_holds_aside(store, monkeypatch, tmp_path):
    """The GC set the blob aside (planned before the checkout's lease), and its re-mark will put
    it back; a checkout meanwhile reads it from the trash instead of failing with ENOENT (seen in
    test_stress: `cas checkout` exit 1, "No such file or directory: .../blobs/..")."""
    from casstore.model.manifest import Entry, Manifest
    from casstore.ops.checkout import checkout

    data = os.urandom(10_000)
    d = orphan(store, data)
    m = Manifest("m", "1.0.0", (Entry("w.bin", 10_000, d),))
    done = []

    def reader_arrives(digest):
        assert not store.has_blob(digest)
        for link in ("copy", "hardlink"):
            r = checkout(store, m, tmp_path / link, link=link)  # takes its own lease
            done.append((link, r.files, (tmp_path / link / "w.bin").read_bytes() == data))

    monkeypatch.setattr(execute_module, "after_set_aside", reader_arrives)
    _, r = run_gc(store)
    assert done == [("copy", 1, True), ("hardlink", 1, True)]
    assert os.listdir(store.layout.gc_trash) == []  # the checkout's lease ended before the re-mark: freed


def test_a_manifest_moved_on_from_this_gcs_trash_does_not_stop_its_last_check(store, monkeypatch, tmp_path):
    """Seen in test_stress (GC exit 4, "tag names manifest … not in the store"): this GC set a
    version's manifest aside; meanwhile another GC put it back (a fetch had tagged the version
    again) and a third set it aside under its own name. The re-mark must find it there, not in
    this GC's trash alone, and keep it."""
    from casstore.fs.writers import temp_name

    r = add(store, make_model(tmp_path / "m", {"w.bin": 1000}), "m", "1.0.0")
    add(store, make_model(tmp_path / "n", {"w.bin": 2000}), "m", "2.0.0")
    use(store, "m", "2.0.0")
    md = r.manifest
    trash = store.layout.gc_trash_manifests

    def others_act(digest):
        if digest != md:
            return
        (mine,) = [trash / n for n in os.listdir(trash) if n.startswith(md.hex)]
        os.rename(mine, store.layout.manifest(md))  # another GC puts it back...
        store.refs.set_tag("m", "1.0.0", md)  # ...for a fetch that tagged it again...
        os.rename(store.layout.manifest(md), trash / f"{md.hex}.{temp_name()}")  # ...and a third sets it aside

    monkeypatch.setattr(execute_module, "after_set_aside", others_act)
    hard = Policy(max_size=0, retention_days=0, keep_last=0, grace=0)
    p = plan(read_state(store), hard)
    r2 = execute(store, p, hard)
    assert ("m", "1.0.0", md) in p.delete_versions
    assert store.refs.get_tag("m", "1.0.0") == md
    assert r2.manifests == 0  # kept: the tag names it (the third GC's own check puts it back)


def test_a_checkout_whose_lease_that_gc_never_saw_says_the_blob_is_gone(store, monkeypatch, tmp_path):
    """Seen in test_stress (`cas checkout` exit 1, a bare "[Errno 2] ... blobs/e6/.."): the GC
    untagged the version, set its blob aside and re-marked before this checkout's lease was
    written; the checkout found the blob aside, then the GC unlinked it. The GC's last step is
    simulated here at the copy (an unlink of the set-aside file), the set-aside done as it does."""
    import pytest

    from casstore.errors import NotFound
    from casstore.fs import linking
    from casstore.fs.writers import temp_name
    from casstore.model.manifest import Entry, Manifest
    from casstore.ops.checkout import checkout

    d = orphan(store, os.urandom(10_000))
    m = Manifest("m", "1.0.0", (Entry("w.bin", 10_000, d),))
    store.layout.gc_trash.mkdir(parents=True, exist_ok=True)
    aside = store.layout.gc_trash / f"{d.hex}.{temp_name()}"
    os.rename(store.blob_path(d), aside)
    real = linking.copy

    def gc_unlinks_first(src, name, dir_fd=None, hasher=None):
        if aside.exists():
            aside.unlink()
        return real(src, name, dir_fd, hasher)

    monkeypatch.setattr(linking, "copy", gc_unlinks_first)
    dest = tmp_path / "co"
    with pytest.raises(NotFound, match=f"m@1.0.0: blob {d} for w.bin was removed from the store"):
        checkout(store, m, dest, link="copy")
    assert os.listdir(dest) == []  # no temp file left behind


def test_blobs_unlinked_at_once_each_get_their_own_last_check(store, monkeypatch):
    """The last check and unlink run in parallel runs of blobs (gc/sweep.py ``_unlink_blobs``):
    what was leased, refreshed or taken from the trash during the set-aside is kept whichever run
    it falls in, the rest goes, and the counts add up across runs."""
    import threading

    monkeypatch.setattr(execute_module, "UNLINK_RUN", 4)
    monkeypatch.setattr(execute_module, "UNLINKERS", 3)
    sizes = {orphan(store, os.urandom(100 + i)): 100 + i for i in range(60)}
    ds = sorted(sizes, key=lambda d: d.hex)
    leased, refreshed, taken = set(ds[1::7]), set(ds[3::11]), set(ds[5::13]) - set(ds[1::7])
    leases, threads = [], set()
    trash = store.layout.gc_trash

    def writers_act(digest):
        if digest in leased:
            leases.append(Lease(store, "test", [digest]).__enter__())
        elif digest in refreshed:
            (aside,) = [trash / n for n in os.listdir(trash) if n.startswith(digest.hex)]
            os.utime(aside)
            time.sleep(0.01)
        elif digest in taken:  # another GC's recovery puts it back and a writer takes the name
            (aside,) = [trash / n for n in os.listdir(trash) if n.startswith(digest.hex)]
            os.rename(aside, store.blob_path(digest))

    real_unlink = execute_module._unlink_aside

    def unlink_noting_thread(a):
        threads.add(threading.current_thread().name)
        return real_unlink(a)

    monkeypatch.setattr(execute_module, "after_set_aside", writers_act)
    monkeypatch.setattr(execute_module, "_unlink_aside", unlink_noting_thread)
    p, r = run_gc(store)
    kept = leased | refreshed | taken
    assert set(p.delete_blobs) == set(ds)
    assert {d for d in ds if store.has_blob(d)} == kept
    assert r.blobs == len(ds) - len(kept) and r.spared == len(kept)
    assert r.bytes_freed == sum(sizes[d] for d in ds if d not in kept)
    assert any(t.startswith("gc-unlink") for t in threads)  # the runs went to the pool
    assert os.listdir(trash) == []
    for lease in leases:
        lease.__exit__(None, None, None)
    assert_store_consistent(store)


def test_an_unlink_failing_in_one_run_fails_the_gc_and_loses_nothing(store, monkeypatch, tmp_path):
    """An I/O error in one parallel run stops the GC with that error; the blobs a version uses
    stay, and only that run's rest is left aside: the runs not started when it failed still run
    (one thread, so that most of them are still waiting then)."""
    import errno

    import pytest

    monkeypatch.setattr(execute_module, "UNLINK_RUN", 4)
    monkeypatch.setattr(execute_module, "UNLINKERS", 1)
    add(store, make_model(tmp_path / "m", {"w.bin": 20_000}), "m", "1.0.0")
    kept = {e.digest for e in store.load("m")[2].entries}
    junk = sorted((orphan(store, os.urandom(200 + i)) for i in range(40)), key=lambda d: d.hex)
    real_unlink = os.unlink

    def unlink(path, *a, **kw):
        if str(path).startswith(str(store.layout.gc_trash)) and junk[17].hex in str(path):
            raise OSError(errno.EIO, "Input/output error", path)
        return real_unlink(path, *a, **kw)

    monkeypatch.setattr(execute_module.os, "unlink", unlink)
    with pytest.raises(OSError, match="Input/output error"):
        run_gc(store)
    monkeypatch.setattr(execute_module.os, "unlink", real_unlink)
    assert all(store.has_blob(d) for d in kept)
    run_gc(store)
    assert not any(store.has_blob(d) for d in junk)
    # The other runs finished; what the failed run left aside stays there, named by this live process, until housekeeping
    # finds its writer gone (gc/housekeeping.py); it is junk only, never a blob a version uses.
    left = {n.split(".", 1)[0] for n in os.listdir(store.layout.gc_trash)}
    assert junk[17].hex in left and left <= {d.hex for d in junk} and len(left) <= 4
    assert_store_consistent(store)
