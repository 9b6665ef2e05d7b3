"""What `cas list` and `cas du` need of each manifest (its file count and its distinct blobs with
their sizes), cached in one file of the store, ``cache/manifest-summaries``, so that they do not
parse every manifest of every version each time.

A manifest never changes (its name is its digest), so an entry never goes stale: it is missing
(then the manifest is parsed and the file rewritten) or its manifest is gone (dropped at the next
rewrite). Concurrent rewrites are harmless: each renames a complete file over the last. The cache
only feeds reports; GC decides from the manifests themselves (docs/architecture.md, invariant 3).
An unreadable cache costs a parse, never an error; a read-only store's is kept on this machine
(store/cachefile.py).

The file holds every distinct blob once (32-byte digests in one string, and sizes), and each
manifest lists its blobs by index; sizes and indices are packed in bytes (store/cachefile.py).
Summaries refer to that ``Table`` the same way, so `cas list` on 1,000 versions counts shared
blobs with integers in C-level loops and never builds a ``Digest`` per blob.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Iterable, Mapping, MutableSequence
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter

from casstore.errors import CasError
from casstore.model.digest import Digest
from casstore.model.manifest import Manifest
from casstore.store import cachefile
from casstore.store.indexset import IndexSet

FILE = "cache/manifest-summaries"
_FORMAT = 2  # 1 held the sizes and indices as lists of ints


class Table:
    """Distinct blobs by index: what makes summaries comparable with each other. Held as 32-byte
    digests (``raw_at``), a ``Digest`` each only if asked for (``digests``): at 1M blobs the list
    of Digests and an index over them took ~190 MB, the bytes ~100 MB with their index."""

    def __init__(self, packed: bytes = b"", sizes: MutableSequence[int] | None = None) -> None:
        self._packed = packed  # 32 bytes per blob, for those read from the file
        self._added: list[bytes] = []  # 32 bytes each, for those ``add`` appended since
        self.sizes: MutableSequence[int] = sizes if sizes is not None else array("Q")
        self._digests: list[Digest] | None = None
        self._index: dict[bytes, int] | None = None  # raw digest -> index, made by the first ``add``

    @property
    def digests(self) -> list[Digest]:
        if self._digests is None:
            h = self.packed.hex()  # valid hex by construction: no per-digest check needed
            self._digests = list(Digest.unchecked([h[i:i + 64] for i in range(0, len(h), 64)]))
        return self._digests

    @property
    def packed(self) -> bytes:
        """Every digest, 32 bytes each, in index order."""
        if self._added:
            self._packed += b"".join(self._added)
            self._added = []
        return self._packed

    def __len__(self) -> int:
        return len(self.sizes)

    def raw_at(self, i: int) -> bytes:
        n = len(self._packed) // 32
        return self._packed[32 * i:32 * i + 32] if i < n else self._added[i - n]

    def hex_at(self, i: int) -> str:
        """Blob ``i``'s digest hex, without making the ``digests`` list (a report on 1M blobs)."""
        if self._digests is not None:
            return self._digests[i].hex
        return self.raw_at(i).hex()

    def raw_index(self) -> dict[bytes, int]:
        """Raw digest -> index (made once; ``add`` keeps it)."""
        if self._index is None:
            self._index = self.raw_indices()
        return self._index

    def raw_indices(self, want: Collection[bytes] | None = None, start: int = 0) -> dict[bytes, int]:
        """Raw digest -> index for the table from index ``start`` on, only those in ``want`` if
        given: one pass over the packed digests, no index of the whole table kept."""
        p = self.packed
        if want is None:
            return {p[k:k + 32]: k // 32 for k in range(32 * start, len(p), 32)}
        return {p[k:k + 32]: k // 32 for k in range(32 * start, len(p), 32) if p[k:k + 32] in want}

    def indices_of(self, ds: Iterable[Digest]) -> dict[Digest, int]:
        """The index of each of ``ds`` the table holds, without making the ``digests`` list: a
        search of the packed digests each for a few, one pass over them for more (a fetch's
        lease lists a version's every blob; a search takes ~7 ms at 1M blobs)."""
        want = set(ds)
        if self._index is not None:
            index = self._index
            return {d: i for d in want if (i := index.get(bytes.fromhex(d.hex))) is not None}
        if self._digests is not None:
            return {d: i for i, d in enumerate(self._digests) if d in want}
        if len(want) > 8:
            raw = {bytes.fromhex(d.hex): d for d in want}
            return {raw[r]: i for r, i in self.raw_indices(raw).items()}
        p = self.packed
        out = {}
        for d in want:
            raw_d, at = bytes.fromhex(d.hex), 0
            while (at := p.find(raw_d, at)) >= 0:
                if at % 32 == 0:
                    out[d] = at // 32
                    break
                at += 1
        return out

    def hex_indices(self, wanted: bytes) -> Mapping[str, int]:
        """Hex -> index for (at least) the digests in ``wanted`` (32 bytes each) that the table
        holds: one pass over the packed digests when they are few against the table (a listing
        after an add matches a few directories again), ``by_hex`` of the whole table otherwise."""
        if self._digests is not None or len(wanted) // 32 * 8 > len(self):
            return self.by_hex()
        found = self.raw_indices({wanted[k:k + 32] for k in range(0, len(wanted), 32)})
        return {r.hex(): i for r, i in found.items()}

    def by_hex(self) -> dict[str, int]:
        """Hex -> index, for store/listing.py to match blob names to this table (from the packed
        digests when no Digest list is made: 170 bytes a blob fewer)."""
        if self._digests is not None:
            return dict(zip(map(itemgetter(0), self._digests), range(len(self._digests))))
        h = self.packed.hex()
        return dict(zip((h[i:i + 64] for i in range(0, len(h), 64)), range(len(self.sizes))))

    def add(self, m: Manifest) -> Summary:
        return self._add(m, self.raw_index())

    def add_few(self, ms: list[Manifest]) -> list[Summary]:
        """``add`` of a few manifests (a report after an add or a fetch), without an index of the
        whole table (~100 MB at 1M blobs): their digests are found in one pass over it."""
        if self._index is not None or not ms:
            return [self._add(m, self._index or {}) for m in ms]
        found = self.raw_indices({bytes.fromhex(e.digest.hex) for m in ms for e in m.entries})
        return [self._add(m, found) for m in ms]

    def _add(self, m: Manifest, index: dict[bytes, int]) -> Summary:
        idx = []
        for e in m.entries:
            raw = bytes.fromhex(e.digest.hex)
            i = index.get(raw)
            if i is None:
                i = index[raw] = len(self.sizes)
                self.sizes.append(e.size)
                self._added.append(raw)
                if self._digests is not None:
                    self._digests.append(e.digest)
            idx.append(i)
        return Summary(len(m.entries), array("I", dict.fromkeys(idx)), self)


@dataclass(frozen=True)
class Summary:
    files: int
    idx: array = field(hash=False)  # of "I" (unhashable): each distinct blob once, as its index in ``table``
    table: Table = field(repr=False, compare=False)

    @cached_property
    def blobs(self) -> frozenset[Digest]:
        return frozenset(map(self.table.digests.__getitem__, self.idx))


def summaries(store, digests: Iterable[Digest], loaded: tuple[Table, dict[Digest, Summary]] | None = None,
              ) -> tuple[dict[Digest, Summary], dict[Digest, CasError]]:
    """Summaries of ``digests`` over one ``Table``, and the error of each manifest that is missing
    or unreadable. ``loaded``: what ``load`` returned, if the caller read the file already."""
    table, cached = loaded or load(store)
    out: dict[Digest, Summary] = {}
    broken: dict[Digest, CasError] = {}
    few: dict[Digest, Manifest] = {}  # held parsed while they are few against the table
    entries = 0
    for md in set(digests):
        s = cached.get(md)
        if s is None:
            try:
                m = store.get_manifest(md)
            except CasError as e:
                broken[md] = e
                continue
            entries += len(m.entries)
            if entries * 8 <= len(table):
                few[md] = m
                continue
            s = table.add(m)
        out[md] = s
    out.update(zip(few, table.add_few(list(few.values()))))
    if len(out) > len(cached.keys() & out.keys()):  # learned something
        _save(store, table, {**{d: s for d, s in cached.items() if d not in out and store.has_manifest(d)}, **out})
    return out, broken


def summarize(manifests: Mapping[Digest, Manifest]) -> dict[Digest, Summary]:
    """Summaries over a fresh ``Table``, of manifests already parsed."""
    table = Table()
    return {md: table.add(m) for md, m in manifests.items()}


def load(store) -> tuple[Table, dict[Digest, Summary]]:
    """The cached table and summaries; empty ones when the file is missing or unusable."""
    return cachefile.load(store, FILE, _FORMAT, "manifest summaries", _parse) or (Table(), {})


def _parse(obj: dict, raw: bytes) -> tuple[Table, dict[Digest, Summary]]:
    blobs, sizes, manifests = obj["blobs"], cachefile.ints(obj["sizes"], "Q"), obj["manifests"]
    if not isinstance(blobs, bytes) or len(blobs) != 32 * len(sizes) or not isinstance(manifests, dict):
        raise ValueError("malformed blob table")
    table = Table(blobs, sizes)
    out = {}
    n = len(sizes)
    for key, (files, packed) in manifests.items():
        idx = cachefile.ints(packed, "I")  # unsigned: only the upper bound to check
        if type(key) is not bytes or len(key) != 32 or type(files) is not int or files < len(idx) or (idx and max(idx) >= n):
            raise ValueError("malformed entry")
        out[Digest(key.hex())] = Summary(files, idx, table)  # one per manifest: the check is cheap
    return table, out


def _save(store, table: Table, entries: Mapping[Digest, Summary]) -> None:
    """Only the blobs ``entries`` use are written, renumbered if some are not (a first report
    uses them all: no map of 1M indices then, nor a copy of every digest as one string)."""
    used = IndexSet.empty(len(table))  # 1 MB at 1M blobs, where a set of the ints was 32 MiB
    used.mark(s.idx for s in entries.values())
    manifests: dict[bytes, tuple[int, bytes]]
    if len(used) == len(table):
        blobs, sizes = table.packed, table.sizes
        manifests = {bytes.fromhex(md.hex): (s.files, cachefile.packed(s.idx, "I")) for md, s in entries.items()}
    else:
        new: dict[int, int] = {}
        for s in entries.values():
            for i in s.idx:
                new.setdefault(i, len(new))
        blobs, sizes = _packed(table, new), [table.sizes[i] for i in new]
        manifests = {bytes.fromhex(md.hex): (s.files, cachefile.packed(map(new.__getitem__, s.idx), "I"))
                     for md, s in entries.items()}
    del used
    cachefile.save(store, FILE, _FORMAT, "manifest summaries",
                   {"blobs": blobs, "sizes": cachefile.packed(sizes, "Q"), "manifests": manifests})


def _packed(table: Table, order: Iterable[int]) -> bytes:
    return b"".join(map(table.raw_at, order))
