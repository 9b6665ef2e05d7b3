"""Delta updates: chunk maps (model/chunking.py, model/chunkmap.py) and the engine building a
missing blob from local chunks plus fetched ranges (transfer/delta.py)."""

import asyncio
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casstore.model import chunking
from casstore.model.chunkmap import HASH_BYTES, ChunkMap, InvalidChunkMap
from casstore.model.digest import Digest, hash_file
from casstore.remotes.base import blob, chunks
from casstore.remotes.memory import MemoryRemote
from casstore.store import chunkmaps
from casstore.store.objects import Store
from casstore.testing import modelfiles
from casstore.transfer import delta
from casstore.transfer.download import Downloader, Settings

KiB, MiB = 1 << 10, 1 << 20


def mapped(path: Path) -> ChunkMap:
    return chunking.compute(path, hash_file(path)[0])


def spans(m: ChunkMap) -> list[tuple[int, int]]:
    return [(off, off + n) for off, n, _ in m.chunks()]


# -- where files are cut -----------------------------------------------------------------------------


def test_safetensors_cuts_at_the_header_and_every_tensor(tmp_path):
    ts = [(f"t{i}", os.urandom(1000 + i)) for i in range(5)]
    p = modelfiles.safetensors(tmp_path / "a.safetensors", ts)
    m = mapped(p)
    header = int.from_bytes(p.read_bytes()[:8], "little") + 8
    assert m.scheme == "safetensors"
    assert m.lengths == (header, *(len(d) for _, d in sorted(ts)))


def test_an_inserted_tensor_leaves_every_other_chunk_unchanged(tmp_path):
    ts = [(f"t{i:02d}", os.urandom(3000)) for i in range(12)]
    a = mapped(modelfiles.safetensors(tmp_path / "a.safetensors", ts))
    b = mapped(modelfiles.safetensors(tmp_path / "b.safetensors", [*ts, ("t03x", os.urandom(5000))]))
    old, new = {a.chunk_hash(i) for i in range(len(a))}, [b.chunk_hash(i) for i in range(len(b))]
    assert sum(h not in old for h in new) == 2  # the header (it lists the new tensor) and the new tensor


def test_gguf_cuts_at_its_tensor_table_and_every_tensor(tmp_path):
    ts = [(f"blk.{i}.w", os.urandom(700 + 13 * i)) for i in range(4)]
    a = mapped(modelfiles.gguf(tmp_path / "a.gguf", ts))
    ts[2] = (ts[2][0], os.urandom(len(ts[2][1])))
    b = mapped(modelfiles.gguf(tmp_path / "b.gguf", ts))
    assert a.scheme == b.scheme == "gguf" and len(a) == 5  # table + 4 aligned tensors
    assert [a.chunk_hash(i) == b.chunk_hash(i) for i in range(5)] == [True, True, True, False, True]


def test_zip_checkpoints_cut_at_every_member(tmp_path):
    ts = [(str(i), os.urandom(2000)) for i in range(3)]
    m = mapped(modelfiles.torch_zip(tmp_path / "a.pth", ts))
    assert m.scheme == "zip" and len(m) == 5  # data.pkl, three tensors, the central directory


def test_other_files_and_broken_headers_fall_back_to_content_defined_chunks(tmp_path):
    plain = tmp_path / "plain.bin"
    plain.write_bytes(os.urandom(3 * MiB))
    liar = tmp_path / "liar.safetensors"  # says "safetensors" (a header length, then '{') but is not
    liar.write_bytes((100).to_bytes(8, "little") + b"{" + os.urandom(3 * MiB))
    for p in (plain, liar):
        m = mapped(p)
        assert m.scheme == "cdc" and sum(m.lengths) == p.stat().st_size
        assert all(n <= chunking.CDC_MAX for n in m.lengths)


