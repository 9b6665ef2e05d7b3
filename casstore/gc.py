"""Garbage collection: a pure plan from the store's state and a policy, then one careful run.

Roots (never collected): each model's current version, pinned versions (``refs/M/pins/V``),
rollback roots kept by updates (``refs/M/keep/V``), the last ``keep_last`` versions of each
model's history, versions used within ``retention_days`` (``refs/M/used/V`` mtimes), versions
locked by registered projects, and everything a live lease lists.

Phase 1 removes what no version, root or lease references. Phase 2, while the store is over
``max_size``, removes whole non-root versions, least recently used first. Nothing younger than
the grace period (by the store's own clock: file mtimes on its filesystem) is deleted.

Execution deletes refs first and blobs last (docs/architecture.md, invariant 3), re-marks from the live state
just before deleting objects, and deletes a blob by renaming it aside, checking once more that
no writer refreshed it or leased it meanwhile, and only then unlinking it — otherwise it is put
back. A writer that finds a blob present refreshes its mtime, which is what makes that check
sufficient without a lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import HOST, READ_ONLY, fsync_dir, link_no_replace, process_alive, temp_name
from .digest import Digest
from .errors import CasError, InvalidInput
from .history import undo_stack
from .leases import live_leases
from .manifest import Manifest
from .names import validate_version
from .store import Store

DAY = 86400.0
DEFAULT_GRACE = 3600.0


# The pure part ----------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Policy:
    max_size: int | None = None
    retention_days: float | None = None
    keep_last: int = 1
    grace: float = DEFAULT_GRACE

    @classmethod
    def from_config(cls, *, max_size: int | str | None = None, retention_days: float | None = None,
                    keep_last: int | None = None, grace: float | None = None) -> "Policy":
        """The policy `cas gc`, `cas list` and `cas du` use: arguments given, else the user
        config's ``[gc]``, else no size limit, 30 days' retention, the last 2, one hour's grace."""
        from .config import load_user_config
        from .sizes import parse_size

        cfg = load_user_config().get("gc", {})
        ms = max_size if max_size is not None else cfg.get("max_size")
        return cls(
            max_size=parse_size(str(ms)) if ms is not None else None,
            retention_days=float(retention_days if retention_days is not None else cfg.get("retention_days", 30)),
            keep_last=int(keep_last if keep_last is not None else cfg.get("keep_last", 2)),
            grace=float(grace if grace is not None else cfg.get("grace", DEFAULT_GRACE)),
        )


@dataclass(frozen=True)
class Plan:
    delete_versions: tuple[tuple[str, str, Digest], ...]
    delete_manifests: tuple[Digest, ...]
    delete_blobs: tuple[Digest, ...]
    bytes_before: int
    bytes_freed: int
    kept: tuple[tuple[str, tuple[str, ...]], ...]  # "model@version", reasons
    shortfall: int  # bytes still over max_size after the plan (0 if within, or no limit)
    young_spared: int  # unreferenced blobs left because they are within the grace period
    delete_junk: tuple[str, ...] = ()  # quarantined and abandoned partial files past the grace period

    @property
    def bytes_after(self) -> int:
        return self.bytes_before - self.bytes_freed

    def to_json(self) -> dict:
        return {
            "delete_versions": [f"{m}@{v}" for m, v, _ in self.delete_versions],
            "delete_manifests": len(self.delete_manifests),
            "delete_blobs": len(self.delete_blobs),
            "bytes_before": self.bytes_before,
            "bytes_freed": self.bytes_freed,
            "bytes_after": self.bytes_after,
            "kept": {label: list(reasons) for label, reasons in self.kept},
            "shortfall": self.shortfall,
            "young_spared": self.young_spared,
            "delete_junk": len(self.delete_junk),
        }


def root_reasons(v: VersionState, policy: Policy, now: float) -> tuple[str, ...]:
    reasons = list(v.marks)
    if v.kept_since is not None and (policy.retention_days is None or now - v.kept_since < policy.retention_days * DAY):
        reasons.append("rollback root")
    if v.recency is not None and v.recency < policy.keep_last:
        reasons.append(f"among the last {policy.keep_last} used")
    if policy.retention_days is not None and now - v.last_used < policy.retention_days * DAY:
        reasons.append(f"used within {policy.retention_days:g} days")
    return tuple(reasons)


