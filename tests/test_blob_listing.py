"""The blob listing `cas du` caches by directory (store/listing.py): the figures of a full listing
whatever happened to the store or the cache file, directories written to within the settle time
listed every time, and GC deciding from its own listing."""

import errno
import logging
import os
import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casstore.gc import Policy, collect, plan, read_state, store_size
from casstore.model.digest import Digest
from casstore.ops.add import add
from casstore.ops.remove import remove
from casstore.ops.usage import report
from casstore.store import cachefile, listing, summaries
from casstore.store.objects import Store
from casstore.store.summaries import Table

from conftest import make_model


def cache(store):
    return msgpack.unpackb((store.root / listing.FILE).read_bytes(), strict_map_key=False)


def full(store):
    """What a full listing gives: GC's own read of the store."""
    p = plan(read_state(store), Policy())
    return p.bytes_before, p


def cached(store):
    t = report(store).totals
    return t.blob_bytes, t.plan


def warm(store):
    """Two reports: the first learns the manifest summaries (and writes them after its listing),
    the second matches the cached names to that summaries file."""
    cached(store)
    return cached(store)


def orphan(store, tmp_path, n: int, size: int = 5000):
    src = tmp_path / f"orphan{n}"
    src.write_bytes(os.urandom(size))
    return store.put_file(src).digest


@pytest.fixture
def populated(store, tmp_path):
    for i in range(3):
        add(store, make_model(tmp_path / f"a{i}", {"w.bin": 20_000 + i, "c.json": f"{i}".encode()}), "a", f"1.{i}.0")
    for n in range(3):
        orphan(store, tmp_path, n)
    return store


@pytest.fixture
def instant(monkeypatch):
    """A settle time of 0: a directory counts as settled once the store's clock has moved past
    its ctime (sound on a local filesystem, where both come from one clock), so that tests need
    not wait 3 s."""
    monkeypatch.setattr(listing, "SETTLE_NS", 0)
    time.sleep(0.02)  # past the clock tick in which the fixture's directories were written


@pytest.fixture
def listed(monkeypatch):
    """The blobs/XX directories listed, in order."""
    calls = []
    names = Store.blob_names

    def spy(self, sub):
        calls.append(sub)
        return names(self, sub)

    monkeypatch.setattr(Store, "blob_names", spy)
    return calls


def test_settled_directories_are_not_listed_or_matched_again(populated, instant, listed, monkeypatch):
    first = cached(populated)
    assert len(listed) == len(populated.blob_dirs()) > 1
    assert first == full(populated)
    listed.clear()
    assert cached(populated) == first
    assert listed == []
    matched = []
    by_hex = Table.by_hex
    monkeypatch.setattr(Table, "by_hex", lambda self: matched.append(1) or by_hex(self))
    assert cached(populated) == first
    assert listed == [] and matched == []


def test_directories_written_within_the_settle_time_are_listed_every_time(populated, listed):
    """The fixture's directories were written just now, within the 3 s settle time: recording
    them could miss a change stamped with the same time on a coarse-timestamp filesystem."""
    cached(populated)
    cached(populated)
    assert len(listed) == 2 * len(populated.blob_dirs())
    assert not (populated.root / listing.FILE).exists()


def test_a_blob_added_or_removed_after_caching_is_counted(populated, instant, listed, tmp_path):
    warm(populated)
    new = orphan(populated, tmp_path, 99, 7777)
    gone = next(iter(populated.blob_digests() - {new}))
    os.unlink(populated.blob_path(gone))
    listed.clear()
    figures = cached(populated)
    assert set(listed) <= {new.hex[:2], gone.hex[:2]} and listed
    assert figures == full(populated)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["add", "remove", "report", "version", "adopt"]), st.integers(0, 1000)),
                max_size=12))
def test_any_sequence_of_changes_reports_what_a_full_listing_gives(tmp_path_factory, monkeypatch, steps):
    monkeypatch.setattr(listing, "SETTLE_NS", 0)
    tmp = tmp_path_factory.mktemp("seq")
    store = Store.open(tmp / "store")
    add(store, make_model(tmp / "m", {"w.bin": 3000}), "m", "1.0.0")
    for i, (op, n) in enumerate(steps):
        if op == "add":
            orphan(store, tmp, i, 100 + n)
        elif op == "remove" and (blobs := sorted(store.blob_digests())):
            os.unlink(store.blob_path(blobs[n % len(blobs)]))
        elif op == "version":
            add(store, make_model(tmp / f"v{i}", {"w.bin": 200 + n, "x.bin": 300 + n}), "m", f"2.{i}.0")
        elif op == "adopt" and (kept := sorted(tmp.glob("orphan*"))):  # a version takes in an orphan blob
            add(store, make_model(tmp / f"v{i}", {"w.bin": kept[n % len(kept)].read_bytes()}), "m", f"3.{i}.0")
        else:
            assert cached(store) == full(store)
    assert cached(store) == full(store)


