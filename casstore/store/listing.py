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

Like the summaries, the cache only feeds reports (`cas du`, the size check before an automatic
GC): GC and `cas doctor` list every directory themselves (docs/architecture.md, invariant 7). An
unreadable cache costs a listing, never an error (store/cachefile.py). On NFS the directory
times come from the client's attribute cache, which also decides when the client re-reads a
directory, so the cache should be no staler than a listing there (docs/guides/team-nas.md; no
NFS mount here to test it).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import NamedTuple

import blake3

from casstore.store import cachefile
from casstore.store.summaries import Table

FILE = "cache/blob-listing"
SETTLE_NS = 3_000_000_000  # above the coarsest timestamps in use (FAT: 2 s)
_FORMAT = 2  # 1 named the summaries file by its hash

Key = tuple[int, int, int, int]  # dev, ino, mtime_ns, ctime_ns of a blobs/XX directory
Entry = tuple[Key, bytes, list[int]]  # names (32 bytes each; those in the table first), their table indices


class Listed(NamedTuple):
    held: set[int]  # the blobs ``table`` holds, as its indices (no Digest per blob: 170 bytes each)
    table_bytes: int  # the sizes ``table`` gives for those (a blob holds what its digest names)
    others: bytes  # the blobs ``table`` does not hold, 32 bytes each (a Digest each took 170, and a
    # first report, whose table is empty, lists every blob here); with ``held``, every blob as
    # ``Store.blob_digests`` lists them
    table_len: int  # ``len(table)`` when listed (a later ``Table.add`` may take in some of ``others``)


def list_blobs(store, table: Table, now: float) -> Listed:
    """Every blob by its name: those in ``table`` by index, the rest as digests. ``now``: the
    store's clock, read before."""
    cached, mark = _load(store)
    tail: dict[bytes, int] | None = None  # what the table appended since the cached match, if it still begins with it
    if mark is not None and mark[0] <= len(table) and _mark(table, mark[0]) == mark:
        tail = table.raw_indices(start=mark[0])
    settled = int(now * 1e9) - SETTLE_NS
    root = store.layout.blobs
    dirs: list[tuple[str, Key, int, tuple[bytes, list[int]] | bytes]] = []  # matched, or names to match
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
            dirs.append((sub, key, st.st_ctime_ns, _match_rest(hit[1], hit[2], tail) if tail else (hit[1], hit[2])))
        else:  # the table changed (the cached names are matched again), or the directory did
            dirs.append((sub, key, st.st_ctime_ns, hit[1] if hit is not None else
                         bytes.fromhex("".join(store.blob_names(sub)))))
    # Matched all at once: a few directories changed by an add need no index of the whole table.
    unmatched = b"".join(x for *_, x in dirs if isinstance(x, bytes))
    index = table.hex_indices(unmatched) if unmatched else {}
    del unmatched
    keep: dict[str, Entry] = {}
    held: set[int] = set()  # indices into the table
    others: list[bytes] = []
    for sub, key, ctime, got in dirs:
        if isinstance(got, bytes):
            h = got.hex()
            names, idx = _match([h[i:i + 64] for i in range(0, len(h), 64)], index)
        else:
            names, idx = got
        if ctime < settled:
            keep[sub] = (key, names, idx)
        held.update(idx)
        others.append(names[32 * len(idx):])
    now_mark = mark if mark is not None and tail == {} else _mark(table)  # the table as matched: not hashed again
    if keep != cached or (keep and now_mark != mark):
        _save(store, keep, now_mark)
    return Listed(held, sum(map(table.sizes.__getitem__, held)), b"".join(others), len(table))


def _match(hexes: list[str], index: Mapping[str, int]) -> tuple[bytes, list[int]]:
    """The names as bytes, those ``index`` holds first, and their indices."""
    found = list(map(index.get, hexes))
    idx = [i for i in found if i is not None]
    if len(idx) < len(hexes):
        hexes = [h for h, i in zip(hexes, found) if i is not None] + [h for h, i in zip(hexes, found) if i is None]
    return bytes.fromhex("".join(hexes)), idx


def _match_rest(names: bytes, idx: list[int], tail: Mapping[bytes, int]) -> tuple[bytes, list[int]]:
    """A cached directory's names matched again where the table grew: only the rest (the names
    it did not hold) can be among what it appended."""
    rest = names[32 * len(idx):]
    found = {k: i for k in range(0, len(rest), 32) if (i := tail.get(rest[k:k + 32])) is not None}
    if not found:
        return names, idx
    held = names[:32 * len(idx)] + b"".join(rest[k:k + 32] for k in found)
    return held + b"".join(rest[k:k + 32] for k in range(0, len(rest), 32) if k not in found), idx + list(found.values())


def _mark(table: Table, n: int | None = None) -> tuple[int, bytes]:
    """What a listing is matched against: the table's first ``n`` digests (all by default), by
    their count and hash."""
    n = len(table) if n is None else n
    return n, blake3.blake3(memoryview(table.packed)[:32 * n]).digest()


def _in_range(idx: list[int], n: int) -> bool:
    return not idx or (min(idx) >= 0 and max(idx) < n)


def _load(store) -> tuple[dict[str, Entry], tuple[int, bytes] | None]:
    return cachefile.load(store, FILE, _FORMAT, "blob listing", _parse) or ({}, None)


def _parse(obj: dict, raw: bytes) -> tuple[dict[str, Entry], tuple[int, bytes]]:
    dirs, mark = obj["dirs"], obj["table"]
    if (not isinstance(dirs, dict) or not isinstance(mark, list) or len(mark) != 2 or type(mark[0]) is not int
            or mark[0] < 0 or type(mark[1]) is not bytes):
        raise ValueError("malformed directory table")
    out = {}
    for sub, e in dirs.items():
        if (not isinstance(sub, str) or len(sub) != 2 or not isinstance(e, list) or len(e) != 6
                or any(type(x) is not int for x in e[:4]) or type(e[4]) is not bytes or len(e[4]) % 32
                or not isinstance(e[5], list) or not set(map(type, e[5])) <= {int}
                or 32 * len(e[5]) > len(e[4])):
            raise ValueError(f"malformed entry for blobs/{sub!s:.8}")
        out[sub] = (tuple(e[:4]), e[4], e[5])
    return out, (mark[0], mark[1])


def _save(store, entries: Mapping[str, Entry], mark: tuple[int, bytes]) -> None:
    cachefile.save(store, FILE, _FORMAT, "blob listing",
                   {"table": list(mark), "dirs": {sub: [*key, names, idx] for sub, (key, names, idx) in entries.items()}})
