"""`cas lock` and `cas sync`: resolve cas.toml into cas.lock; fetch and materialise what it says.

Both plan first and act once. `sync --frozen` changes nothing but the store and the model
directories: a cas.lock that disagrees with cas.toml, or a remote whose manifest for a locked
version is not the locked digest, is an error. `sync --offline` uses only the local store and
lists precisely what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import runtime
from .digest import Digest
from .destination import Destination
from .download import Settings
from .errors import Conflict, NotFound
from .fetching import fetch, load_manifest, read_index
from .lockfile import Locked, LockFile
from .manifest import Manifest
from .materialize import checkout
from .project import Project, check_locked_manifest, register_root
from .remotes.base import Remote
from .requirements import Requirement
from .sizes import format_size
from .store import Store


@dataclass
class LockChange:
    model: str
    old: str | None
    new: str | None

    def to_json(self) -> dict:
        return {"model": self.model, "from": self.old, "to": self.new}


async def resolve(remotes: list[Remote], store: Store, model: str, requirement: str, *, prereleases: bool = False) -> Locked:
    index, _ = await read_index(remotes, model)
    version = Requirement.parse(requirement).resolve(index.versions, prereleases=prereleases)
    if version is None:
        raise NotFound(
            f"no published version of {model} satisfies {requirement!r} "
            f"(published: {', '.join(sorted(index.versions)) or 'none'})"
        )
    digest = index.versions[version].manifest
    return Locked.of(requirement, version, digest, await load_manifest(store, remotes, digest, model, version))


async def lock(project: Project, store: Store, remotes: list[Remote], *, upgrade: list[str] | None = None,
               prereleases: bool = False) -> tuple[LockFile, list[LockChange]]:
    """Bring cas.lock in line with cas.toml, re-resolving only what changed (or ``upgrade``)."""
    old = project.read_lock()
    new = LockFile()
    changes = []
    for name, spec in sorted(project.models.items()):
        cur = old.models.get(name)
        if cur is not None and cur.requirement == spec.requirement and name not in (upgrade or []):
            new.models[name] = cur
            continue
        new.models[name] = await resolve(remotes, store, name, spec.requirement, prereleases=prereleases)
        if cur is None or cur.manifest != new.models[name].manifest:
            changes.append(LockChange(name, cur.version if cur else None, new.models[name].version))
    for name in sorted(set(old.models) - set(new.models)):
        changes.append(LockChange(name, old.models[name].version, None))
    project.write_lock(new)
    return new, changes


@dataclass
class SyncResult:
    models: dict[str, str] = field(default_factory=dict)  # name -> version
    downloaded: int = 0
    relocked: list[LockChange] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"models": self.models, "bytes_downloaded": self.downloaded,
                "relocked": [c.to_json() for c in self.relocked]}


async def sync(project: Project, store: Store, remotes: list[Remote] | None, *, frozen: bool = False,
               offline: bool = False, settings: Settings | None = None,
               ignore_requirements: bool = False, progress=None) -> SyncResult:
    result = SyncResult()
    lockf = project.read_lock()
    stale = project.stale(lockf)
    if stale:
        if frozen or offline:
            raise Conflict("cas.lock does not match cas.toml: " + "; ".join(stale)
                           + (" (run `cas lock`)" if frozen else " (run `cas lock` online first)"))
        lockf, result.relocked = await lock(project, store, remotes or [])

    # Plan: what each locked model needs, checked before anything is written.
    missing: list[str] = []
    for name, lk in sorted(lockf.models.items()):
        local = store.refs.get_tag(name, lk.version)
        if local is not None and local != lk.manifest:
            raise Conflict(f"this store has {name}@{lk.version} as {local}, but cas.lock says {lk.manifest}")
        if offline:
            missing += _missing_locally(store, name, lk)
    if missing:
        raise NotFound("offline, and the store lacks what cas.lock needs:\n  " + "\n  ".join(missing))

    for name, lk in sorted(lockf.models.items()):
        if not offline:
            index, _ = await read_index(remotes or [], name)
            entry = index.versions.get(lk.version)
            if entry is None:
                raise NotFound(f"{name}@{lk.version} (locked) is no longer published on the remote")
            if entry.manifest != lk.manifest:
                raise Conflict(f"the remote's {name}@{lk.version} is now {entry.manifest}, but cas.lock says "
                               f"{lk.manifest}: a published version moved; refusing it")
            if not (store.has_manifest(lk.manifest) and not _missing_locally(store, name, lk)):
                res = await fetch(store, remotes or [], name, lk.version, settings=settings, progress=progress)
                result.downloaded += res.stats.bytes_downloaded
        m = store.get_manifest(lk.manifest)
        check_locked_manifest(lk, name, lk.manifest, m)
        runtime.check(name, lk.version, m.meta, ignore=ignore_requirements)
        spec = project.models[name]
        with Destination.under(project.root, spec.path) as dest:
            checkout(store, m, dest, link=spec.link, clean=True)
        if store.refs.get_tag(name, lk.version) is None:
            store.refs.set_tag(name, lk.version, lk.manifest)
        result.models[name] = lk.version
    register_root(store, project, lockf)
    return result


def _missing_locally(store: Store, name: str, lk: Locked) -> list[str]:
    if not store.has_manifest(lk.manifest):
        have = sum(1 for f in lk.files if store.has_blob(f.digest))
        return [f"{name}@{lk.version}: manifest {lk.manifest} ({have} of {len(lk.files)} files' blobs present)"]
    out = []
    for f in lk.files:
        if not store.has_blob(f.digest):
            out.append(f"{name}@{lk.version}: {f.path} ({format_size(f.size)}, {f.digest})")
    return out


def record_fetch(project: Project, name: str, version: str, digest: Digest, m: Manifest) -> bool:
    """After `cas fetch M@V` inside a project: lock that version (and require it, if cas.toml's
    requirement does not already allow it). Returns whether cas.lock changed."""
    spec = project.models.get(name)
    if spec is None or not Requirement.parse(spec.requirement).matches(version, prereleases=True):
        project.set_requirement(name, version)
    lockf = project.read_lock()
    lockf.models[name] = Locked.of(project.models[name].requirement, version, digest, m)
    return project.write_lock(lockf)
