"""The manifest summaries `cas list` and `cas du` read instead of every manifest
(store/summaries.py): the same figures as from the manifests themselves, whatever state the
cache file is in, and the same GC plan as GC computes from a full read."""

import logging
import os
import time

import msgpack
import pytest

from casstore.gc import Policy, plan, read_state
from casstore.ops.add import add
from casstore.ops.remove import remove
from casstore.ops.usage import report
from casstore.store import cachefile, summaries

from conftest import make_model


def cache_file(store):
    return store.root / summaries.FILE


def figures(store, policy=None):
    rep = report(store, policy=policy)
    return [v.to_json() | {"last_used": None} for m in rep.models for v in m.versions], rep.totals


@pytest.fixture
def populated(store, tmp_path):
    shared = os.urandom(30_000)
    for i in range(4):
        add(store, make_model(tmp_path / f"a{i}", {"vae.bin": shared, "w.bin": 10_000 + i, "c.json": f"{i}".encode()}),
            "a", f"1.{i}.0")
    add(store, make_model(tmp_path / "b", {"vae.bin": shared, "x.bin": 7000}), "b", "2.0.0")
    return store


def test_the_cache_gives_the_figures_the_manifests_give(populated):
    assert not cache_file(populated).exists()
    first = figures(populated)
    assert cache_file(populated).exists()
    mtime = cache_file(populated).stat().st_mtime_ns
    assert figures(populated) == first
    assert cache_file(populated).stat().st_mtime_ns == mtime, "nothing new learned: not rewritten"
    v = {(x["model"], x["version"]): x for x in first[0]}
    assert v["a", "1.0.0"]["files"] == 3 and v["a", "1.0.0"]["unique"] == 10_000 + 1  # w.bin and c.json
    assert v["b", "2.0.0"]["shared"] == 30_000


def test_a_new_version_is_learned_and_a_collected_one_dropped(populated, tmp_path):
    figures(populated)
    _, b_manifest = populated.resolve("b", "2.0.0")
    remove(populated, "b", "2.0.0", force=True)
    os.unlink(populated.layout.manifest(b_manifest))  # by hand: GC keeps a current version's manifest
    add(populated, make_model(tmp_path / "n", {"w.bin": 4000}), "a", "1.10.0")
    rep = report(populated)
    assert [v.version for m in rep.models for v in m.versions] == ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.10.0"]
    obj = msgpack.unpackb(cache_file(populated).read_bytes(), strict_map_key=False)
    assert bytes.fromhex(b_manifest.hex) not in obj["manifests"] and len(obj["manifests"]) == 5


def I(*xs):  # noqa: E743 - indices as the summaries pack them
    return cachefile.packed(xs, "I")


def Q(*xs):  # sizes, likewise
    return cachefile.packed(xs, "Q")


@pytest.mark.parametrize("garbage", [
    b"\x00not msgpack",
    msgpack.packb({"format": 99}),
    msgpack.packb({"format": 1, "blobs": b"\x01" * 32, "sizes": [5], "manifests": {b"\x02" * 32: [1, [0]]}}),  # lists
    msgpack.packb({"format": 2, "blobs": b"\x01" * 32, "sizes": Q(5), "manifests": {b"\x02" * 32: [1, I(7)]}}),
    msgpack.packb({"format": 2, "blobs": b"\x01" * 32, "sizes": [5], "manifests": {}}),
    msgpack.packb({"format": 2, "blobs": b"\x01" * 32, "sizes": Q(5)[:5], "manifests": {}}),
    msgpack.packb({"format": 2, "blobs": b"\x01" * 32, "sizes": Q(5), "manifests": {b"\x02" * 32: [1, [0]]}}),
    msgpack.packb({"format": 2, "blobs": b"\x01" * 32, "sizes": Q(5), "manifests": {b"\x02" * 32: [0, I(0)]}}),
    msgpack.packb({"format": 2, "blobs": b"\x01" * 31, "sizes": Q(5), "manifests": {}}),
])
def test_a_damaged_cache_is_ignored_and_replaced(populated, garbage, caplog):
    good = figures(populated)
    cache_file(populated).chmod(0o644)
    cache_file(populated).write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="casstore"):
        assert figures(populated) == good
    assert "ignoring the manifest summaries" in caplog.text and str(cache_file(populated)) in caplog.text
    assert figures(populated) == good


