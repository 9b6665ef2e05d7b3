"""Fresh marks (store/freshmarks.py): every casstore write that makes a blob fresh marks its group
first, so `cas du` on a quiet store learns from 4,096 marks what it would otherwise stat blob by
blob, and reaches the plan GC makes from its own stats; GC never trusts a mark."""

import os
import shutil
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import casstore
from casstore.gc import Policy, collect, plan, read_state
from casstore.model.digest import Digest
from casstore.ops.add import add
from casstore.ops.remove import remove
from casstore.ops.switch import use
from casstore.ops.usage import report
from casstore.store import freshmarks, stamps
from casstore.store.objects import Store
from casstore.testing.synthetic import many_blobs

from conftest import make_model, publish
from servers import nginx

OLD = float(int(time.time() - 90 * 86400))
EXPIRED = Policy(retention_days=0, keep_last=0)  # every version but the current ones may go


def bound(store: Store, d: Digest) -> float:
    return freshmarks.bounds(store.root, create=False)[int(d.hex[:3], 16)]


def age(store: Store) -> None:
    """Every blob, manifest and mark set 90 days back: a store nobody has written since."""
    for _, p in store.iter_blobs():
        os.utime(p, (OLD, OLD))
    for d in store.iter_manifests():
        os.utime(store.layout.manifest(d), (OLD, OLD))
    freshmarks.set_all(store.root, OLD)
    store.fresh = freshmarks.Marker(store.root)  # as a later process's: marks only move forward otherwise


def blobs_of(store: Store, model: str, version: str) -> list[Digest]:
    return [e.digest for e in store.load(model, version)[2].entries]


@pytest.fixture
def aged(store, tmp_path):
    add(store, make_model(tmp_path / "v1", {"a.bin": 3000, "big.bin": 3 << 20}), "m", "1")
    add(store, make_model(tmp_path / "v2", {"b.bin": 4000}), "m", "2")
    age(store)
    return store


def test_every_write_that_makes_a_blob_fresh_marks_it_first(aged, tmp_path):
    """add (copy and --move, new blobs and ones the store has), use, a fetch of small and large
    blobs and of blobs already here, and a re-stamp: after each, no blob it touched is fresher
    than its mark allows. Unmarked, a blob refreshed now is 90 days past its mark."""
    store = aged
    touched: list[Digest] = []

    def check():
        assert touched
        for d in touched:
            assert os.stat(store.blob_path(d)).st_mtime > OLD + 86400, f"{d} was not made fresh"
            assert os.stat(store.blob_path(d)).st_mtime <= bound(store, d), f"{d} made fresh without its mark"
        touched.clear()
        age(store)

    add(store, make_model(tmp_path / "n", {"c.bin": 5000, "d.bin": 2 << 20}), "m", "3")
    touched += blobs_of(store, "m", "3")
    check()
    add(store, make_model(tmp_path / "mv", {"e.bin": 6000}), "m", "4", move=True)
    touched += blobs_of(store, "m", "4")
    check()
    add(store, make_model(tmp_path / "again", {"a.bin": (tmp_path / "v1" / "a.bin").read_bytes()}), "m", "5")
    touched += blobs_of(store, "m", "5")
    check()
    use(store, "m", "2")  # m@1 is current
    touched += blobs_of(store, "m", "2")
    check()
    remote = tmp_path / "remote"
    publish(tmp_path, make_model(tmp_path / "f", {"s.bin": 7000, "l.bin": 3 << 20}), "f", "1", remote)
    with nginx(remote, tmp_path / "ngx") as srv:  # over HTTP: blobs streamed to disk and kept in memory
        casstore.fetch("f@1", remote=srv.url, store=store)
    touched += blobs_of(store, "f", "1")
    check()
    publish(tmp_path, tmp_path / "v1", "m", "1", remote)
    casstore.fetch("m@1", remote=str(remote), store=store)  # every blob here already: refreshed
    touched += blobs_of(store, "m", "1")
    check()
    d = blobs_of(store, "m", "2")[0]
    os.utime(store.blob_path(d), ns=(int(OLD * 1e9) + 7, int(OLD * 1e9) + 7))  # right bytes, unstamped
    assert stamps.changed(store, store.load("m", "2")[2].entries) == []
    touched.append(d)
    check()


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    """A synthetic store of 6,000 blobs whose plan (EXPIRED) may free more than MIN_BLOBS of them."""
    root = tmp_path_factory.mktemp("quiet") / "store"
    many_blobs(root, 6000)
    return root