def plan(state: StoreState, policy: Policy) -> Plan:
    """What to delete: unreferenced objects and files past the grace period; with a retention
    period, every version that is no root (unused for that long); then, while over
    ``max_size``, the least recently used versions that are no root."""
    old_enough = state.now - policy.grace
    total = sum(size for size, _ in state.blobs.values()) + sum(size for _, size, _ in state.junk)
    delete_junk = tuple(sorted(path for path, _, mtime in state.junk if mtime < old_enough))
    refcount: dict[Digest, int] = {}
    live_manifests = set(state.extra) | {d for d in state.leased if d in state.manifests}
    for v in state.versions:
        live_manifests.add(v.manifest)
        for b in v.blobs:
            refcount[b] = refcount.get(b, 0) + 1
    for blobs in state.extra.values():
        for b in blobs:
            refcount[b] = refcount.get(b, 0) + 1

    def collectable(b: Digest) -> bool:
        return b in state.blobs and b not in state.leased and state.blobs[b][1] < old_enough

    delete_blobs = {b for b in state.blobs if refcount.get(b, 0) == 0 and collectable(b)}
    young = sum(1 for b in state.blobs if refcount.get(b, 0) == 0 and not collectable(b))
    delete_manifests = {m for m, mtime in state.manifests.items() if m not in live_manifests and mtime < old_enough}
    freed = sum(state.blobs[b][0] for b in delete_blobs) + sum(size for path, size, _ in state.junk
                                                                if path in delete_junk)

    kept = []
    candidates = []
    for v in state.versions:
        reasons = root_reasons(v, policy, state.now)
        if reasons or v.manifest in state.leased:
            kept.append((f"{v.model}@{v.version}", reasons or ("leased by an operation in flight",)))
        else:
            candidates.append(v)
    delete_versions = []
    expire_all = policy.retention_days is not None  # no root means: not used within the retention period
    if policy.max_size is not None or expire_all:
        for v in sorted(candidates, key=lambda v: (v.last_used, v.model, v.version)):  # LRU first
            if not expire_all and total - freed <= policy.max_size:
                break
            delete_versions.append((v.model, v.version, v.manifest))
            if v.manifest not in state.extra and state.manifests.get(v.manifest, 0) < old_enough:
                delete_manifests.add(v.manifest)
            for b in v.blobs:
                refcount[b] -= 1
                if refcount[b] == 0 and collectable(b) and b not in delete_blobs:
                    delete_blobs.add(b)
                    freed += state.blobs[b][0]
    shortfall = max(0, total - freed - policy.max_size) if policy.max_size is not None else 0
    return Plan(tuple(delete_versions), tuple(sorted(delete_manifests)), tuple(sorted(delete_blobs)), total, freed,
                tuple(sorted(kept)), shortfall, young, delete_junk)


# Reading the state -------------------------------------------------------------------------------


def _marks_dir(store: Store, model: str, kind: str) -> Path:
    return store.layout.model_dir(model) / kind


def marked(store: Store, model: str, kind: str) -> dict[str, float]:
    """Versions with a marker file of ``kind`` (pins, keep, used) and the marker's mtime."""
    d = _marks_dir(store, model, kind)
    out = {}
    for name in os.listdir(d) if d.is_dir() else []:
        try:
            out[validate_version(name)] = (d / name).stat().st_mtime
        except (InvalidInput, OSError):
            continue
    return out


def mark(store: Store, model: str, version: str, kind: str) -> None:
    """Create or refresh a marker (a pin, or a "used" time stamp)."""
    d = _marks_dir(store, model, kind)
    p = d / validate_version(version)
    try:
        os.utime(p)
    except FileNotFoundError:
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o664)
        os.close(fd)


def record_use(store: Store, model: str, version: str) -> None:
    """Stamp a version as used now (a retention hint). A store this process can only read (a
    read-only mount, another account's store) is read as it is: no stamp, no error."""
    try:
        mark(store, model, version, "used")
    except OSError as e:
        if e.errno not in READ_ONLY:
            raise


def unmark(store: Store, model: str, version: str, kind: str) -> bool:
    try:
        os.unlink(_marks_dir(store, model, kind) / validate_version(version))
        return True
    except FileNotFoundError:
        return False


def read_state(store: Store) -> StoreState:
    from .project import project_roots

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


def junk_files(store: Store, now: float):
    """Quarantined blobs, and partial downloads whose writer is gone: (path, size, mtime). They
    count against the size limit and go once past the grace period (quarantine: counted from
    when the file was moved there, which its name records)."""
    q = store.layout.quarantine
    for entry in os.scandir(q) if q.is_dir() else []:
        try:
            st = entry.stat(follow_symlinks=False)
            moved = entry.name.split(".")[1]
            yield entry.path, st.st_size, float(moved) if moved.isdigit() else st.st_mtime
        except (FileNotFoundError, IndexError):
            continue
    dl = store.layout.tmp / "downloads"
    for entry in os.scandir(dl) if dl.is_dir() else []:
        try:
            st = entry.stat(follow_symlinks=False)
            writer = entry.name.split(".", 1)[-1].rsplit(".", 1)[0]  # <hex>.<host>.<pid>.<rand>.part
            if abandoned(writer, st.st_mtime, now, 0.0):
                yield entry.path, st.st_blocks * 512, st.st_mtime
        except FileNotFoundError:
            continue


# Running a plan ----------------------------------------------------------------------------------


@dataclass
class GcResult:
    versions: int = 0
    manifests: int = 0
    blobs: int = 0
    bytes_freed: int = 0
    spared: int = 0  # planned but found in use or refreshed at the last check
    cleaned: int = 0  # dead leases and abandoned temp files
    elapsed: float = 0.0

    def to_json(self) -> dict:
        return dict(self.__dict__)