def test_a_lying_cache_entry_for_a_manifest_no_tag_uses_changes_nothing(populated):
    good = figures(populated)
    obj = msgpack.unpackb(cache_file(populated).read_bytes(), strict_map_key=False)
    obj["manifests"][os.urandom(32)] = [1, I(0)]
    cache_file(populated).write_bytes(msgpack.packb(obj))
    assert figures(populated) == good


def test_the_du_plan_is_the_plan_gc_makes(populated, tmp_path):
    """du's plan (sizes from summaries, mtimes stat'ed on demand) against GC's full read."""
    orphan = tmp_path / "orphan"
    orphan.write_bytes(os.urandom(9000))
    old = populated.put_file(orphan).digest
    young_src = tmp_path / "young"
    young_src.write_bytes(os.urandom(8000))
    young = populated.put_file(young_src).digest
    t = time.time() - 10 * 86400
    for d in [old] + [e.digest for e in populated.load("a", "1.0.0")[2].entries]:
        os.utime(populated.blob_path(d), (t, t))
    os.utime(populated.blob_path(young), None)
    for policy in (Policy(), Policy(max_size=1, retention_days=None, keep_last=1),
                   Policy(retention_days=0, keep_last=0, grace=0)):
        full = plan(read_state(populated), policy)
        _, totals = figures(populated, policy)
        assert totals.plan == full
        assert totals.blob_bytes == full.bytes_before
    assert old in plan(read_state(populated), Policy()).delete_blobs
    assert young not in plan(read_state(populated), Policy()).delete_blobs


@pytest.mark.parametrize("many", [False, True], ids=["few leased", "many leased"])
def test_leased_blobs_are_spared_alike_by_du_and_gc(populated, tmp_path, many):
    """A live lease keeps an old orphan and an expired version's blob in du's plan as in GC's; a
    report finds leased digests in its table by a search each, or one pass for many of them."""
    from casstore.store.leases import Lease
    orphans = []
    for i in range(12 if many else 1):
        src = tmp_path / f"orphan{i}"
        src.write_bytes(os.urandom(5000 + i))
        orphans.append(populated.put_file(src).digest)
    expired = [e.digest for e in populated.load("a", "1.1.0")[2].entries]  # 1.0.0 is current
    t = time.time() - 100 * 86400
    for p in [populated.blob_path(d) for d in orphans] + [populated.blob_path(d) for d, _ in populated.iter_blobs()]:
        os.utime(p, (t, t))
    for d in populated.iter_manifests():
        os.utime(populated.layout.manifest(d), (t, t))
    report(populated)  # the summaries and listing cached: the report's table is the file's
    policy = Policy(retention_days=0, keep_last=0, grace=0)
    free = plan(read_state(populated), policy).delete_blobs
    assert set(orphans) <= set(free) and set(expired) & set(free)
    with Lease(populated, "test", [*orphans, *expired]):
        full = plan(read_state(populated), policy)
        _, totals = figures(populated, policy)
    assert totals.plan == full
    assert not (set(orphans) | set(expired)) & set(full.delete_blobs)


def test_foreign_names_under_blobs_are_skipped_alike_by_du_and_gc(populated):
    """One listing rule (`Store.blob_digests`) for `du` and GC; the mixed-case name forces the
    per-name check after the directory's one-match check fails."""
    d = next(iter(populated.blob_digests()))
    sub = populated.layout.blobs / d.hex[:2]
    (sub / (d.hex[:2] + "X" * 62)).write_bytes(b"foreign")
    (sub / "notes.txt").write_bytes(b"foreign")
    (populated.layout.blobs / "README").write_bytes(b"foreign")
    listed = populated.blob_digests()
    assert d in listed and [x for x, _ in populated.iter_blobs()] == sorted(listed)
    assert all(len(x.hex) == 64 for x in listed)
    _, totals = figures(populated)
    assert totals.plan == plan(read_state(populated), Policy())