def test_long_chunks_are_split_from_their_own_start():
    big = chunking.MAX_CHUNK
    assert chunking._split([0, 10, 10 + 2 * big + 5], 10 + 2 * big + 5) == [10, big, big, 5]


# -- maps that lie ---------------------------------------------------------------------------------------


def _map(**over) -> ChunkMap:
    d = Digest("ab" * 32)
    base = dict(blob=d, size=300, scheme="cdc", lengths=(100, 200), hashes=bytes(2 * HASH_BYTES))
    return ChunkMap(**(base | over))


@pytest.mark.parametrize("over, why", [
    (dict(lengths=(100, 100)), "cover 200 bytes"),
    (dict(lengths=(0, 300)), "positive"),
    (dict(hashes=bytes(HASH_BYTES)), "hash bytes"),
    (dict(size=100_000, lengths=(2,) * 50_000, hashes=bytes(HASH_BYTES * 50_000)), "50000 chunks for"),
    (dict(scheme="zstd"), "unknown scheme"),
])
def test_malformed_maps_are_refused_with_their_source(over, why):
    m = _map(**over)
    with pytest.raises(InvalidChunkMap, match=why) as e:
        ChunkMap.decode(m.encode(), blob=m.blob, size=None, source="https://mirror/chunks/ab/x")
    assert "https://mirror/chunks/ab/x" in str(e.value)


def test_a_map_of_another_blob_or_size_or_garbage_is_refused():
    m = _map()
    with pytest.raises(InvalidChunkMap, match="describes"):
        ChunkMap.decode(m.encode(), blob=Digest("cd" * 32), size=None, source="x")
    with pytest.raises(InvalidChunkMap, match="size"):
        ChunkMap.decode(m.encode(), blob=m.blob, size=301, source="x")
    for junk in (b"", b"\xc1", os.urandom(100), b"\x93\x01\x02\x03"):
        with pytest.raises(InvalidChunkMap):
            ChunkMap.decode(junk, blob=m.blob, size=None, source="x")


# -- the engine --------------------------------------------------------------------------------------------


class CountingRemote(MemoryRemote):
    """The in-memory reference remote, counting the blob bytes it serves."""

    def __init__(self) -> None:
        super().__init__()
        self.served = 0

    async def read(self, key, start=0, end=None):
        async for piece in super().read(key, start, end):
            if key.kind == "blob":
                self.served += len(piece)
            yield piece


def publish(remote: MemoryRemote, data: bytes, the_map: bytes | None = None) -> Digest:
    d = Digest.of_bytes(data)
    remote.objects[blob(d).path] = data
    if the_map is not None:
        remote.objects[chunks(d).path] = the_map
    return d


def fetch(store: Store, remote, d: Digest, size: int, **over):
    s = Settings(**({"delta_min_size": 0, "jobs": 3, "part_size": 256 * KiB, "min_split": 64 * KiB,
                     "attempts": 1} | over))
    local = [b for b, _ in store.iter_blobs()]  # as ops.fetch passes the model's other versions
    return asyncio.run(Downloader(store, [remote], s).fetch({d: size}, local))


def add_local(store: Store, path: Path) -> Digest:
    return store.put_file(path).digest


def test_update_fetches_only_the_changed_tensors(tmp_path):
    old, new, changed = modelfiles.release_pair(tmp_path / "src", tensors=20, tensor_size=256 * KiB,
                                                inserted_size=512 * KiB, shards=1)
    store = Store.open(tmp_path / "store")
    add_local(store, next(old.glob("*.safetensors")))
    target = next(new.glob("*.safetensors"))
    remote = CountingRemote()
    d = publish(remote, target.read_bytes(), mapped(target).encode())
    with mock.patch.object(delta, "MERGE_GAP", 0), mock.patch.object(delta, "MIN_REUSE", 0):
        stats = fetch(store, remote, d, target.stat().st_size)
    assert store.blob_path(d).read_bytes() == target.read_bytes()
    config = len((new / "config.json").read_bytes())
    header = int.from_bytes(target.read_bytes()[:8], "little") + 8
    assert remote.served == stats.bytes_downloaded == changed - config + header
    assert stats.bytes_from_local == target.stat().st_size - stats.bytes_downloaded
    assert chunkmaps.load(store, d) == mapped(target)  # the remote's map, checked, is kept for later