def execute(store: Store, p: Plan, policy: Policy) -> GcResult:
    t0 = time.monotonic()
    res = GcResult()
    for model, version, md in p.delete_versions:
        cur = store.refs.current(model)
        if (store.refs.get_tag(model, version) != md or (cur is not None and cur.version == version)
                or version in marked(store, model, "pins")):
            res.spared += 1
            continue
        store.refs.delete_tag(model, version)
        for kind in ("used", "keep"):
            unmark(store, model, version, kind)
        res.versions += 1
    # Mark again from what is live now: refs and leases may have changed since the plan.
    now_state = read_state(store)
    live_manifests = {v.manifest for v in now_state.versions} | set(now_state.extra)
    reachable = set(now_state.leased)
    for v in now_state.versions:
        reachable |= v.blobs
    for blobs in now_state.extra.values():
        reachable |= blobs
    old_enough = now_state.now - policy.grace
    for md in p.delete_manifests:
        path = store.layout.manifest(md)
        try:
            if md in live_manifests or md in now_state.leased or path.stat().st_mtime >= old_enough:
                res.spared += 1
                continue
            os.unlink(path)
            res.manifests += 1
        except FileNotFoundError:
            continue
        view = store.layout.view(md)
        if view.is_dir():
            from .materialize import remove_tree

            remove_tree(view)
    trash = store.layout.tmp / "gc-trash"
    trash.mkdir(exist_ok=True)
    recover_trash(store, reachable | set(live_leases(store)[0]), old_enough)
    for d in p.delete_blobs:
        if d in reachable:
            res.spared += 1
            continue
        final = store.blob_path(d)
        aside = trash / f"{d.hex}.{temp_name()}"
        try:
            if final.stat().st_mtime >= old_enough:  # refreshed since the re-mark: do not even move it
                res.spared += 1
                continue
            os.rename(final, aside)
        except FileNotFoundError:
            continue
        held, _ = live_leases(store)
        try:
            st = aside.stat()
        except FileNotFoundError:
            continue
        if d in held or st.st_mtime >= old_enough:  # a writer refreshed or leased it meanwhile
            if not link_no_replace(aside, final):
                os.unlink(aside)
            res.spared += 1
            continue
        os.unlink(aside)
        res.blobs += 1
        res.bytes_freed += st.st_size
    still_junk = {path: (size, mtime) for path, size, mtime in now_state.junk}
    for path in p.delete_junk:  # only what is still junk (a partial may have been adopted since)
        if path in still_junk and still_junk[path][1] < old_enough:
            try:
                os.unlink(path)
                res.bytes_freed += still_junk[path][0]
                res.cleaned += 1
            except FileNotFoundError:
                pass
    res.cleaned += clean(store, policy)
    res.elapsed = time.monotonic() - t0
    return res


def recover_trash(store: Store, reachable: set[Digest], old_enough: float) -> None:
    """Put back blobs a GC set aside and was killed before deciding on (if anything needs them)."""
    trash = store.layout.tmp / "gc-trash"
    for entry in os.scandir(trash) if trash.is_dir() else []:
        try:
            d = Digest(entry.name.split(".", 1)[0])
            if d in reachable or entry.stat().st_mtime >= old_enough:
                if not link_no_replace(Path(entry.path), store.blob_path(d)):
                    os.unlink(entry.path)
        except (InvalidInput, FileNotFoundError):
            continue


def abandoned(name: str, mtime: float, now: float, grace: float) -> bool:
    """Is a temp file's writer gone? Names carry host and pid (atomic.temp_name): on this host
    the pid tells; from another host, only a long silence does."""
    parts = name.removesuffix(".tmp").removesuffix(".json").rsplit(".", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[0].endswith(HOST):
        return process_alive(HOST, int(parts[1])) is False
    return now - mtime > max(grace, DAY)


def clean(store: Store, policy: Policy) -> int:
    """Remove dead leases and temp files whose writers are gone."""
    now = store.now()
    _, dead = live_leases(store, now)
    n = 0
    for p in dead:
        try:
            os.unlink(p)
            n += 1
        except FileNotFoundError:
            pass
    tmp = store.layout.tmp
    for entry in os.scandir(tmp):
        try:
            if not abandoned(entry.name, entry.stat(follow_symlinks=False).st_mtime, now, policy.grace):
                continue
            if entry.is_file(follow_symlinks=False) and entry.name.endswith(".tmp"):
                os.unlink(entry.path)
                n += 1
            elif entry.is_dir(follow_symlinks=False) and entry.name.startswith("view."):
                from .materialize import remove_tree

                remove_tree(Path(entry.path))
                n += 1
        except FileNotFoundError:
            pass
    d = tmp / "gc-trash"  # partial downloads and quarantine are planned as junk (junk_files)
    for entry in os.scandir(d) if d.is_dir() else []:
        try:
            mtime = entry.stat().st_mtime
            if abandoned(entry.name.split(".", 1)[-1], mtime, now, policy.grace) and now - mtime > policy.grace:
                os.unlink(entry.path)
                n += 1
        except FileNotFoundError:
            pass
    fsync_dir(tmp)
    return n


def store_size(store: Store) -> int:
    return sum(p.stat().st_size for _, p in store.iter_blobs())