def test_the_store_size_auto_gc_checks_is_the_bytes_on_disk(populated, tmp_path):
    """With or without summaries, with a blob no version lists and one a manifest lists but the
    store lacks: the sum of every blob file's size."""
    from casstore.gc import store_size

    def on_disk():
        return sum(p.stat().st_size for _, p in populated.iter_blobs())

    extra = tmp_path / "stray.bin"
    extra.write_bytes(os.urandom(5000))
    stray = populated.put_file(extra).digest
    assert store_size(populated) == on_disk() > 5000
    figures(populated)  # writes the summaries
    gone = next(e.digest for e in populated.get_manifest(populated.resolve("a", "1.2.0")[1]).entries
                if e.path == "w.bin")
    os.unlink(populated.blob_path(gone))
    assert populated.has_blob(stray)
    assert store_size(populated) == on_disk()


def test_a_table_finds_digests_alike_by_search_scan_and_index():
    """``Table.indices_of``: a search each for a few, one pass over the packed digests for more,
    the digests' own list once they are made: the same answer, absent digests left out."""
    from casstore.model.digest import Digest
    held = [Digest.of_bytes(bytes([i])) for i in range(40)]
    absent = [Digest.of_bytes(b"x%d" % i) for i in range(5)]
    packed = bytes.fromhex("".join(d.hex for d in held))
    for want in (held[3:6] + absent[:1], held[::3] + absent):
        expect = {d: held.index(d) for d in want if d in held}
        assert summaries.Table(packed, [1] * len(held)).indices_of(want) == expect  # search or scan
        table = summaries.Table(packed, [1] * len(held))
        table.digests  # noqa: B018  (made: the list's path)
        assert table.indices_of(want) == expect


def test_a_few_manifests_are_added_as_one_at_a_time_would_be():
    """``Table.add_few`` (a report after an add: no index of the whole table) numbers blobs as
    ``add`` does, shared ones within the few and with the table included, and ``hex_indices``
    finds what ``by_hex`` finds, in either of its ways."""
    from casstore.model.digest import Digest
    from casstore.model.manifest import Entry, Manifest

    held = [Digest.of_bytes(bytes([i])) for i in range(200)]
    new = [Digest.of_bytes(b"n%d" % i) for i in range(4)]
    packed = bytes.fromhex("".join(d.hex for d in held))

    def manifest(v, ds):
        return Manifest("m", v, tuple(Entry(f"f{i}", 1, d) for i, d in enumerate(ds)))

    ms = [manifest("1", [held[5], new[0], new[1]]), manifest("2", [new[1], held[7], new[2], new[0]]),
          manifest("3", [new[3]])]
    one, few = summaries.Table(packed, [1] * len(held)), summaries.Table(packed, [1] * len(held))
    assert [s.idx for s in map(one.add, ms)] == [s.idx for s in few.add_few(ms)]
    assert few.packed == one.packed and len(few) == len(held) + 4
    assert few.add_few([manifest("4", [new[2], held[0]])])[0].idx == one.add(manifest("4", [new[2], held[0]])).idx
    hexes = [held[9].hex, new[3].hex, Digest.of_bytes(b"absent").hex]
    full = {h: i for h, i in few.by_hex().items() if h in hexes}
    assert full == {held[9].hex: 9, new[3].hex: len(held) + 3}
    for wanted in (hexes, hexes * 100):  # a pass over the table; the whole table's index, for many
        got = summaries.Table(few.packed, [1] * len(few)).hex_indices(bytes.fromhex("".join(wanted)))
        assert {h: got[h] for h in hexes if h in got} == full


# The usage figures of the last report (ops/usage.py, cache/usage): `cas list` on an unchanged
# store reads them instead of the summaries.