def test_a_version_that_takes_in_an_orphan_is_matched_without_the_whole_table(populated, instant, listed,
                                                                              tmp_path, monkeypatch):
    """A report that learns a manifest appends to the summaries' table; the next one matches only
    the cached names the table did not hold against what was appended (no index of the whole
    table, no listing), and an orphan blob the new version takes in counts as its."""
    orphan(populated, tmp_path, 7)
    warm(populated)
    add(populated, make_model(tmp_path / "n", {"w.bin": (tmp_path / "orphan7").read_bytes()}), "b", "1.0.0")
    cached(populated)  # learns b@1.0.0's manifest, appended to the table
    monkeypatch.setattr(Table, "by_hex", lambda self: pytest.fail("the whole table indexed"))
    listed.clear()
    figures = cached(populated)
    assert listed == [] and figures == full(populated)
    rep = report(populated)
    assert [v.unique for m in rep.models if m.model == "b" for v in m.versions] == [5000]


def test_new_summaries_rematch_the_cached_names(populated, instant, listed, tmp_path):
    """The cached indices refer to one summaries file; when it is rewritten (a new version
    learned) the cached names are matched again, without a listing."""
    warm(populated)
    summaries = populated.root / "cache" / "manifest-summaries"
    before = summaries.read_bytes()
    _, dropped = populated.resolve("a", "1.1.0")  # not the current version, whose manifest GC keeps
    remove(populated, "a", "1.1.0")
    os.unlink(populated.layout.manifest(dropped))  # as GC does: the summaries are renumbered
    add(populated, make_model(tmp_path / "n", {"w.bin": 12_345}), "b", "1.0.0")
    cached(populated)
    assert summaries.read_bytes() != before
    listed.clear()
    figures = cached(populated)
    assert listed == []
    assert figures == full(populated)


def test_blobs_are_listed_by_the_tables_indices(populated):
    """The listing rule is `Store.blob_names`'s: a name the table knows in the wrong directory is
    no blob, an unknown valid name is one; the blobs the table holds come as its indices."""
    plain = populated.blob_digests()
    d, other = sorted(plain)[:2]
    misplaced = Digest(("0" if d.hex[0] != "0" else "1") + d.hex[1:])
    hexes = [x.hex for x in plain if x != other] + [misplaced.hex]
    table = Table(bytes.fromhex("".join(hexes)), [1] * len(hexes))
    (populated.layout.blobs / d.hex[:2] / misplaced.hex).write_bytes(b"x")  # under d's prefix, not its own
    listed = listing.list_blobs(populated, table, populated.now())
    blobs = {table.digests[i] for i in listed.held} | {Digest(listed.others.hex())}
    assert blobs == plain and misplaced not in blobs
    assert listed.others == bytes.fromhex(other.hex) and other not in table.digests
    assert len(listed.held) == len(plain) - 1
    assert listed.table_bytes == len(plain) - 1  # a size of 1 for each blob the table holds


def test_a_renumbered_summaries_file_rematches_the_cached_names(populated, instant, listed):
    """The same summaries, numbered otherwise (as a rewrite may): the cached indices no longer
    apply. With a referenced blob missing, using them would count the wrong one as missing."""
    lost = populated.load("a", "1.1.0")[2].entries[0].digest
    os.unlink(populated.blob_path(lost))
    time.sleep(0.02)
    warm(populated)
    path = populated.root / "cache" / "manifest-summaries"
    obj = msgpack.unpackb(path.read_bytes(), strict_map_key=False)
    sizes = cachefile.ints(obj["sizes"], "Q")
    n = len(sizes)
    blobs = [obj["blobs"][32 * i:32 * i + 32] for i in range(n)]
    obj["blobs"] = b"".join(blobs[-1:] + blobs[:-1])
    obj["sizes"] = cachefile.packed(sizes[-1:] + sizes[:-1], "Q")
    obj["manifests"] = {k: [files, cachefile.packed([(i + 1) % n for i in cachefile.ints(idx, "I")], "I")]
                        for k, (files, idx) in obj["manifests"].items()}
    path.write_bytes(msgpack.packb(obj))
    listed.clear()
    figures = cached(populated)
    assert listed == []
    assert figures == full(populated)


