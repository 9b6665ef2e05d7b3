"""What GC decides from: the store read once into plain values (``StoreState``)."""

from __future__ import annotations

import gc
import math
import os
import re
from array import array
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, MutableSet, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import filterfalse
from operator import attrgetter
from pathlib import Path
from typing import Any, cast

from casstore.errors import CasError, CorruptStore, NotFound
from casstore.gc import readahead
from casstore.gc.housekeeping import junk_files
from casstore.model.digest import Digest
from casstore.model.history import UNSET, current_of, undo_stack
from casstore.model.keys import blob_key_hex
from casstore.store import freshmarks, listing
from casstore.store.indexset import IndexSet
from casstore.store.leases import LeaseScan, live_leases
from casstore.store.markers import marked, marked_one
from casstore.store.objects import Store
from casstore.store.roots import project_roots
from casstore.store.summaries import Summary, Table, load, summaries

# A blob as a state names it: by its digest's hex in GC's read (ListedBlobs: a str caches its
# hash and compares in one step, a Digest is a tuple around one), by Digest in the sweep's re-mark
# (which lists no blob), by its index in the manifest summaries' table in a report's (BlobTable).
# Neither of the last two makes an object per blob of the store.
BlobKey = Digest | int | str


def sorted_by_hex(ds: Iterable[Any]) -> list[Digest]:
    """Digests sorted as a plan lists them: by their str, 3x faster than as tuples (100k)."""
    return sorted(ds, key=_HEX)


_HEX = attrgetter("hex")


@dataclass(frozen=True)
class VersionState:
    model: str
    version: str
    manifest: Digest
    blobs: Collection[BlobKey]  # each once; empty when the state was read without blobs (`cas list`)
    last_used: float
    recency: int | None  # 0: current; 1: the one before it in the history; None: never current
    marks: tuple[str, ...] = ()  # current, pinned, project: roots whatever the policy
    kept_since: float | None = None  # a rollback root left by `cas update`: a root within retention
    released: bool = False  # left by an aggressive update: no recency or retention protection
    partial: bool = False  # a selective fetch's part of the version (refs/M/partial/V)


@dataclass(frozen=True)
class StoreState:
    now: float
    blobs: Mapping[Any, tuple[int, float]]  # BlobKey -> size, mtime
    manifests: Mapping[Digest, float]  # mtime of every manifest file
    versions: tuple[VersionState, ...]
    leased: frozenset[BlobKey] = frozenset()  # leased manifests and blobs
    extra: Mapping[Digest, Collection[BlobKey]] = field(default_factory=dict)  # manifests rooted otherwise -> blobs
    summaries: Mapping[Digest, Summary] = field(default_factory=dict, compare=False, repr=False)  # for du/list
    broken: tuple[str, ...] = ()  # tags whose manifest is missing or unreadable (verify reports them)
    junk: tuple[tuple[str, int, float], ...] = ()  # quarantined blobs, abandoned partials: path, size, mtime


class _Blobs(Mapping):
    """A state's blobs over a set of keys (``_keys``): ``keys()`` is that set itself, so that a
    plan's set operations on 1M blobs stay in C."""

    _keys: AbstractSet

    def __iter__(self) -> Iterator:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, k: object) -> bool:
        return k in self._keys

    def keys(self):
        return self._keys

    _root: str  # the store's
    _fresh: list[float] | None = None  # store/freshmarks.py's bounds, read if a plan asks

    def stats(self, keys: Iterable[BlobKey]) -> Iterator[tuple[BlobKey, int, float]]:
        """(key, size, mtime) of each of ``keys`` held here, in one loop (the plan's, over every
        blob it might free): no Mapping method call per blob."""
        raise NotImplementedError

    def older_than(self, keys: Collection[Any], old_enough: float) -> tuple[MutableSet, int]:
        """Those of ``keys`` whose fresh marks show them older than ``old_enough``, and their
        total size, with no stat of their own (store/freshmarks.py)."""
        raise NotImplementedError

    def digests(self, keys: Collection[BlobKey]) -> Sequence[Digest]:
        """The digests of ``keys`` (all held here), sorted by hex: a plan's list."""
        raise NotImplementedError

    def _quiet(self, old_enough: float) -> list[bool]:
        """Per mark group: no marked blob of it made fresh since ``old_enough``."""
        if self._fresh is None:
            self._fresh = freshmarks.bounds(self._root)
        return [bound < old_enough for bound in self._fresh]


