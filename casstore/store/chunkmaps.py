"""The store's cache of chunk maps (``chunks/<hh>/<hex>``, model/chunkmap.py): a map computed
from the local blob, or kept from the remote the blob came from once the blob verified. Either
way it is a hint (every chunk copied out of a blob is re-hashed, transfer/delta.py), kept beside
its blob and removed with it by GC. A missing, unreadable or unwritable map (a read-only store)
costs a recomputation, never an error."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from casstore.errors import InvalidInput
from casstore.fs.atomic import makedirs, write_file
from casstore.model import chunking
from casstore.model.chunkmap import MAX_MAP_BYTES, ChunkMap
from casstore.model.digest import Digest

log = logging.getLogger("casstore")


def load(store, d: Digest, size: int | None = None) -> ChunkMap | None:
    path = store.layout.chunk_map(d)
    try:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as f:
            data = f.read(MAX_MAP_BYTES + 1)
        return ChunkMap.decode(data, blob=d, size=size, source=str(path))
    except FileNotFoundError:
        return None
    except (OSError, InvalidInput) as e:
        log.warning("ignoring the chunk map %s: %s", path, e)
        return None


def save(store, m: ChunkMap) -> None:
    path = store.layout.chunk_map(m.blob)
    try:
        makedirs(path.parent)
        write_file(path, m.encode(), store.layout.tmp, root=store.root, exclusive=False)
    except OSError as e:  # a read-only store, a full disk: the map is only a cache
        log.info("not caching the chunk map of %s: %s", m.blob, e)


def ensure(store, d: Digest) -> ChunkMap:
    """The map of local blob ``d``: cached, or computed from the blob and cached."""
    blob = store.blob_path(d)
    size = os.stat(blob).st_size
    m = load(store, d, size)
    if m is None:
        m = chunking.compute(blob, d)
        save(store, m)
    return m


def cached(store) -> Iterator[Digest]:
    """Blobs whose map is in the cache (whether or not the blob still is)."""
    root = store.layout.root / "chunks"
    try:
        subdirs = list(os.scandir(root))
    except FileNotFoundError:
        return
    for sub in subdirs:
        try:
            names = os.listdir(sub.path)
        except OSError:
            continue
        for name in names:
            try:
                yield Digest(name)
            except InvalidInput:
                continue


def discard(store, d: Digest) -> None:
    try:
        os.unlink(store.layout.chunk_map(d))
    except FileNotFoundError:
        pass