def test_gc_lists_for_itself(populated, instant, tmp_path):
    """A cache that hides a blob (stale, or written by someone else) changes a report, never
    what GC deletes."""
    t = time.time() - 30 * 86400
    victim = orphan(populated, tmp_path, 50)
    os.utime(populated.blob_path(victim), (t, t))
    time.sleep(0.02)
    warm(populated)
    obj = cache(populated)
    sub = victim.hex[:2]
    names = obj["dirs"][sub][4]
    raw = bytes.fromhex(victim.hex)
    at = next(i for i in range(0, len(names), 32) if names[i:i + 32] == raw)
    obj["dirs"][sub][4] = names[:at] + names[at + 32:]
    sizes = cachefile.ints(obj["dirs"][sub][6], "q")
    del sizes[at // 32 - len(obj["dirs"][sub][5]) // 4]  # its size: an orphan's, kept with the rest
    obj["dirs"][sub][6] = cachefile.packed(sizes, "q")
    (populated.root / listing.FILE).write_bytes(msgpack.packb(obj))
    assert victim not in report(populated).totals.plan.delete_blobs, "the report trusts the cache"
    p, _ = collect(populated, Policy())
    assert victim in p.delete_blobs and not populated.has_blob(victim)


def I(*xs):  # noqa: E743 - indices as the listing packs them
    return cachefile.packed(xs, "I")


def Q(*xs):  # sizes, likewise
    return cachefile.packed(xs, "q")


@pytest.mark.parametrize("garbage", [
    b"\x00not msgpack",
    msgpack.packb({"format": 99, "table": None, "dirs": {}}),
    msgpack.packb({"format": 1, "table": None, "dirs": {}}),  # the format before: named the summaries by their hash
    msgpack.packb({"format": 2, "table": [0, b""], "dirs": {}}),  # the format before: no sizes of the rest
    msgpack.packb({"format": 3, "table": [0, b""], "dirs": {"ab": [1, 2, 3, 4, b"\x01" * 32, [], [5]]}}),  # lists
    msgpack.packb({"format": 4, "table": [0, b""], "dirs": {"ab": [1, 2, 3, 4, b"\x01" * 31, I(), Q()]}}),
    msgpack.packb({"format": 4, "table": [0, b""], "dirs": {"ab": [1, 2, 3, 4.5, b"", I(), Q()]}}),
    msgpack.packb({"format": 4, "table": [0, b""], "dirs": {"ab": [1, 2, 3, 4, b"\x01" * 32, I(0, 1), Q()]}}),
    msgpack.packb({"format": 4, "table": [0, b""], "dirs": {"ab": [1, 2, 3, 4, b"\x01" * 32, I(), Q()]}}),  # a size short
    msgpack.packb({"format": 4, "table": [0, b""], "dirs": {"ab": [1, 2, 3, 4, b"\x01" * 32, I(), Q(-2)]}}),
    msgpack.packb({"format": 4, "table": [0, b""], "dirs": {"ab": [1, 2, 3, 4, b"\x01" * 32, I(), [5]]}}),
    msgpack.packb({"format": 4, "table": [0, b""], "dirs": {"ab": [1, 2, 3, 4, b"\x01" * 32, I(), Q(5)[:7]]}}),
    msgpack.packb({"format": 4, "table": 7, "dirs": {}}),
    msgpack.packb({"format": 4, "table": [-1, b""], "dirs": {}}),
])
def test_a_damaged_cache_is_ignored_and_replaced(populated, instant, garbage, caplog):
    good = full(populated)
    (populated.root / "cache").mkdir(exist_ok=True)
    (populated.root / listing.FILE).write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="casstore"):
        assert cached(populated) == good
    assert "ignoring the blob listing" in caplog.text and str(populated.root / listing.FILE) in caplog.text
    assert cache(populated)["format"] == 4
    assert cached(populated) == good