class BlobTable(_Blobs, Mapping[int, tuple[int, float]]):
    """The store's blobs for a report (`cas du`, the size check before an automatic GC), keyed by
    their index in the manifest summaries' table (store/summaries.py), those it lacks by negative
    numbers: no Digest per blob (170 bytes each, 1M of them in a large store). Sizes come from
    the table where it knows the blob, the rest from the listing (store/listing.py); a blob's
    mtime is stat'ed when a plan asks, which it does once per blob it might free that the fresh
    marks do not show old."""

    _keys: IndexSet

    def __init__(self, root: str, table: Table, listed: listing.Listed) -> None:
        self._root = os.path.join(root, "")
        self._table = table
        held = listed.held.grown(len(table))
        # Manifests summarized since the listing may name some of the others (all of them in a
        # first report): only among what they appended to the table, which the listing did not
        # know. The rest are held by hex (``_others``), a Digest made only where a plan asks.
        known = table.raw_indices(start=listed.table_len)
        summarized = 0
        others = listed.others
        if not known and -1 not in listed.other_sizes:  # an unchanged store's: each of the others as listed
            h = others.hex()
            self._others = [h[i:i + 64] for i in range(0, len(h), 64)]
            self._other_sizes, self._other_mtimes = listed.other_sizes, listed.other_mtimes
        else:
            self._others, self._other_sizes, self._other_mtimes = [], array("q"), array("d")
            for k, size, mtime in zip(range(0, len(others), 32), listed.other_sizes, listed.other_mtimes):
                i = known.get(raw := others[k:k + 32])
                if i is not None and i not in held:
                    held.add(i)
                    summarized += table.sizes[i]
                else:
                    self._others.append(h := raw.hex())
                    if size < 0:  # not known to the listing (a first report's): stat'ed now, unnamed still
                        size, mtime = self._stat(h)
                    self._other_sizes.append(size)
                    self._other_mtimes.append(mtime)
        self._keys = held.with_others(len(self._others))
        self.total = listed.table_bytes + summarized + sum(self._other_sizes)

    def __getitem__(self, k: int) -> tuple[int, float]:
        if k not in self._keys:
            raise KeyError(k)
        if k < 0 and not math.isnan(mtime := self._other_mtimes[-k - 1]):
            return self._other_sizes[-k - 1], mtime  # stat'ed by this listing
        return self._stat(self._hex(k))

    def stats(self, keys: Iterable[BlobKey]) -> Iterator[tuple[BlobKey, int, float]]:
        present, get = self._keys, self.__getitem__
        for k in keys:
            assert isinstance(k, int), "a report's blobs are numbered"
            if k in present:
                yield k, *get(k)

    def older_than(self, keys: Collection[int], old_enough: float) -> tuple[MutableSet[int], int]:
        if len(keys) < freshmarks.MIN_BLOBS:
            return set(), 0
        old = self._keys.intersection(keys)  # over masks, then the fresh groups' blobs taken out
        if len(old) < freshmarks.MIN_BLOBS:
            return set(), 0
        quiet = self._quiet(old_enough)
        others = old.negatives()  # few: by digest, one by one
        old.drop_negatives()
        mtimes = self._other_mtimes  # inf: found gone by this listing, never old enough
        others_old = [k for k in others if quiet[int(self._others[-k - 1][:3], 16)] and mtimes[-k - 1] != math.inf]
        fresh = sorted({g >> 4 for g, q in enumerate(quiet) if not q})  # the first bytes of their digests
        if fresh:
            p = self._table.packed
            of_fresh = re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in fresh) + b"]")
            for m in of_fresh.finditer(p[::32]):  # the table's first bytes: only those blobs get a look
                k = m.start()
                if not quiet[p[k << 5] << 4 | p[(k << 5) + 1] >> 4]:
                    old.discard(k)
        size = old.total(self._table.sizes, ()) + sum(self._other_sizes[-k - 1] for k in others_old)
        old.update(others_old)
        return (old if isinstance(keys, IndexSet) else set(old)), size

    def union(self, groups: Iterable[Collection[BlobKey]]) -> IndexSet:
        """The keys any of ``groups`` (versions' blobs, as table indices) names."""
        out = IndexSet.empty(*self._keys.dims)
        out.mark(cast(Iterable[Sequence[int]], groups))
        return out

    def bytes_of(self, keys: IndexSet) -> int:
        """The total size of ``keys``, a set over this table's keys (``union``, ``keys()``)."""
        assert keys.dims == self._keys.dims
        return keys.total(self._table.sizes, self._other_sizes)

    def _hex(self, k: int) -> str:
        return self._others[-k - 1] if k < 0 else self._table.hex_at(k)

    def keys_of(self, ds: Iterable[Digest]) -> set[int]:
        """The keys of those of ``ds`` that are here."""
        ds = set(ds)
        hexes = {d.hex for d in ds}
        out = {-k - 1 for k, h in enumerate(self._others) if h in hexes}
        out.update(i for i in self._table.indices_of(ds).values() if i in self._keys)
        return out

    def digests(self, keys: Collection[BlobKey]) -> Sequence[Digest]:
        return DigestView(len(keys), lambda: sorted_by_hex(map(self.digest, keys)))

    def digest(self, k: BlobKey) -> Digest:
        assert isinstance(k, int), "a report's blobs are numbered"
        return next(Digest.unchecked([self._hex(k)]))

    def _stat(self, hexdigest: str) -> tuple[int, float]:
        try:
            s = os.stat(self._root + blob_key_hex(hexdigest))
            return s.st_size, s.st_mtime
        except FileNotFoundError:  # gone since the listing: nothing to free, and never old enough
            return 0, math.inf


