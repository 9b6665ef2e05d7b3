"""`cas du`'s listing of blobs, cached by directory in ``cache/blob-listing``, so that a report on
a store of 100k or 1M blobs stats its 256 ``blobs/XX`` directories instead of listing and
matching every name again.

A directory's cached names are used while its inode, mtime and ctime are those recorded: adding
or removing a name changes both times. A listing is recorded only when the directory's ctime is
``SETTLE_NS`` older than the store's clock read before the listing (``Store.now()``, the clock
that stamps the directory). A change made after the listing then stamps a later time even on a
filesystem with 2-second timestamps, so it cannot leave the recorded times as they were (git's
"racy clean" rule). A directory written to within ``SETTLE_NS`` is listed every time.

Each directory's names are kept matched to the manifest summaries' table (store/summaries.py):
the names the table holds first, with their indices, then the rest. The indices are used while
the table's first digests are those they were matched against (their count and hash: a report
that learns manifests appends to the table, and the rest of each directory's names is matched
against what it appended only); otherwise the cached names are matched again, without a listing.

The blobs the table does not hold (no manifest names them, so their size is nowhere else) are
kept with their sizes, stat'ed once per name: a name is a digest, so its size does not change
while the name lasts, and a directory listed again keeps the sizes of the names it still holds.

Like the summaries, the cache only feeds reports (`cas du`, the size check before an automatic
GC): GC and `cas doctor` list every directory themselves (docs/architecture.md, invariant 7). An
unreadable cache costs a listing, never an error (store/cachefile.py). On NFS the directory
times come from the client's attribute cache, which also decides when the client re-reads a
directory, so the cache should be no staler than a listing there (docs/guides/team-nas.md; no
NFS mount here to test it).
"""

from __future__ import annotations

import math
import os
import stat
from array import array
from collections.abc import Mapping
from typing import NamedTuple

import blake3

from casstore.store import cachefile
from casstore.store.indexset import IndexSet
from casstore.store.summaries import Table

FILE = "cache/blob-listing"
SETTLE_NS = 3_000_000_000  # above the coarsest timestamps in use (FAT: 2 s)
_FORMAT = 4  # 1 named the summaries file by its hash; 2 had no sizes of the rest; 3 held lists of ints

Key = tuple[int, int, int, int]  # dev, ino, mtime_ns, ctime_ns of a blobs/XX directory
# names (32 bytes each; those in the table first), their table indices ("I"), the sizes of the rest ("q")
Entry = tuple[Key, bytes, array, array]


class Listed(NamedTuple):
    held: IndexSet  # the blobs ``table`` holds, as its indices (no Digest per blob: 170 bytes each)
    table_bytes: int  # the sizes ``table`` gives for those (a blob holds what its digest names)
    others: bytes  # the blobs ``table`` does not hold, 32 bytes each (a Digest each took 170, and a
    # first report, whose table is empty, lists every blob here); with ``held``, every blob as
    # ``Store.blob_digests`` lists them
    table_len: int  # ``len(table)`` when listed (a later ``Table.add`` may take in some of ``others``)
    other_sizes: array  # of ``others``, in their order; -1 where not known (a first report's: see ``list_blobs``)
    other_mtimes: array  # of ``others``, where this listing stat'ed them (NaN elsewhere): not stat'ed twice


def list_blobs(store, table: Table, now: float) -> Listed:
    """Every blob by its name: those in ``table`` by index, the rest as digests. ``now``: the
    store's clock, read before. With an empty ``table`` (a first report) every blob is among the
    rest, most of them named by the manifests the report learns after the listing: their sizes
    are not stat'ed here but recorded as -1, unknown (the caller stats those still unnamed, and
    the next report, its table learned, stats them for the cache)."""
    cached, mark = _load(store)
    tail: dict[bytes, int] | None = None  # what the table appended since the cached match, if it still begins with it
    if mark is not None and mark[0] <= len(table) and _mark(table, mark[0]) == mark:
        tail = table.raw_indices(start=mark[0])
    settled = int(now * 1e9) - SETTLE_NS
    root = store.layout.blobs
    dirs: list[tuple[str, Key, int, tuple[bytes, array, array] | bytes]] = []  # matched, or names to match
    for sub in os.listdir(root):
        if len(sub) != 2:
            continue
        try:
            st = os.stat(os.path.join(root, sub))  # before the listing: a change after it shows next time
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        hit = cached.get(sub)
        if hit is not None and hit[0] != key:
            hit = None  # the directory changed: list it again
        if hit is not None and tail is not None and mark is not None and _in_range(hit[2], mark[0]):
            dirs.append((sub, key, st.st_ctime_ns, _match_rest(*hit[1:], tail) if tail else hit[1:]))
        else:  # the table changed (the cached names are matched again), or the directory did
            dirs.append((sub, key, st.st_ctime_ns, hit[1] if hit is not None else
                         bytes.fromhex("".join(store.blob_names(sub)))))
    # Matched all at once: a few directories changed by an add need no index of the whole table.
    unmatched = b"".join(x for *_, x in dirs if isinstance(x, bytes))
    index = table.hex_indices(unmatched) if unmatched else {}
    del unmatched
    keep: dict[str, Entry] = {}
    idxs: list[array] = []  # each directory's blobs the table holds, as its indices
    others: list[bytes] = []
    other_sizes, other_mtimes = array("q"), array("d")
    for sub, key, ctime, got in dirs:
        sound = True
        if isinstance(got, bytes):
            h = got.hex()
            names, idx = _match([h[i:i + 64] for i in range(0, len(h), 64)], index)
            sizes, sound = _sizes(os.path.join(root, sub), names[32 * len(idx):], cached.get(sub), other_mtimes,
                                  stat=len(table) > 0)
        elif len(table) and -1 in got[2]:  # recorded by a first report: what is still unnamed gets its size
            names, idx, sizes = got
            sizes, sound = _sizes(os.path.join(root, sub), names[32 * len(idx):], (key, *got), other_mtimes, stat=True)
        else:
            names, idx, sizes = got
            other_mtimes.extend([math.nan] * len(sizes))
        if ctime < settled and sound:
            keep[sub] = (key, names, idx, sizes)
        idxs.append(idx)
        others.append(names[32 * len(idx):])
        other_sizes.extend(sizes)
    now_mark = mark if mark is not None and tail == {} else _mark(table)  # the table as matched: not hashed again
    if keep != cached or (keep and now_mark != mark):
        _save(store, keep, now_mark)
    if sum(map(len, idxs)) == len(table):  # a name is in one directory only: the whole table, nothing to mark
        held, table_bytes = IndexSet.full(len(table)), sum(table.sizes)
    else:
        held = IndexSet.empty(len(table))
        held.mark(idxs)
        table_bytes = held.total(table.sizes, ())
    return Listed(held, table_bytes, b"".join(others), len(table), other_sizes, other_mtimes)


