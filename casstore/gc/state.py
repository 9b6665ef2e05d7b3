"""What GC decides from: the store read once into plain values (``StoreState``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from casstore.errors import CasError
from casstore.gc.housekeeping import junk_files
from casstore.model.digest import Digest
from casstore.model.history import undo_stack
from casstore.model.manifest import Manifest
from casstore.store.leases import live_leases
from casstore.store.markers import marked
from casstore.store.objects import Store
from casstore.store.roots import project_roots


@dataclass(frozen=True)
class VersionState:
    model: str
    version: str
    manifest: Digest
    blobs: frozenset[Digest]
    last_used: float
    recency: int | None  # 0: current; 1: the one before it in the history; None: never current
    marks: tuple[str, ...] = ()  # current, pinned, project: roots whatever the policy
    kept_since: float | None = None  # a rollback root left by `cas update`: a root within retention


@dataclass(frozen=True)
class StoreState:
    now: float
    blobs: Mapping[Digest, tuple[int, float]]  # size, mtime
    manifests: Mapping[Digest, float]  # mtime of every manifest file
    versions: tuple[VersionState, ...]
    leased: frozenset[Digest] = frozenset()
    extra: Mapping[Digest, frozenset[Digest]] = field(default_factory=dict)  # manifests rooted otherwise -> blobs
    loaded: Mapping[Digest, Manifest] = field(default_factory=dict, compare=False, repr=False)  # for du/list
    broken: tuple[str, ...] = ()  # tags whose manifest is missing or unreadable (verify reports them)
    junk: tuple[tuple[str, int, float], ...] = ()  # quarantined blobs, abandoned partials: path, size, mtime


def read_state(store: Store) -> StoreState:
    now = store.now()
    blobs = {}
    for d, p in store.iter_blobs():
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        blobs[d] = (st.st_size, st.st_mtime)
    manifests = {}
    for d in store.iter_manifests():
        try:
            manifests[d] = store.layout.manifest(d).stat().st_mtime
        except FileNotFoundError:
            continue
    projects = project_roots(store)
    versions = []
    extra: dict[Digest, frozenset[Digest]] = {}
    cache: dict[Digest, frozenset[Digest]] = {}
    loaded: dict[Digest, Manifest] = {}
    broken: list[str] = []

    def blobs_of(md: Digest) -> frozenset[Digest]:
        if md not in cache:
            loaded[md] = store.get_manifest(md)
            cache[md] = frozenset(loaded[md].blobs())
        return cache[md]

    for model in store.refs.models():
        tags = store.refs.tags(model)
        history = store.refs.history(model)
        order = [s.version for s in reversed(undo_stack(history))] + [s.version for s in reversed(history)]
        recency: dict[str, int] = {}
        for v in order:
            recency.setdefault(v, len(recency))
        cur = history[-1] if history else None
        pins, keeps, used = marked(store, model, "pins"), marked(store, model, "keep"), marked(store, model, "used")
        for v, md in tags.items():
            try:
                b = blobs_of(md)
            except CasError as e:
                broken.append(f"{model}@{v} left out: {e}")  # nothing to keep for it
                continue
            marks = []
            if cur is not None and cur.version == v:
                marks.append("current")
            if v in pins:
                marks.append("pinned")
            if md in projects:
                marks.append("locked by " + ", ".join(projects[md]))
            last = max([used.get(v, 0.0), manifests.get(md, 0.0)])
            versions.append(VersionState(model, v, md, b, last, recency.get(v), tuple(marks), keeps.get(v)))
        if cur is not None and cur.manifest not in tags.values() and cur.manifest in manifests:
            extra[cur.manifest] = blobs_of(cur.manifest)
    for md in projects:
        if md in manifests and md not in extra:
            extra[md] = blobs_of(md)
    leased, _ = live_leases(store, now)
    return StoreState(now, blobs, manifests, tuple(versions), frozenset(leased), extra, loaded, tuple(broken),
                      tuple(junk_files(store, now)))