class DigestView(Sequence[Digest]):
    """A plan's blobs as digests sorted by hex, listed only when asked for: a dry run and `cas du`
    only count them (999k digests sorted or filtered took 0.85 s of a 1M-blob `gc --dry-run`)."""

    def __init__(self, n: int, make: Callable[[], list[Digest]]) -> None:
        self._n = n
        self._make: Callable[[], list[Digest]] | None = make  # dropped once made: the state it holds goes with it
        self._sorted: list[Digest] | None = None

    def _all(self) -> list[Digest]:
        if self._sorted is None:
            assert self._make is not None
            with bulk():  # 1M new Digests would set the cyclic collector off again and again
                self._sorted, self._make = self._make(), None
            assert len(self._sorted) == self._n, "a plan's blobs changed after it was made"
        return self._sorted

    def __getitem__(self, i):
        return self._all()[i]

    def __len__(self) -> int:
        return self._n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"DigestView({len(self)} blobs)"


def blob_table(store: Store, table: Table, now: float) -> BlobTable:
    """The store's blobs for a report, listed through the listing cache (store/listing.py)."""
    return BlobTable(str(store.layout.root), table, listing.list_blobs(store, table, now))


class ListedBlobs(_Blobs, Mapping[str, tuple[int, float]]):
    """GC's read of the store's blobs: every one by its name, its size from the manifests that
    name it (a blob holds what its digest names), and a stat only of those no manifest read names
    (``settle``) and of those the plan might free whose fresh marks do not already show them old
    (``older_than``, then ``stats``): a GC that frees little stats little, and one that frees
    blobs nobody has made fresh for long stats them only in its sweep (1M stats were ~5 s of
    `gc --dry-run` at 1M blobs). A stat'ed blob's size and mtime
    are packed into one int (a third of a tuple of them). Blobs are keyed by their hex, and the
    hexes manifests name are interned to the listed ones, so that a blob 1,000 versions list is
    one object, not 1,000, and a plan's set operations find each by identity."""

    _NS = (1 << 64) - 1

    def __init__(self, root: str) -> None:
        self._root = root
        self._dir = os.path.join(root, "blobs", "")
        self._canon: dict[str, str] = {}
        self._keys = self._canon.keys()
        # Every listed blob, a directory at a time in hex order, and each blobs/XX directory's
        # slice of it; sorted within each slice when a plan first needs it (``_in_hex_order``).
        self._order: list[str] = []
        self._span: dict[str, tuple[int, int]] = {}
        self._sorted = False
        self._sizes: dict[str, int] = {}  # from the manifests; after ``settle`` only of listed blobs
        self._unlisted: set[str] = set()  # named by a manifest, not listed
        self._sized = 0  # their sum
        self._settled = False
        self._stats: dict[str, int] = {}  # size << 64 | mtime in ns, of the blobs stat'ed
        self.total = 0

    def add(self, sub: str, ds: list[str]) -> None:
        """The blobs of directory ``blobs/<sub>``; directories in hex order."""
        assert not self._span or next(reversed(self._span)) < sub, "directories listed out of hex order"
        start = len(self._order)
        self._order += ds
        self._span[sub] = (start, len(self._order))
        self._canon.update(zip(ds, ds))

    def intern(self, named: Mapping[str, int]) -> tuple[str, ...]:
        """A manifest's blobs as a tuple: a version's 100 blobs in 0.8 KB where a frozenset takes
        4 KB (the plan only iterates them); their sizes kept for ``settle``, by the interned
        hexes (a lookup that finds the very object it holds compares nothing)."""
        assert not self._settled, "interned after settle()"
        found = tuple(map(self._canon.get, named))
        blobs: tuple[str, ...] = found  # type: ignore[assignment]  # unless None is in it:
        if None in found:  # named but not listed (missing, or gone since): kept as named, never counted
            blobs = tuple(b if b is not None else d for b, d in zip(found, named))
            self._unlisted.update(d for d in named if d not in self._canon)
        self._sizes.update(zip(blobs, named.values()))
        return blobs

    def settle(self) -> None:
        """Once every manifest GC reads is interned: the listed blobs none of them sized are
        stat'ed (those that went meanwhile are dropped), and the total is summed."""
        sizes, self._settled = self._sizes, True
        for d in self._unlisted:  # not this store's to count, nor a plan's to free
            del sizes[d]
        unsized = self._keys - sizes.keys()
        with self._dirs() as fd_of:
            for d in unsized:
                try:
                    st = os.stat(d, dir_fd=fd_of(d))
                except FileNotFoundError:  # gone since the listing
                    del self._canon[d]
                    continue
                self._stats[d] = st.st_size << 64 | st.st_mtime_ns
        stats = self._stats
        self._sized = sum(sizes.values())
        self.total = self._sized + sum(stats[d] >> 64 for d in unsized if d in stats)

    @contextmanager
    def _dirs(self) -> Iterator[Callable[[str], int]]:
        """The ``blobs/XX`` directory of a digest hex as a descriptor, each opened once: a stat by
        name relative to it is ~15 % cheaper than one by path."""
        fds: dict[str, int] = {}

        def fd_of(h: str) -> int:
            fd = fds.get(h[:2])
            if fd is None:
                fd = fds[h[:2]] = os.open(self._dir + h[:2], os.O_RDONLY | os.O_DIRECTORY)
            return fd

        try:
            yield fd_of
        finally:
            for fd in fds.values():
                os.close(fd)

    def older_than(self, keys: Collection[str], old_enough: float) -> tuple[set[str], int]:
        """Of the listed blobs a manifest sized. One made fresh by something that does not mark
        is counted here, and the sweep, which stats each blob before and after setting it aside,
        spares it (invariant 7)."""
        if len(keys) < freshmarks.MIN_BLOBS:
            return set(), 0
        sizes = self._sizes
        old = sizes.keys() & keys  # in C; a blob sized after settle() is listed
        span = self._span
        for g, quiet in enumerate(self._quiet(old_enough)):
            if not quiet and (prefix := f"{g:03x}")[:2] in span:  # a fresh group's blobs: a slice of its directory's
                order = self._in_hex_order()
                lo, hi = span[prefix[:2]]
                lo = bisect_left(order, prefix, lo, hi)
                hi = bisect_left(order, prefix + "g", lo, hi)  # "g" sorts after every hex digit
                old.difference_update(order[lo:hi])
        if 2 * len(old) > len(sizes):  # most of them: sum the few left out instead
            return old, self._sized - sum(map(sizes.__getitem__, filterfalse(old.__contains__, sizes)))
        return old, sum(map(sizes.__getitem__, old))

    def digests(self, keys: Collection[BlobKey]) -> Sequence[Digest]:
        hexes = cast("Collection[str]", keys)  # GC's read names blobs by hex

        def make() -> list[Digest]:
            few = 8 * len(hexes) < len(self._order)  # sorting a few is cheaper than a pass over all
            return list(Digest.unchecked(sorted(hexes) if few else (h for h in self._in_hex_order() if h in hexes)))

        return DigestView(len(hexes), make)

    def _in_hex_order(self) -> list[str]:
        """The listing sorted, a directory at a time: a plan's list of most of the store is then
        filtered from it, not sorted (900k of 1M: 0.7 s against 1.1 s), and a mark's group is a
        slice found by bisection. Only once asked: a plan that frees a few sorts just those."""
        if not self._sorted:
            order = self._order
            for lo, hi in self._span.values():
                order[lo:hi] = sorted(order[lo:hi])
            self._sorted = True
        return self._order

    def __getitem__(self, d: str) -> tuple[int, float]:
        for _, size, mtime in self.stats((d,)):
            return size, mtime
        raise KeyError(d)

    def stats(self, keys: Iterable[BlobKey]) -> Iterator[tuple[BlobKey, int, float]]:
        """Each blob not stat'ed yet is stat'ed here, now (later than the listing: a refresh since
        counts), and not kept: the plan asks once per blob. Many of them (an expiring plan asks
        for most of the store) in listing order, a directory at a time: a quarter faster than
        in the order of a set (1M blobs: 3.0 s against 4.0 s)."""
        get, listed, ns = self._stats.get, self._canon, self._NS
        ordered = isinstance(keys, AbstractSet) and len(keys) * 4 > len(listed)
        with self._dirs() as fd_of:
            for k in (d for d in listed if d in keys) if ordered else (k for k in keys if k in listed):
                v = get(k)
                if v is None:
                    h = k
                    try:  # a few (a version the size limit drops): by path, no directory opened for them
                        st = os.stat(h, dir_fd=fd_of(h)) if ordered else os.stat(f"{self._dir}{h[:2]}/{h}")
                    except FileNotFoundError:  # gone since the listing: nothing to free
                        continue
                    yield k, st.st_size, st.st_mtime
                else:
                    yield k, v >> 64, (v & ns) / 1e9