Edit = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 40), st.integers(1, 9000)),
    st.tuples(st.just("delete"), st.integers(0, 40)),
    st.tuples(st.just("rewrite"), st.integers(0, 40)),
    st.tuples(st.just("move"), st.integers(0, 40), st.integers(0, 40)),
)


def edited(ts: list, edits, seed: int) -> list:
    ts = list(ts)
    for n, e in enumerate(edits):
        i = e[1] % (len(ts) + 1)
        if e[0] == "insert":
            ts.insert(i, (f"new{seed}.{n}", modelfiles.random_bytes(e[2], f"{seed}/{n}")))
        elif ts and e[0] == "delete":
            ts.pop(i % len(ts))
        elif ts and e[0] == "rewrite":
            name, data = ts[i % len(ts)]
            ts[i % len(ts)] = (name, modelfiles.random_bytes(len(data), f"re{seed}/{n}"))
        elif ts and e[0] == "move":
            ts.insert(e[2] % len(ts), ts.pop(i % len(ts)))
    return ts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(["safetensors", "gguf", "zip"]),
       sizes=st.lists(st.integers(1, 6000), min_size=1, max_size=12),
       edits=st.lists(Edit, max_size=5), seed=st.integers(0, 1000))
def test_old_file_plus_new_map_plus_fetched_ranges_is_exactly_the_new_file(fmt, sizes, edits, seed):
    write = {"safetensors": modelfiles.safetensors, "gguf": modelfiles.gguf, "zip": modelfiles.torch_zip}[fmt]
    ts = [(f"t{i:02d}", modelfiles.random_bytes(n, f"{seed}:{i}")) for i, n in enumerate(sizes)]
    new_ts = edited(ts, edits, seed)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        tmp = Path(tmp)
        for name, value in (("MERGE_GAP", 0), ("MIN_REUSE", 0)):
            stack.enter_context(mock.patch.object(delta, name, value))
        store = Store.open(tmp / "store")
        add_local(store, write(tmp / "old", ts))
        target = write(tmp / "new", new_ts)
        data = target.read_bytes()
        remote = CountingRemote()
        new_map = mapped(target)
        d = publish(remote, data, new_map.encode())
        stats = fetch(store, remote, d, len(data))
        assert store.blob_path(d).read_bytes() == data
        assert stats.bytes_reused + stats.bytes_from_local + stats.bytes_downloaded == len(data)
        old_hashes = {h for _, _, h in mapped(tmp / "old").chunks()}
        unchanged = data == (tmp / "old").read_bytes()
        assert stats.bytes_downloaded == (0 if unchanged else sum(n for _, n, h in new_map.chunks() if h not in old_hashes))


def _prepared(tmp_path, the_map=None, lie=None):
    """A store holding an old shard, and a remote with the new shard and (a version of) its map."""
    old, new, _ = modelfiles.release_pair(tmp_path / "src", tensors=12, tensor_size=128 * KiB,
                                          inserted_size=128 * KiB, shards=1)
    store = Store.open(tmp_path / "store")
    add_local(store, next(old.glob("*.safetensors")))
    target = next(new.glob("*.safetensors"))
    m = mapped(target)
    if lie is not None:
        m = lie(m)
    remote = CountingRemote()
    d = publish(remote, target.read_bytes(), m.encode() if the_map is None else the_map)
    return store, remote, d, target