def counting_stats(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = os.stat

    def stat(path, *a, **kw):
        if not isinstance(path, int) and "/blobs/" in os.fspath(path) and len(os.path.basename(path)) == 64:
            seen.append(os.fspath(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "stat", stat)
    return seen


def test_du_on_a_quiet_store_stats_no_blob_its_marks_show_old(quiet, monkeypatch):
    store = Store.open(quiet)
    full = plan(read_state(store), EXPIRED)
    assert len(full.delete_blobs) > freshmarks.MIN_BLOBS
    report(store, policy=EXPIRED)  # the caches written
    seen = counting_stats(monkeypatch)
    rep = report(store, policy=EXPIRED)
    assert rep.totals.plan == full
    unnamed = 600  # many_blobs leaves 10 % of the blobs unnamed by any manifest: stat'ed for their size
    assert len(seen) <= unnamed, f"{len(seen)} blobs stat'ed"


def test_without_marks_du_stats_and_finds_the_same_plan(quiet, monkeypatch, tmp_path):
    """Marks made by a report are as new as the report: until the grace period has passed, the
    blobs of their groups are stat'ed."""
    store = Store.open(quiet)
    full = plan(read_state(store), EXPIRED)
    report(store, policy=EXPIRED)
    shutil.rmtree(quiet / freshmarks.DIR)
    seen = counting_stats(monkeypatch)
    assert report(store, policy=EXPIRED).totals.plan == full
    assert len(seen) >= len(full.delete_blobs)
    assert len(os.listdir(quiet / freshmarks.DIR)) == freshmarks.GROUPS
    freshmarks.set_all(quiet, OLD)


def test_du_and_gc_agree_on_blobs_a_writer_just_made_fresh(quiet, tmp_path):
    """An add in flight (a new blob no manifest names yet, and one of an expired version it
    found in the store) is spared by du's plan as by GC's. A blob refreshed by hand, without a
    mark, both plans count as old, and GC's sweep still spares it: it stats each blob it deletes."""
    store = Store.open(quiet)
    src = tmp_path / "new.bin"
    src.write_bytes(os.urandom(700))
    new = store.put_file(src).digest
    full = plan(read_state(store), EXPIRED)
    named = {Digest(h) for v in read_state(store).versions for h in v.blobs}  # sized by its manifest: no stat of its own
    expired = next(d for d in full.delete_blobs if d != new and d in named)
    found = store.blob_path(expired).read_bytes()
    (tmp_path / "found.bin").write_bytes(found)
    store.put_file(tmp_path / "found.bin", expected=expired)
    full = plan(read_state(store), EXPIRED)
    assert new not in full.delete_blobs and expired not in full.delete_blobs
    assert report(store, policy=EXPIRED).totals.plan == full
    marked = {new.hex[:3], expired.hex[:3]}  # the groups the two writes marked fresh
    by_hand = next(d for d in full.delete_blobs if d in named and d.hex[:3] not in marked)
    os.utime(store.blob_path(by_hand))
    assert by_hand in plan(read_state(store), EXPIRED).delete_blobs
    assert report(store, policy=EXPIRED).totals.plan == plan(read_state(store), EXPIRED)
    copy = tmp_path / "copy"
    shutil.copytree(quiet, copy, symlinks=True)  # copy2 keeps the mtimes; the module's store stays whole
    done, res = collect(Store.open(copy), EXPIRED)
    assert by_hand in done.delete_blobs and res is not None and res.spared >= 1
    assert Store.open(copy).blob_path(by_hand).read_bytes() == store.blob_path(by_hand).read_bytes()
    assert not Store.open(copy).blob_path(next(d for d in full.delete_blobs if d != by_hand)).exists()
    for d in (new, expired, by_hand):
        os.utime(store.blob_path(d), (OLD, OLD))
    freshmarks.set_all(quiet, OLD)


def test_a_planted_symlink_for_the_marks_is_not_followed(aged, tmp_path):
    """A group member who replaces ``cache/fresh`` with a symlink has no mark made or read
    through it: writers mark nothing, reports stat every blob."""
    store = aged
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    marks = store.root / freshmarks.DIR
    shutil.rmtree(marks)
    marks.symlink_to(elsewhere)
    add(store, make_model(tmp_path / "n", {"c.bin": 5000}), "m", "3")
    assert os.listdir(elsewhere) == []
    assert freshmarks.bounds(store.root) == [float("inf")] * freshmarks.GROUPS
    assert os.listdir(elsewhere) == []


def test_a_blob_a_manifest_names_but_the_store_lacks_is_neither_counted_nor_planned(quiet, tmp_path):
    """GC takes a named blob's size from the manifests only for blobs it listed: one that is
    missing (deleted by hand, or not fetched yet) adds nothing to the store's size or the bytes
    freed, and is not in the plan's list, on the marks' bulk path (over MIN_BLOBS candidates)."""
    # Hard links: GC's read and plan write nothing, and the blob removed below is only this copy's name.
    shutil.copytree(quiet, tmp_path / "store", symlinks=True, copy_function=os.link)
    store = Store.open(tmp_path / "store")
    state = read_state(store)
    gone = next(Digest(h) for v in state.versions if not v.marks for h in v.blobs)  # GC names blobs by hex
    size = store.blob_path(gone).stat().st_size
    before = plan(state, EXPIRED)
    assert gone in before.delete_blobs and len(before.delete_blobs) > freshmarks.MIN_BLOBS
    os.unlink(store.blob_path(gone))
    after = plan(read_state(store), EXPIRED)
    on_disk = sum(e.stat().st_size for d in os.scandir(store.layout.blobs) for e in os.scandir(d.path))
    assert after.bytes_before == on_disk == before.bytes_before - size
    assert after.bytes_freed == before.bytes_freed - size
    assert list(after.delete_blobs) == [d for d in before.delete_blobs if d != gone]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(removed=st.sets(st.integers(0, 5999), max_size=40), dropped=st.sets(st.integers(0, 59), max_size=6),
       orphans=st.integers(0, 3), retention=st.sampled_from([0, 1000, None]),
       max_size=st.none() | st.integers(0, 3_000_000), keep_last=st.integers(0, 2), grace=st.sampled_from([0, 3600]))
def test_du_counts_and_plans_what_gc_plans_whatever_the_store_holds(quiet, tmp_path_factory, removed, dropped, orphans,
                                                                    retention, max_size, keep_last, grace):
    """Over a store large enough for the marks' bulk path, with blobs deleted by hand, versions
    removed and new orphans written, under any policy: `cas du`'s plan (over masks of numbered
    blobs) is the one GC makes from its own listing, and its unreferenced bytes those no
    version names."""
    copy = tmp_path_factory.mktemp("agree") / "store"
    shutil.copytree(quiet, copy, symlinks=True, copy_function=os.link, ignore=shutil.ignore_patterns("fresh"))
    shutil.copytree(quiet / freshmarks.DIR, copy / freshmarks.DIR)  # copies: a write below moves a mark
    store = Store.open(copy)
    report(store)  # the caches, as the store stood
    blobs = sorted(store.blob_digests(), key=lambda d: d.hex)
    for i in removed:
        os.unlink(store.blob_path(blobs[i % len(blobs)]))
    versions = sorted((m, v) for m in store.refs.models() for v in store.refs.tags(m))
    for i in dropped:
        m, v = versions[i % len(versions)]
        if store.refs.get_tag(m, v) is not None:
            remove(store, m, v, force=True)
    for i in range(orphans):
        (tmp_path_factory.getbasetemp() / "orphan").write_bytes(os.urandom(300 + i))
        store.put_file(tmp_path_factory.getbasetemp() / "orphan")
    policy = Policy(retention_days=retention, max_size=max_size, keep_last=keep_last, grace=grace)
    state = read_state(store)
    full = plan(state, policy)
    t = report(store, policy=policy).totals
    assert t.plan == full
    named = set().union(*(v.blobs for v in state.versions))
    assert t.unreferenced_bytes == sum(size for h, (size, _) in state.blobs.items() if h not in named)
    assert t.blob_bytes == full.bytes_before
