"""GC's read of many manifests by a helper process (gc/readahead.py) while it lists the blobs:
the state it reads is the one GC reads alone, a manifest the helper cannot read is read (and
named) by GC itself, and a helper that is gone or stops mid-record costs nothing but time."""

import os
import shutil
import struct
import sys
from array import array

import pytest

from casstore.errors import CorruptStore
from casstore.gc import Policy, collect, plan, read_state, readahead
from casstore.gc.state import ListedBlobs
from casstore.store.objects import Store
from casstore.testing.synthetic import many_blobs

from conftest import taken

EXPIRED = Policy(retention_days=0, keep_last=0, grace=0)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """3,000 blobs, 27 versions of 100 files (and the current ones) over 10 models."""
    root = tmp_path_factory.mktemp("readahead") / "store"
    many_blobs(root, 3000)
    return root


@pytest.fixture
def store(synthetic, tmp_path):
    shutil.copytree(synthetic, tmp_path / "store", symlinks=True, copy_function=os.link)  # GC reads: links will do
    return Store.open(tmp_path / "store")


def summary(state):
    return (sorted((v.model, v.version, v.manifest.hex, tuple(sorted(v.blobs))) for v in state.versions),
            state.blobs.total, plan(state, EXPIRED))


def test_the_helper_reads_what_gc_would_read_itself(store, monkeypatch):
    alone = summary(read_state(store))
    monkeypatch.setattr(readahead, "MIN_MANIFESTS", 1)
    seen = taken(monkeypatch)
    helped = summary(read_state(store))
    assert sorted(seen) == sorted(manifest for _, _, manifest, _ in alone[0])
    assert helped == alone
    assert alone[2].delete_blobs and alone[2].bytes_freed > 0


def test_below_the_threshold_no_helper_starts(store, monkeypatch):
    seen = taken(monkeypatch)
    read_state(store)
    assert seen == []


def test_a_manifest_the_helper_cannot_read_is_read_by_gc_which_names_it(store, monkeypatch):
    md = read_state(store).versions[3].manifest
    path = store.layout.manifest(md)
    changed = path.with_suffix(".new")  # a new file: the old one's inode is the module's store's too
    changed.write_bytes(path.read_bytes().replace(b'"size": ', b'"size":  ', 1))  # no longer its digest's bytes
    os.replace(changed, path)
    with pytest.raises(CorruptStore) as alone:
        read_state(store)
    monkeypatch.setattr(readahead, "MIN_MANIFESTS", 1)
    seen = taken(monkeypatch)
    with pytest.raises(CorruptStore) as helped:
        read_state(store)
    assert str(path) in str(helped.value) and str(helped.value) == str(alone.value)
    assert md.hex not in seen and seen


def test_gc_reads_every_manifest_itself_when_the_helper_is_gone(store, monkeypatch):
    alone = summary(read_state(store))
    monkeypatch.setattr(readahead, "MIN_MANIFESTS", 1)
    monkeypatch.setattr(sys, "executable", shutil.which("false"))  # the helper exits at once, having written nothing
    seen = taken(monkeypatch)
    assert summary(read_state(store)) == alone
    assert seen == []


def test_a_collection_with_the_helper_deletes_what_one_without_it_does(tmp_path, monkeypatch):
    many_blobs(tmp_path / "small", 500)
    results = []
    for helped in (False, True):
        root = tmp_path / f"copy-{helped}"
        shutil.copytree(tmp_path / "small", root, symlinks=True)
        monkeypatch.setattr(readahead, "MIN_MANIFESTS", 1 if helped else 10 ** 9)
        done, res = collect(Store.open(root), EXPIRED)
        assert res is not None
        left = sorted(n for _, _, names in os.walk(root / "blobs") for n in names)
        results.append((list(done.delete_blobs), res.blobs, res.manifests, left))
    assert results[0] == results[1] and results[0][1] > 0


def record(md: bytes, named: dict[str, int]) -> bytes:
    return (readahead.HEAD.pack(md, len(named)) + bytes.fromhex("".join(named))
            + array("q", named.values()).tobytes())


def test_records_split_anywhere_are_read_whole_and_one_cut_short_is_left_out():
    a = {"ab" * 32: 5, "cd" * 32: 1 << 40}
    b = {"ef" * 32: 0}
    stream = record(b"\x01" * 32, a) + record(b"\x02" * 32, b) + record(b"\x03" * 32, a)[:-1]
    for cut in (1, 7, 36, 100, len(stream)):
        chunks = [stream[i:i + cut] for i in range(0, len(stream), cut)]
        assert list(readahead.parse(chunks)) == [("01" * 32, a), ("02" * 32, b)]
    assert list(readahead.parse([struct.pack("<32sI", b"\x04" * 32, 0)])) == [("04" * 32, {})]


def test_a_read_that_fails_midway_stops_the_helper(store, monkeypatch):
    monkeypatch.setattr(readahead, "MIN_MANIFESTS", 1)
    started = []
    real_init = readahead.Readahead.__init__

    def init(self, *args):
        real_init(self, *args)
        started.append(self)

    def intern(self, named):
        raise RuntimeError("stopped here")

    monkeypatch.setattr(readahead.Readahead, "__init__", init)
    monkeypatch.setattr(ListedBlobs, "intern", intern)
    with pytest.raises(RuntimeError, match="stopped here"):
        read_state(store)
    (helper,) = started
    assert helper.proc.returncode is not None and not helper._reader.is_alive()