def test_a_map_with_wrong_hashes_costs_one_whole_download_never_wrong_bytes(tmp_path):
    """Every hash is one a local chunk has, at the wrong place: the assembled file fails its
    digest and the blob is fetched again whole. The map is kept as a hint like any other (a later
    update re-hashes what it copies: test_a_local_blob_whose_bytes_do_not_match_its_map...)."""
    def shuffled(m):
        hs = [m.chunk_hash(i) for i in range(len(m))]
        return ChunkMap(m.blob, m.size, m.scheme, m.lengths, b"".join(hs[1:] + hs[:1]))

    store, remote, d, target = _prepared(tmp_path, lie=shuffled)
    with mock.patch.object(delta, "MIN_REUSE", 0):
        stats = fetch(store, remote, d, target.stat().st_size)
    assert store.blob_path(d).read_bytes() == target.read_bytes()
    assert remote.served >= target.stat().st_size  # the retry fetched it whole
    assert stats.bytes_downloaded >= target.stat().st_size
    lie = chunkmaps.load(store, d)  # kept as a hint, like any cached map
    assert lie is not None and lie != mapped(target)



@pytest.mark.parametrize("bad", [b"not msgpack", b"", None])
def test_a_broken_or_absent_map_means_a_whole_download(tmp_path, bad, caplog):
    store, remote, d, target = _prepared(tmp_path, the_map=bad if bad is not None else b"x")
    if bad is None:
        del remote.objects[chunks(d).path]
    stats = fetch(store, remote, d, target.stat().st_size)
    assert store.blob_path(d).read_bytes() == target.read_bytes()
    assert (stats.bytes_from_local, stats.bytes_downloaded) == (0, target.stat().st_size)
    if bad is not None:
        assert f"not using the chunk map: {remote.describe(chunks(d))}" in caplog.text  # named once


def test_a_local_blob_whose_bytes_do_not_match_its_map_is_not_copied(tmp_path):
    """A stale or tampered local map: each local chunk is re-hashed as it is copied."""
    store, remote, d, target = _prepared(tmp_path)
    [(old, _)] = list(store.iter_blobs())
    good = chunkmaps.ensure(store, old)
    hs = bytearray(good.hashes)
    hs[HASH_BYTES * 3 : HASH_BYTES * 4] = mapped(target).chunk_hash(3)  # claims a chunk it does not hold
    chunkmaps.discard(store, old)
    chunkmaps.save(store, ChunkMap(good.blob, good.size, good.scheme, good.lengths, bytes(hs)))
    with mock.patch.object(delta, "MIN_REUSE", 0), mock.patch.object(delta, "MERGE_GAP", 0):
        stats = fetch(store, remote, d, target.stat().st_size)
    assert store.blob_path(d).read_bytes() == target.read_bytes()
    assert stats.bytes_from_local + stats.bytes_downloaded == target.stat().st_size


def test_delta_never_downloads_whole(tmp_path):
    store, remote, d, target = _prepared(tmp_path)
    stats = fetch(store, remote, d, target.stat().st_size, delta=False)
    assert (stats.bytes_from_local, remote.served, stats.bytes_maps) == (0, target.stat().st_size, 0)


def test_gc_removes_a_blobs_map_with_it(tmp_path):
    from casstore import gc
    from casstore.gc.policy import Policy

    store = Store.open(tmp_path / "store")
    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(2 * MiB))
    d = add_local(store, f)
    chunkmaps.ensure(store, d)
    assert store.layout.chunk_map(d).exists()
    os.utime(store.blob_path(d), (1, 1))  # unreferenced for long
    orphan = Digest.of_bytes(b"a blob quarantined by verify --repair")
    chunkmaps.save(store, ChunkMap(orphan, 1, "cdc", (1,), bytes(HASH_BYTES)))
    os.utime(store.layout.chunk_map(orphan), (1, 1))
    gc.collect(store, Policy(grace=0))
    assert not store.blob_path(d).exists() and not store.layout.chunk_map(d).exists()
    assert not store.layout.chunk_map(orphan).exists()
