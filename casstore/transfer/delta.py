"""Delta downloads: a missing blob is prefilled from chunks that local blobs already hold (found by
chunk hash through the chunk maps, model/chunkmap.py), and only the rest is fetched, by the
engine's usual ranged parts with their retries, mirrors, resume and rate limit.

Nothing here is trusted: each local chunk is re-hashed as it is copied and only a match counts as
done; the whole-file digest still decides what is published (invariant 4). A map, remote or
cached, is only a hint: one that lies costs bandwidth (its chunks are fetched, or the blob is
fetched again whole), never wrong bytes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import blake3

from casstore.errors import CasError
from casstore.model.chunkmap import ChunkMap
from casstore.model.digest import Digest
from casstore.store import chunkmaps
from casstore.store.objects import Store

log = logging.getLogger("casstore")

MERGE_GAP = 1 << 20  # reusable runs this short between two fetched ranges are fetched too: one Range, not two
MIN_REUSE = 1 << 20  # below this, planning and copying cost more than they save
_PIECE = 4 << 20


@dataclass(frozen=True)
class Where:
    blob: Digest
    offset: int
    length: int


@dataclass
class LocalChunks:
    """Chunk hash -> where a local blob holds those bytes."""

    where: dict[bytes, Where] = field(default_factory=dict)

    def add(self, m: ChunkMap) -> None:
        for off, n, h in m.chunks():
            self.where.setdefault(h, Where(m.blob, off, n))

    @classmethod
    def build(cls, store: Store, sources: Iterable[Digest], min_size: int) -> LocalChunks:
        """Every cached map of a blob in the store (any model), plus maps computed now for
        ``sources`` (the blobs most likely to share chunks: the model's current version)."""
        out, seen = cls(), set()
        for d in [*chunkmaps.cached(store), *sources]:
            if d in seen:
                continue
            seen.add(d)
            try:
                size = os.stat(store.blob_path(d)).st_size
                if size < min_size:
                    continue
                m = chunkmaps.ensure(store, d)
            except (OSError, CasError) as e:
                log.debug("no chunks from %s: %s", d, e)
                continue
            out.add(m)
        return out


@dataclass(frozen=True)
class Copy:
    offset: int  # in the new blob
    source: Where
    hash: bytes


@dataclass(frozen=True)
class Plan:
    copies: tuple[Copy, ...]

    @property
    def reused(self) -> int:
        return sum(c.source.length for c in self.copies)


def plan(m: ChunkMap, local: LocalChunks, merge_gap: int | None = None) -> Plan:
    """Which chunks of ``m`` to copy from local blobs. A run of reusable chunks no longer than
    ``merge_gap`` (MERGE_GAP) between two fetched ones is fetched instead: fewer, longer Ranges."""
    merge_gap = MERGE_GAP if merge_gap is None else merge_gap
    chunks = list(m.chunks())
    found = [local.where.get(h) for _, n, h in chunks]
    reuse = [w is not None and w.length == n for w, (_, n, _) in zip(found, chunks)]
    i = 0
    while i < len(chunks):
        if not reuse[i]:
            i += 1
            continue
        j = i
        while j < len(chunks) and reuse[j]:
            j += 1
        run = sum(chunks[k][1] for k in range(i, j))
        if 0 < i and j < len(chunks) and run <= merge_gap:
            for k in range(i, j):
                reuse[k] = False
        i = j
    return Plan(tuple(Copy(off, w, h) for (off, _, h), w, r in zip(chunks, found, reuse) if r and w is not None))


def prefill(store: Store, fd: int, p: Plan) -> list[list[int]]:
    """Copy the planned chunks into the partial file ``fd``, each re-hashed as it is copied.
    Returns the byte ranges now done: those of the chunks that matched."""
    done: list[list[int]] = []
    sources: dict[Digest, int] = {}
    try:
        for c in p.copies:
            src = sources.get(c.source.blob)
            if src is None:
                try:
                    src = sources[c.source.blob] = os.open(store.blob_path(c.source.blob), os.O_RDONLY | os.O_NOFOLLOW)
                except OSError as e:  # collected meanwhile: those chunks are fetched instead
                    log.debug("cannot read %s for chunks: %s", c.source.blob, e)
                    continue
            h = blake3.blake3()
            pos, left = 0, c.source.length
            while left:
                piece = os.pread(src, min(_PIECE, left), c.source.offset + pos)
                if not piece:
                    break
                h.update(piece)
                os.pwrite(fd, piece, c.offset + pos)
                pos += len(piece)
                left -= len(piece)
            if left == 0 and h.digest() == c.hash:
                if done and done[-1][1] == c.offset:
                    done[-1][1] += c.source.length
                else:
                    done.append([c.offset, c.offset + c.source.length])
            else:
                log.info("local chunk of %s at %d does not hash as its map says; fetching it", c.source.blob,
                         c.source.offset)
    finally:
        for src in sources.values():
            os.close(src)
    return done

