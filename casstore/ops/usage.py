"""Space accounting for `cas list` and `cas du`: a pure function of manifests (``usage``), and
the report both commands print (``report``).

"Unique" bytes of a version are those of blobs no other version in the store uses: what
deleting just that version would free. A blob counts once however many files hold it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from casstore.errors import NotFound
from casstore.gc import Plan, Policy, plan, read_state, root_reasons
from casstore.model.digest import Digest
from casstore.model.manifest import Manifest
from casstore.model.names import validate_model


@dataclass(frozen=True)
class VersionUsage:
    model: str
    version: str
    manifest: Digest
    files: int
    size: int  # bytes of its files, duplicates within the version counted once
    unique: int
    shared: int
    current: bool
    last_used: float | None = None
    roots: tuple[str, ...] = ()  # why GC keeps it (empty: collectable when over the limit)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "manifest": str(self.manifest),
            "files": self.files,
            "size": self.size,
            "unique": self.unique,
            "shared": self.shared,
            "current": self.current,
            "last_used": self.last_used,
            "roots": list(self.roots),
        }


@dataclass(frozen=True)
class ModelUsage:
    model: str
    versions: tuple[VersionUsage, ...]
    size: int  # distinct bytes across its versions
    unique: int  # bytes no other model uses

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "size": self.size,
            "unique": self.unique,
            "versions": [v.to_json() for v in self.versions],
        }


def usage(
    versions: Mapping[tuple[str, str], tuple[Digest, Manifest]],
    current: Mapping[str, str],
    details: Mapping[tuple[str, str], tuple[float, tuple[str, ...]]] | None = None,
) -> list[ModelUsage]:
    """``details``: (last used, root reasons) per version, from the GC's view of the store."""
    details = details or {}
    blob_size: dict[Digest, int] = {}
    by_version: dict[Digest, set[tuple[str, str]]] = {}
    by_model: dict[Digest, set[str]] = {}
    for key, (_, m) in versions.items():
        for e in m.entries:
            blob_size[e.digest] = e.size
            by_version.setdefault(e.digest, set()).add(key)
            by_model.setdefault(e.digest, set()).add(key[0])
    out = []
    for model in sorted({k[0] for k in versions}):
        vs = []
        model_blobs: set[Digest] = set()
        for (mdl, ver), (md, m) in sorted(versions.items()):
            if mdl != model:
                continue
            blobs = m.blobs()
            model_blobs |= blobs
            size = sum(blob_size[b] for b in blobs)
            unique = sum(blob_size[b] for b in blobs if len(by_version[b]) == 1)
            last, roots = details.get((mdl, ver), (None, ()))
            vs.append(VersionUsage(mdl, ver, md, len(m.entries), size, unique, size - unique, current.get(mdl) == ver,
                                   last, roots))
        out.append(
            ModelUsage(
                model,
                tuple(vs),
                sum(blob_size[b] for b in model_blobs),
                sum(blob_size[b] for b in model_blobs if len(by_model[b]) == 1),
            )
        )
    return out


@dataclass(frozen=True)
class StoreUsage:
    """`cas list` and `cas du`: per-version usage with the GC's view, and the store's totals."""

    models: list[ModelUsage]
    plan: Plan  # what `cas gc` with ``policy`` would do now
    policy: Policy
    now: float  # the store's clock
    blob_bytes: int
    unreferenced_bytes: int  # blobs no version lists
    junk_bytes: int  # quarantined blobs and abandoned partial downloads
    broken: tuple[str, ...]  # tags left out because their manifest is missing or unreadable


def report(store, model: str | None = None, policy: Policy | None = None) -> StoreUsage:
    """One read of the store (the GC's ``read_state``) serves both the usage and the plan."""
    policy = policy or Policy.from_config()
    state = read_state(store)
    details = {(v.model, v.version): (v.last_used, root_reasons(v, policy, state.now)) for v in state.versions}
    versions = {(v.model, v.version): (v.manifest, state.loaded[v.manifest]) for v in state.versions
                if model is None or v.model == model}
    if model is not None and not versions:
        raise NotFound(f"model {validate_model(model)} is not in the store {store.root}")
    current = {v.model: v.version for v in state.versions if "current" in v.marks}
    referenced = {b for v in state.versions for b in v.blobs}
    return StoreUsage(
        models=usage(versions, current, details),
        plan=plan(state, policy),
        policy=policy,
        now=state.now,
        blob_bytes=sum(size for size, _ in state.blobs.values()),
        unreferenced_bytes=sum(size for d, (size, _) in state.blobs.items() if d not in referenced),
        junk_bytes=sum(size for _, size, _ in state.junk),
        broken=state.broken,
    )