def listed_blobs(store: Store) -> ListedBlobs:
    """Every blob by its name, a fan-out directory at a time, without a stat (``ListedBlobs``)."""
    out = ListedBlobs(str(store.layout.root))
    for sub in sorted(store.blob_dirs()):
        out.add(sub, store.blob_names(sub))
    return out


def blob_stats(blobs: Mapping[Any, tuple[int, float]], keys: Iterable[BlobKey]) -> Iterator[tuple[BlobKey, int, float]]:
    """(key, size, mtime) of each of ``keys`` that ``blobs`` holds."""
    if isinstance(blobs, _Blobs):
        return blobs.stats(keys)
    return ((k, *blobs[k]) for k in keys if k in blobs)


def blobs_older_than(blobs: Mapping[Any, tuple[int, float]], keys: Collection[BlobKey],
                     old_enough: float) -> tuple[MutableSet, int]:
    """``older_than`` of a state read from a store; a plain mapping (a test's state) has no marks."""
    return blobs.older_than(keys, old_enough) if isinstance(blobs, _Blobs) else (set(), 0)


def blob_digests(blobs: Mapping[Any, tuple[int, float]], keys: Collection[BlobKey]) -> Sequence[Digest]:
    """A plan's blobs as digests sorted by hex; a plain mapping (a test's state) holds digests."""
    return blobs.digests(keys) if isinstance(blobs, _Blobs) else tuple(sorted_by_hex(keys))