def test_cached_indices_past_the_table_are_matched_again(populated, instant):
    warm(populated)
    obj = cache(populated)
    for e in obj["dirs"].values():
        e[5] = I(*[10**9] * (len(e[5]) // 4))
    (populated.root / listing.FILE).write_bytes(msgpack.packb(obj))
    assert cached(populated) == full(populated)


def test_a_store_this_user_cannot_write_keeps_its_caches_on_this_machine(populated, instant, listed, monkeypatch):
    """A read-only mount, simulated: every write into the store fails (the real mount is in
    test_readonly.py). The second report parses no manifest and lists no directory."""
    real = cachefile.write_file

    def refuse(path, *a, **kw):
        if populated.root in path.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(cachefile, "write_file", refuse)
    monkeypatch.setattr(cachefile, "_writable", lambda d: False)
    first = cached(populated)
    for name in (listing.FILE, summaries.FILE):
        assert not (populated.root / name).exists()
        assert cachefile.local_path(populated, name).is_file()
    parsed = []
    get_manifest = Store.get_manifest
    monkeypatch.setattr(Store, "get_manifest", lambda self, d: parsed.append(d) or get_manifest(self, d))
    listed.clear()
    again = cached(populated)
    assert listed == [] and parsed == []
    assert again == first == full(populated)


def test_the_newer_copy_is_read(populated, instant, monkeypatch):
    """For a store this user cannot write, a machine-local copy older than the store's (a writer
    refreshed it since) is not read; for one it can write, the local copy is never read."""
    cached(populated)
    monkeypatch.setattr(cachefile, "_writable", lambda d: False)
    shared = populated.root / summaries.FILE
    local = cachefile.local_path(populated, summaries.FILE)
    local.parent.mkdir(parents=True)
    local.write_bytes(b"\x00not msgpack")
    t = shared.stat().st_mtime - 60
    os.utime(local, (t, t))
    assert summaries.load(populated)[1], "the store's copy, which is newer"
    os.utime(local, None)
    os.utime(shared, (t, t))
    assert summaries.load(populated)[1] == {}, "the local copy, newer and damaged"
    monkeypatch.setattr(cachefile, "_writable", lambda d: True)
    assert summaries.load(populated)[1], "a writable store's own copy"


def test_the_size_check_before_an_automatic_gc_counts_through_the_cache(populated, instant, tmp_path):
    before = store_size(populated)
    assert before == full(populated)[0]
    orphan(populated, tmp_path, 77, 4321)
    assert store_size(populated) == before + 4321


def blob_stats(monkeypatch) -> list[str]:
    """The names of the blobs stat'ed from here on."""
    seen: list[str] = []
    real = os.stat

    def stat(path, *a, **kw):
        if not isinstance(path, int) and "/blobs/" in os.fspath(path) and len(os.path.basename(path)) == 64:
            seen.append(os.path.basename(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "stat", stat)
    return seen


def freed(figures):
    """Bytes and what a plan frees, without its reasons' "used Ns ago" (a second may pass between two)."""
    return figures[0], figures[1].bytes_freed, set(figures[1].delete_blobs)


def test_unnamed_blobs_are_stated_once_for_their_size_and_not_for_their_age(populated, instant, tmp_path,
                                                                            monkeypatch):
    """A blob no manifest names keeps the size its first report stat'ed (its name is its digest),
    and the fresh marks tell its age, as for any other blob: a settled store's report stats none."""
    from casstore.store import freshmarks

    t = time.time() - 30 * 86400
    for d in populated.blob_digests():
        os.utime(populated.blob_path(d), (t, t))
    freshmarks.set_all(populated.root, t)
    monkeypatch.setattr(freshmarks, "MIN_BLOBS", 1)  # three orphans here: the marks' rule, not its threshold
    warm(populated)
    seen = blob_stats(monkeypatch)
    figures = cached(populated)
    assert seen == []
    assert freed(figures) == freed(full(populated)) and len(figures[1].delete_blobs) == 3
    # a new blob beside an orphan: its directory listed again, only the new name stat'ed
    beside = {d.hex[:2] for d in figures[1].delete_blobs}
    while (data := os.urandom(4321)) and Digest.of_bytes(data).hex[:2] not in beside:
        pass
    (tmp_path / "new").write_bytes(data)
    new = populated.put_file(tmp_path / "new").digest
    os.utime(populated.blob_path(new), (t, t))
    time.sleep(0.02)
    seen.clear()
    figures = cached(populated)
    assert set(seen) == {new.hex} and len(seen) <= 2  # its size, and its age (its group was marked just now)
    assert freed(figures) == freed(full(populated))
    seen.clear()
    assert freed(cached(populated)) == freed(figures)


def test_a_blob_gone_while_its_size_is_read_is_not_remembered(populated, instant, monkeypatch):
    """Nor planned: the marks would show it old, but there is nothing to free."""
    from casstore.store import freshmarks

    t = time.time() - 30 * 86400
    for d in populated.blob_digests():
        os.utime(populated.blob_path(d), (t, t))
    freshmarks.set_all(populated.root, t)
    monkeypatch.setattr(freshmarks, "MIN_BLOBS", 1)
    warm(populated)
    (populated.root / listing.FILE).unlink()
    victim = next(d for d in populated.blob_digests() if d not in set().union(
        *(set(e.digest for e in populated.get_manifest(m).entries) for m in populated.iter_manifests())))
    real = os.stat

    def vanishing(path, *a, **kw):
        if not isinstance(path, int) and os.path.basename(path) == victim.hex:
            raise FileNotFoundError(2, "gone", path)
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "stat", vanishing)
    totals = report(populated).totals
    monkeypatch.setattr(os, "stat", real)
    assert totals.blob_bytes == full(populated)[0] - 5000  # not counted while it looked gone
    assert victim not in totals.plan.delete_blobs
    assert victim.hex[:2] not in cache(populated)["dirs"]  # and its directory not cached with a size of 0
    assert cached(populated) == full(populated)