def listed(store, model=None):
    rep = report(store, model, totals=False)
    return [v.to_json() | {"last_used": None} for m in rep.models for v in m.versions], \
        [(m.model, m.size, m.unique) for m in rep.models], rep.broken


def memo_file(store):
    from casstore.ops import usage
    return store.root / usage.MEMO


def test_list_reads_no_summary_while_the_versions_are_those_it_counted(populated, tmp_path):
    first = listed(populated)
    assert memo_file(populated).exists()
    assert first[0] == figures(populated)[0], "list and du give the same figures"
    os.unlink(cache_file(populated))
    assert listed(populated) == first
    assert not cache_file(populated).exists(), "figures from the memo: no summary read, none written"
    add(populated, make_model(tmp_path / "n", {"vae.bin": 30_000, "w.bin": 10_000}), "b", "2.1.0")
    again = listed(populated)
    os.unlink(memo_file(populated))
    assert listed(populated) == again, "after an add: counted anew, as without a memo"
    b = {x["version"]: x for x in again[0] if x["model"] == "b"}
    assert b.keys() == {"2.0.0", "2.1.0"} and b["2.1.0"]["files"] == 2
    assert listed(populated, "b")[0] == [x for x in again[0] if x["model"] == "b"]


def test_a_version_removed_is_not_listed_from_the_memo(populated):
    first = listed(populated)
    remove(populated, "a", "1.3.0", force=True)
    after = listed(populated)
    assert [x["version"] for x in after[0]] == [x["version"] for x in first[0] if x["version"] != "1.3.0"]
    os.unlink(memo_file(populated))
    assert listed(populated) == after


def _memo_with(store, edit):
    obj = msgpack.unpackb(memo_file(store).read_bytes(), strict_map_key=False)
    edit(obj)
    return msgpack.packb(obj)


@pytest.mark.parametrize("damage", [
    lambda s: b"\x00not msgpack",
    lambda s: msgpack.packb({"format": 7}),
    lambda s: _memo_with(s, lambda o: o["versions"][0].__setitem__(3, -1)),
    lambda s: _memo_with(s, lambda o: o["versions"][0].__setitem__(2, 1.5)),
    lambda s: _memo_with(s, lambda o: o["versions"].__setitem__(0, ["a", "1.0.0"])),
    lambda s: _memo_with(s, lambda o: o["versions"][0].__setitem__(0, 7)),
    lambda s: _memo_with(s, lambda o: o.__setitem__("models", o["models"][1:])),
    lambda s: _memo_with(s, lambda o: o.__setitem__("versions", {})),
], ids=["not msgpack", "other format", "negative", "float", "short entry", "a number for a name", "a model missing", "not a list"])
def test_a_damaged_memo_is_ignored_and_replaced(populated, damage, caplog):
    good = listed(populated)
    memo_file(populated).write_bytes(damage(populated))
    with caplog.at_level(logging.WARNING, logger="casstore"):
        assert listed(populated) == good
    assert "ignoring the usage figures" in caplog.text and str(memo_file(populated)) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="casstore"):
        assert listed(populated) == good
    assert not caplog.text, "rewritten"


def test_a_memo_of_other_versions_is_recounted_without_a_warning(populated, tmp_path, caplog):
    listed(populated)
    stale = memo_file(populated).read_bytes()
    add(populated, make_model(tmp_path / "n", {"w.bin": 4000}), "a", "1.10.0")
    good = listed(populated)
    memo_file(populated).write_bytes(stale)
    with caplog.at_level(logging.WARNING, logger="casstore"):
        assert listed(populated) == good
    assert not caplog.text


def test_an_unreadable_manifest_is_named_with_the_memo_as_without(populated):
    listed(populated)
    _, md = populated.resolve("b", "2.0.0")
    os.unlink(cache_file(populated))
    os.unlink(populated.layout.manifest(md))
    out = listed(populated)
    assert [x["model"] for x in out[0]] == ["a"] * 4
    assert len(out[2]) == 1 and "b@2.0.0 left out" in out[2][0] and str(md) in out[2][0]