def _sizes(path: str, rest: bytes, before: Entry | None, mtimes: array, *, stat: bool) -> tuple[array, bool]:
    """The sizes of the names ``rest`` in the directory ``path``: those its cached entry knew
    (a name keeps its size while it lasts), the others stat'ed (their mtimes appended to
    ``mtimes``, NaN for the rest), or -1 without ``stat``. False if one is gone already: a size of
    0 for it would outlive it in the cache."""
    known: dict[bytes, int] = {}
    if before is not None:
        old = before[1][32 * len(before[2]):]
        known = {old[k:k + 32]: n for k, n in zip(range(0, len(old), 32), before[3])}
    out, sound = array("q"), True
    for k in range(0, len(rest), 32):
        raw = rest[k:k + 32]
        n, mtime = known.get(raw, -1), math.nan
        if n < 0 and stat:
            try:
                st = os.stat(os.path.join(path, raw.hex()))
                n, mtime = st.st_size, st.st_mtime
            except FileNotFoundError:  # removed since the listing: nothing to count, never old enough
                n, mtime, sound = 0, math.inf, False
        out.append(n)
        mtimes.append(mtime)
    return out, sound


def _match(hexes: list[str], index: Mapping[str, int]) -> tuple[bytes, array]:
    """The names as bytes, those ``index`` holds first, and their indices."""
    found = list(map(index.get, hexes))
    idx = array("I", [i for i in found if i is not None])
    if len(idx) < len(hexes):
        hexes = [h for h, i in zip(hexes, found) if i is not None] + [h for h, i in zip(hexes, found) if i is None]
    return bytes.fromhex("".join(hexes)), idx


def _match_rest(names: bytes, idx: array, sizes: array, tail: Mapping[bytes, int]) -> tuple[bytes, array, array]:
    """A cached directory's names matched again where the table grew: only the rest (the names
    it did not hold) can be among what it appended."""
    rest = names[32 * len(idx):]
    found = {k: i for k in range(0, len(rest), 32) if (i := tail.get(rest[k:k + 32])) is not None}
    if not found:
        return names, idx, sizes
    held = names[:32 * len(idx)] + b"".join(rest[k:k + 32] for k in found)
    left = [k for k in range(0, len(rest), 32) if k not in found]
    return (held + b"".join(rest[k:k + 32] for k in left), idx + array("I", found.values()),
            array("q", [sizes[k // 32] for k in left]))


def _mark(table: Table, n: int | None = None) -> tuple[int, bytes]:
    """What a listing is matched against: the table's first ``n`` digests (all by default), by
    their count and hash."""
    n = len(table) if n is None else n
    return n, blake3.blake3(memoryview(table.packed)[:32 * n]).digest()


def _in_range(idx: array, n: int) -> bool:
    return not idx or max(idx) < n  # unsigned


def _load(store) -> tuple[dict[str, Entry], tuple[int, bytes] | None]:
    return cachefile.load(store, FILE, _FORMAT, "blob listing", _parse) or ({}, None)


def _parse(obj: dict, raw: bytes) -> tuple[dict[str, Entry], tuple[int, bytes]]:
    dirs, mark = obj["dirs"], obj["table"]
    if (not isinstance(dirs, dict) or not isinstance(mark, list) or len(mark) != 2 or type(mark[0]) is not int
            or mark[0] < 0 or type(mark[1]) is not bytes):
        raise ValueError("malformed directory table")
    out = {}
    for sub, e in dirs.items():
        if (not isinstance(sub, str) or len(sub) != 2 or not isinstance(e, list) or len(e) != 7
                or any(type(x) is not int for x in e[:4]) or type(e[4]) is not bytes or len(e[4]) % 32):
            raise ValueError(f"malformed entry for blobs/{sub!s:.8}")
        idx, sizes = cachefile.ints(e[5], "I"), cachefile.ints(e[6], "q")
        if 32 * (len(idx) + len(sizes)) != len(e[4]) or (sizes and min(sizes) < -1):
            raise ValueError(f"malformed entry for blobs/{sub!s:.8}")
        out[sub] = (tuple(e[:4]), e[4], idx, sizes)
    return out, (mark[0], mark[1])


def _save(store, entries: Mapping[str, Entry], mark: tuple[int, bytes]) -> None:
    dirs = {sub: [*key, names, cachefile.packed(idx, "I"), cachefile.packed(sizes, "q")]
            for sub, (key, names, idx, sizes) in entries.items()}
    cachefile.save(store, FILE, _FORMAT, "blob listing", {"table": list(mark), "dirs": dirs})
