"""A synthetic store of many small blobs, for the scale benchmarks (bench/bench_gc.py and the
ones built on it) and the memory tests: blobs of 64-512 random bytes, 10 models, one version of
100 files per 100 blobs (consecutive versions share most blobs), 10 % of the blobs unreferenced,
every version last used 90 days ago, and so every blob and fresh mark (store/freshmarks.py). Files are written directly (no fsync): test data, not a
store casstore wrote."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from casstore.model.digest import Digest
from casstore.model.history import Switch
from casstore.model.manifest import Entry, Manifest
from casstore.store import freshmarks
from casstore.store.objects import Store


def many_blobs(root: Path, n_blobs: int, seed: int = 1) -> Store:
    rnd = random.Random(seed)
    store = Store.open(root)
    digests = []
    for _i in range(n_blobs):
        data = rnd.randbytes(rnd.randint(64, 512))
        d = Digest.of_bytes(data)
        p = store.blob_path(d)
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        digests.append((d, len(data)))
    referenced = digests[: int(n_blobs * 0.9)]
    n_versions = max(100, n_blobs // 100)
    per_model = n_versions // 10
    old = float(int(time.time() - 90 * 86400))  # a whole second: blobs stamped as casstore stamps them (store/stamps.py)
    for mi in range(10):
        model = f"model{mi}"
        for vi in range(per_model):
            start = (mi * per_model + vi) * (len(referenced) // n_versions)
            files = referenced[start : start + 100]
            m = Manifest(model, f"1.{vi}.0", tuple(Entry(f"f{j:03d}.bin", s, d) for j, (d, s) in enumerate(files)),
                         created=int(old))
            data = m.encode()
            md = Digest.of_bytes(data)
            mp = store.layout.manifest(md)
            mp.parent.mkdir(exist_ok=True)
            mp.write_bytes(data)
            os.utime(mp, (old, old))
            tag = store.layout.tag(model, m.version)
            tag.parent.mkdir(parents=True, exist_ok=True)
            tag.write_text(f"{md}\n")
            if vi == per_model - 1:
                h = store.layout.history(model)
                h.mkdir(parents=True, exist_ok=True)
                (h / f"{1:012d}.json").write_bytes(Switch(1, m.version, md, None, "add", old, "bench", 1, "bench").encode())
    for _, p in store.iter_blobs():
        os.utime(p, (old, old))
    freshmarks.set_all(root, old)  # as a writer's marks would be: no blob made fresh since
    return store


def as_directory_remote(store_root: Path, remote_root: Path) -> None:
    """A directory remote publishing every tagged version of the synthetic store at
    ``store_root``, its objects hard links to the store's (the remote-GC benchmark at 1M blobs)."""
    from casstore.model.index import Index
    from casstore.remotes.directory import DirectoryRemote

    store = Store.open(store_root)
    for top in ("blobs", "manifests"):
        for sub in os.listdir(store_root / top):
            (remote_root / top / sub).mkdir(parents=True, exist_ok=True)
            for name in os.listdir(store_root / top / sub):
                os.link(store_root / top / sub / name, remote_root / top / sub / name)
    remote = DirectoryRemote(remote_root)
    for model in store.refs.models():
        index = Index(model)
        for version, md in store.refs.tags(model).items():
            index.publish(version, md, store.get_manifest(md))
        remote.write_index_sync(model, index.encode(), None)