def blobs_union(blobs: Mapping[Any, tuple[int, float]], groups: Iterable[Collection[BlobKey]]) -> AbstractSet:
    """The keys any of ``groups`` holds: a mask over a report's numbered blobs, a set otherwise."""
    return blobs.union(groups) if isinstance(blobs, BlobTable) else set().union(*groups)


def blob_bytes(blobs: Mapping[Any, tuple[int, float]]) -> int:
    return blobs.total if isinstance(blobs, BlobTable | ListedBlobs) else sum(size for size, _ in blobs.values())


@contextmanager
def bulk() -> Iterator[None]:
    """While 100k small objects are built: the cyclic collector would walk them again and again
    (building 90k digests took 3x as long with it on), and they hold no cycles."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            # What was built goes straight to the oldest generation: enabled as it was, the
            # collector's next pass would walk all of it (2M tuples: 0.19 s against 0.1 ms).
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def read_state(store: Store, *, report: bool = False, blobs: bool = True, list_blobs: bool = True,
               probe: Iterable[tuple[str, str]] = (), aside: Mapping[Digest, Path] | None = None,
               summarize: bool = True) -> StoreState:
    """The state GC decides from. ``report`` (`cas list`, `cas du`): manifest contents from their
    summaries (store/summaries.py), and blob mtimes only where asked; ``blobs=False`` (`cas list`):
    no blobs at all, for what needs only the versions. ``probe``: tags to open by name besides
    those the listing shows (the sweep's re-mark: a NAS client may list a directory from its cache);
    ``aside``: manifests the sweep has set aside, read from where they are now; ``list_blobs=False``
    (the sweep's re-mark): what is reachable, without listing and stat'ing the store's blobs;
    ``summarize=False`` (a report without blobs whose figures are cached): no manifest and no
    summary read at all, so none is found unreadable either."""
    assert summarize or (report and not blobs), "only a report without blobs may skip the summaries"
    with bulk(), readahead.started(str(store.layout.manifests), not report and blobs and list_blobs) as ahead:
        return _read_state(store, report, blobs, probe, aside or {}, list_blobs, summarize, ahead)


def _read_state(store: Store, report: bool, blobs: bool, probe: Iterable[tuple[str, str]] = (),
                aside: Mapping[Digest, Path] = {}, list_blobs: bool = True,  # noqa: B006 (never mutated)
                summarize: bool = True, ahead: readahead.Readahead | None = None) -> StoreState:
    now = store.now()
    # Blobs are listed before the refs are read, as a writer publishes them in the other order.
    on_disk: Mapping = {}  # Digest -> (size, mtime); a report's BlobTable: table index -> the same
    loaded = load(store) if report and summarize else None  # the summaries' table: the listing numbers blobs by it
    blob_listing = None
    if loaded is not None and blobs:
        blob_listing = listing.list_blobs(store, loaded[0], now)
    elif blobs and list_blobs:
        on_disk = listed_blobs(store)
    manifests = store.manifest_mtimes()
    for d, p in aside.items():
        try:
            manifests.setdefault(d, p.stat().st_mtime)
        except FileNotFoundError:
            continue
    # Leases after the objects, refs after the leases: a writer leases before it writes and tags
    # before it lets go, so whatever was listed is leased or tagged when looked at. (The other
    # way round, an add finishing between the two reads made GC plan its objects for deletion,
    # and only the sweep's re-mark put them back.)
    scan = live_leases(store, now)
    roots = project_roots(store)
    projects = roots.manifests
    also: dict[str, list[str]] = {}
    for model, version in probe:
        also.setdefault(model, []).append(version)
    listed = store.refs.models()
    models = {model: store.refs.tags(model, also.get(model, ())) for model in sorted({*listed, *also})}
    models = {model: tags for model, tags in models.items() if tags or model in listed}
    histories = {model: store.refs.history(model) for model in models}
    partials = {model: store.refs.partials(model) for model in models}
    needed = {md for tags in models.values() for md in tags.values()}
    needed |= {md for parts in partials.values() for md in parts.values()}
    # GC must read every current pointer's manifest (it fails closed); a report skips a missing one.
    needed |= {c.manifest for h in histories.values()
               if (c := current_of(h)) is not None and (not report or c.manifest in manifests)}
    needed |= {md for md in projects if md in manifests}
    cache: dict[Digest, Collection[BlobKey]] = {}  # each manifest's blobs
    known: dict[Digest, Summary] = {}
    errors: dict[Digest, CasError] = {}
    if loaded is not None:
        known, errors = summaries(store, needed, loaded)
        if blob_listing is not None:  # after the summaries: a manifest summarized now may name a listed blob
            on_disk = BlobTable(str(store.layout.root), loaded[0], blob_listing)
    else:  # GC decides from the manifests themselves
        if ahead is not None:  # those a helper read meanwhile (read_state: only for GC's own listing), as they come
            assert isinstance(on_disk, ListedBlobs) and not aside
            wanted = {md.hex: md for md in needed}
            for mh, named in ahead.records():
                if (md := wanted.pop(mh, None)) is not None:
                    cache[md] = on_disk.intern(named)
        for md in needed:
            if md in cache:
                continue
            try:
                # Listed a moment ago or not: this GC or another may hold it aside now.
                named = store.manifest_blobs(md, aside.get(md)) if blobs else {}
                cache[md] = on_disk.intern(named) if isinstance(on_disk, ListedBlobs) else frozenset(Digest.unchecked(named))
            except CasError as e:
                errors[md] = e
        if isinstance(on_disk, ListedBlobs):
            on_disk.settle()
    versions = []
    extra: dict[Digest, Collection[BlobKey]] = {}
    broken: list[str] = []

    def blobs_of(md: Digest) -> Collection[BlobKey]:
        if md in errors:
            raise errors[md]
        if md not in cache:  # a report's blobs are table indices, as its BlobTable's keys
            cache[md] = known[md].idx if blobs else frozenset()
        return cache[md]

    for model, tags in models.items():
        history = histories[model]
        cur = current_of(history)
        marks = Marks(marked(store, model, "pins"), marked(store, model, "keep"), marked(store, model, "used"),
                      marked(store, model, "released"))
        for v, md in tags.items():
            try:
                b = blobs_of(md)
            except CasError as e:
                if isinstance(e, NotFound) and store.refs.get_tag(model, v) != md:
                    continue  # the version was removed since its tag was read (by another GC: tag, then manifest)
                broken.append(f"{model}@{v} left out: its tag {store.layout.tag(model, v)} names manifest {md}: {e}")
                continue
            versions.append(version_state(model, v, md, b, history, marks, projects, manifests.get(md, 0.0)))
        for v, md in partials[model].items():
            try:
                b = blobs_of(md)
            except CasError as e:
                if isinstance(e, NotFound) and store.refs.get_partial(model, v) != md:
                    continue  # removed since it was read, as a tag above
                broken.append(f"{model}@{v} (partial) left out: {store.layout.partial(model, v)} names manifest {md}: {e}")
                continue
            if v in tags:  # the whole version is here too: its part is kept beside it (a subset of its blobs)
                extra[md] = b
            else:
                versions.append(replace(version_state(model, v, md, b, history, marks, projects,
                                                      manifests.get(md, 0.0)), partial=True))
        if (cur is not None and cur.manifest not in tags.values() and cur.manifest not in partials[model].values()
                and cur.manifest in needed):
            try:
                extra[cur.manifest] = blobs_of(cur.manifest)
            except CasError as e:
                broken.append(f"{model}'s current version {cur.version} names manifest {cur.manifest}: {e}")
    for md in projects:
        if md in manifests and md not in extra:
            try:
                extra[md] = blobs_of(md)
            except CasError as e:
                broken.append(f"manifest {md}, locked by {', '.join(projects[md])}: {e}")
    if not report:
        fail_closed(broken, roots.unreadable, scan)
    leased: frozenset[BlobKey] = frozenset(scan.held)  # manifests and blobs by digest
    if isinstance(on_disk, BlobTable):  # and a report's blobs by their keys too
        leased |= on_disk.keys_of(scan.held)
    elif isinstance(on_disk, ListedBlobs):  # and GC's by their hex
        leased |= {d.hex for d in scan.held}
    return StoreState(now, on_disk, manifests, tuple(versions), leased, extra, known, tuple(broken),
                      tuple(junk_files(store, now)))


def fail_closed(broken: list[str], roots: list[tuple[str, str]], scan: LeaseScan) -> None:
    """GC stops on anything it must keep but cannot read (invariant 7): a manifest a ref or project
    names, a project registration, a live lease. Deleting around it could delete what it keeps."""
    problems = list(broken) + [f"project registration {p}: {why}" for p, why in roots]
    problems += [f"live lease {p}: {why}" for p, why in scan.unreadable]
    if problems:
        raise CorruptStore(
            "gc stopped, nothing was deleted: it cannot read what it must keep:\n  " + "\n  ".join(problems)
            + "\n`cas doctor` says how to repair or drop each (a missing or corrupt manifest: `cas fetch M@V` "
              "brings it back, `cas rm M@V --force` drops the version)")


@dataclass(frozen=True)
class Marks:
    """A model's pin, keep and used markers (store/markers.py): version -> mtime."""

    pins: Mapping[str, float]
    keeps: Mapping[str, float]
    used: Mapping[str, float]
    released: Mapping[str, float] = field(default_factory=dict)


def version_state(model: str, version: str, md: Digest, blobs: Collection[BlobKey], history: list,
                  marks: Marks, projects: Mapping[Digest, list[str]], manifest_mtime: float) -> VersionState:
    """One version as GC judges it, from what was read of its model: the same for the plan and
    for the sweep's last-moment re-check (gc/sweep.py)."""
    order = [s.version for s in reversed(undo_stack(history))] + [s.version for s in reversed(history)
                                                                   if s.action != UNSET]
    recency: dict[str, int] = {}
    for v in order:
        recency.setdefault(v, len(recency))
    cur = current_of(history)
    reasons = []
    if cur is not None and cur.version == version:
        reasons.append("current")
    if version in marks.pins:
        reasons.append("pinned")
    if md in projects:
        reasons.append("locked by " + ", ".join(projects[md]))
    last = max(marks.used.get(version, 0.0), manifest_mtime)
    return VersionState(model, version, md, blobs, last, recency.get(version), tuple(reasons),
                        marks.keeps.get(version), version in marks.released)


def read_version(store: Store, model: str, version: str, projects: Mapping[Digest, list[str]]) -> VersionState | None:
    """``model@version`` re-read now, each file by its name (a NAS client may serve a directory
    listing from its cache, never a file it opens): None if its tag is gone. Its blobs are not read
    (the sweep re-marks them separately)."""
    md = store.refs.get_tag(model, version)
    partial = md is None
    if partial:
        md = store.refs.get_partial(model, version)
    if md is None:
        return None
    marks = Marks(*(marked_one(store, model, version, kind) for kind in ("pins", "keep", "used", "released")))
    try:
        mtime = store.layout.manifest(md).stat().st_mtime
    except FileNotFoundError:
        mtime = 0.0
    return replace(version_state(model, version, md, frozenset(), store.refs.history(model), marks, projects, mtime),
                   partial=partial)
