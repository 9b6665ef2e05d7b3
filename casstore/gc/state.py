"""What GC decides from: the store read once into plain values (``StoreState``)."""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from casstore.errors import CasError, CorruptStore
from casstore.gc.housekeeping import junk_files
from casstore.model.digest import Digest
from casstore.model.history import UNSET, current_of, undo_stack
from casstore.model.keys import blob_key
from casstore.store import listing
from casstore.store.leases import LeaseScan, live_leases
from casstore.store.markers import marked, marked_one
from casstore.store.objects import Store
from casstore.store.roots import project_roots
from casstore.store.summaries import Summary, Table, load, summaries


@dataclass(frozen=True)
class VersionState:
    model: str
    version: str
    manifest: Digest
    blobs: frozenset[Digest]  # empty when the state was read without blobs (`cas list`)
    last_used: float
    recency: int | None  # 0: current; 1: the one before it in the history; None: never current
    marks: tuple[str, ...] = ()  # current, pinned, project: roots whatever the policy
    kept_since: float | None = None  # a rollback root left by `cas update`: a root within retention
    released: bool = False  # left by an aggressive update: no recency or retention protection
    partial: bool = False  # a selective fetch's part of the version (refs/M/partial/V)


@dataclass(frozen=True)
class StoreState:
    now: float
    blobs: Mapping[Digest, tuple[int, float]]  # size, mtime
    manifests: Mapping[Digest, float]  # mtime of every manifest file
    versions: tuple[VersionState, ...]
    leased: frozenset[Digest] = frozenset()
    extra: Mapping[Digest, frozenset[Digest]] = field(default_factory=dict)  # manifests rooted otherwise -> blobs
    summaries: Mapping[Digest, Summary] = field(default_factory=dict, compare=False, repr=False)  # for du/list
    broken: tuple[str, ...] = ()  # tags whose manifest is missing or unreadable (verify reports them)
    junk: tuple[tuple[str, int, float], ...] = ()  # quarantined blobs, abandoned partials: path, size, mtime


class BlobTable(Mapping[Digest, tuple[int, float]]):
    """The store's blobs for a report: listed by name (store/listing.py), sizes taken from the
    manifest summaries where they know the blob, the rest stat'ed; mtimes stat'ed only when a plan
    asks, so `cas du` on 100k blobs stats only the blobs it might free."""

    def __init__(self, root: str, listed: listing.Listed) -> None:
        self._root = os.path.join(root, "")
        self._present = listed.blobs
        self._stats: dict[Digest, tuple[int, float]] = {}
        self.total = listed.table_bytes + sum(self._stat(d)[0] for d in listed.others)

    def __getitem__(self, d: Digest) -> tuple[int, float]:
        try:
            return self._stats[d]
        except KeyError:
            if d not in self._present:
                raise
            return self._stat(d)

    def _stat(self, d: Digest) -> tuple[int, float]:
        try:
            s = os.stat(self._root + blob_key(d))
            st = (s.st_size, s.st_mtime)
        except FileNotFoundError:  # gone since the listing: nothing to free, and never old enough
            st = (0, math.inf)
        self._stats[d] = st
        return st

    def __iter__(self) -> Iterator[Digest]:
        return iter(self._present)

    def __len__(self) -> int:
        return len(self._present)

    def __contains__(self, d: object) -> bool:
        return d in self._present

    def keys(self):  # a set, so that a plan's set operations on 100k blobs stay in C
        return self._present


def blob_table(store: Store, table: Table, now: float) -> BlobTable:
    """The store's blobs for a report, listed through the listing cache (store/listing.py) as
    ``table``'s own digest objects where it has them: the report's set operations then match 100k
    blobs by identity (3-4x faster than by value)."""
    return BlobTable(str(store.layout.root), listing.list_blobs(store, table, now))


def blob_bytes(blobs: Mapping[Digest, tuple[int, float]]) -> int:
    return blobs.total if isinstance(blobs, BlobTable) else sum(size for size, _ in blobs.values())


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
            gc.enable()


def read_state(store: Store, *, report: bool = False, blobs: bool = True, list_blobs: bool = True,
               probe: Iterable[tuple[str, str]] = (), aside: Mapping[Digest, Path] | None = None) -> StoreState:
    """The state GC decides from. ``report`` (`cas list`, `cas du`): manifest contents from their
    summaries (store/summaries.py), and blob mtimes only where asked; ``blobs=False`` (`cas list`):
    no blobs at all, for what needs only the versions. ``probe``: tags to open by name besides
    those the listing shows (the sweep's re-mark: a NAS client may list a directory from its cache);
    ``aside``: manifests the sweep has set aside, read from where they are now; ``list_blobs=False``
    (the sweep's re-mark): what is reachable, without listing and stat'ing the store's blobs."""
    with bulk():
        return _read_state(store, report, blobs, probe, aside or {}, list_blobs)


def _read_state(store: Store, report: bool, blobs: bool, probe: Iterable[tuple[str, str]] = (),
                aside: Mapping[Digest, Path] = {}, list_blobs: bool = True) -> StoreState:  # noqa: B006 (never mutated)
    now = store.now()
    # Blobs are listed before the refs are read, as a writer publishes them in the other order.
    on_disk: Mapping[Digest, tuple[int, float]] = {}
    stats: dict[Digest, tuple[int, float]] = {}
    loaded = load(store) if report else None  # the summaries' table: the listing reuses its digests
    if loaded is not None and blobs:
        on_disk = blob_table(store, loaded[0], now)
    elif blobs and list_blobs:
        on_disk = stats
        root = str(store.layout.root)
        for d in store.blob_digests():
            try:
                st = os.stat(os.path.join(root, blob_key(d)))  # no Path per blob: 1/3 of a 100k-blob read
            except FileNotFoundError:
                continue
            stats[d] = (st.st_size, st.st_mtime)
    manifests = {}
    for d in store.iter_manifests():
        try:
            manifests[d] = store.layout.manifest(d).stat().st_mtime
        except FileNotFoundError:
            continue
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
    cache: dict[Digest, frozenset[Digest]] = {}  # each manifest's blobs
    known: dict[Digest, Summary] = {}
    errors: dict[Digest, CasError] = {}
    if loaded is not None:
        known, errors = summaries(store, needed, loaded)
    else:  # GC decides from the manifests themselves
        for md in needed:
            try:
                # Listed a moment ago or not: this GC or another may hold it aside now.
                cache[md] = store.manifest_blobs(md, aside.get(md)) if blobs else frozenset()
            except CasError as e:
                errors[md] = e
    versions = []
    extra: dict[Digest, frozenset[Digest]] = {}
    broken: list[str] = []

    def blobs_of(md: Digest) -> frozenset[Digest]:
        if md in errors:
            raise errors[md]
        if md not in cache:
            cache[md] = frozenset(known[md].blobs) if blobs else frozenset()
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
                broken.append(f"{model}@{v} left out: its tag {store.layout.tag(model, v)} names manifest {md}: {e}")
                continue
            versions.append(version_state(model, v, md, b, history, marks, projects, manifests.get(md, 0.0)))
        for v, md in partials[model].items():
            try:
                b = blobs_of(md)
            except CasError as e:
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
    return StoreState(now, on_disk, manifests, tuple(versions), frozenset(scan.held), extra, known, tuple(broken),
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


def version_state(model: str, version: str, md: Digest, blobs: frozenset[Digest], history: list,
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
