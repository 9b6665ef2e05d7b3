"""Projects: cas.toml (what a project needs) and cas.lock (exactly which bytes), both in git.

    remote = "team"                      # a configured remote's name, or a URL (optional)
    [models.t2v-A14B]
    version = "^1.1"                     # see model/requirements.py
    path = "weights/t2v"                 # where `cas sync` materialises it (default models/<name>)
    link = "auto"                        # auto | reflink | hardlink | symlink | copy
    include = ["low_noise/", "*.json"]   # only these files (optional; exclude = [...] too)

`cas sync` materialises each model into its own `path`, which casstore owns: files the locked
version does not list (or the model's `include`/`exclude` leave out) are removed there. cas.lock
always pins the whole published manifest; a selection only limits what this checkout fetches. A project that syncs registers its lock with the store
as a GC root; a registration whose cas.lock has gone is dropped.

`cas lock` and `cas sync` plan first and act once. `sync --frozen` changes nothing but the store
and the model directories: a cas.lock that disagrees with cas.toml, or a remote whose manifest for
a locked version is not the locked digest, is an error. `sync --offline` uses only the local
store and lists precisely what is missing.
"""

from __future__ import annotations

import errno
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from casstore.config import project_dir
from casstore.errors import BlobsChanged, Conflict, IntegrityError, InvalidInput, NotFound
from casstore.fs import linking
from casstore.fs.atomic import write_file
from casstore.fs.destination import Destination
from casstore.model import runtime
from casstore.model.digest import Digest
from casstore.model.globs import Selection
from casstore.model.lockfile import MAX_LOCK_BYTES, Locked, LockFile
from casstore.model.manifest import Manifest
from casstore.model.names import validate_model
from casstore.model.paths import validate_path
from casstore.model.requirements import Requirement
from casstore.model.sizes import format_size
from casstore.model.strictjson import field as typed
from casstore.model.strictjson import read_file
from casstore.ops.checkout import checkout
from casstore.ops.export import export_hf_cache
from casstore.ops.fetch import fetch, load_manifest, read_index
from casstore.remotes.base import Remote
from casstore.store.objects import Store
from casstore.store.roots import register_root
from casstore.transfer.download import Settings

log = logging.getLogger("casstore")
TOML = "cas.toml"
TEMPLATE = """\
# The models this project needs; `cas lock` pins exact versions in cas.lock, `cas sync` brings
# them into each model's path. Commit both files.
{remote_line}                 # a configured remote's name, or a URL

# [models.t2v-A14B]
# version = "^1.1"                # a requirement: exact, ^, ~, >=,<, latest
# path = "weights/t2v"            # inside the project (default models/<name>)
# link = "auto"                   # auto | reflink | hardlink | symlink | copy
# include = ["low_noise/"]        # only these files (exclude = [...] too): fetched and materialised
# hf_cache = "Wan-AI/Wan2.2-T2V-A14B"  # also export it to the HF cache on sync (from_pretrained offline)
"""
MAX_TOML_BYTES = 1 << 20
LOCK = "cas.lock"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    requirement: str
    path: str
    link: str = "auto"
    hf_cache: str | None = None  # an HF repo id: `cas sync` also exports the version there (ops/export.py)
    selection: Selection | None = None  # include/exclude: only those files are fetched and materialised


@dataclass
class Project:
    root: Path
    remote: str | None = None
    models: dict[str, ModelSpec] = field(default_factory=dict)

    @property
    def toml_path(self) -> Path:
        return self.root / TOML

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK

    @classmethod
    def find(cls, start: Path | None = None) -> Project | None:
        """The project ``start`` is in (casstore.config.project_dir: not above the repository root,
        never in a directory another user owns)."""
        d = project_dir(start)
        return cls.load(d) if d is not None else None

    @classmethod
    def load(cls, root: Path) -> Project:
        p = root / TOML
        try:
            doc = tomllib.loads(read_file(p, max_bytes=MAX_TOML_BYTES).decode("utf-8"))
        except RecursionError:
            raise InvalidInput(f"{p}: nested too deeply") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise InvalidInput(f"cannot read {p}: {e}") from e
        remote = typed(doc, "remote", (str, type(None)), where=str(p), default=None)
        proj = cls(root.absolute(), remote)
        for name, spec in typed(doc, "models", dict, where=str(p), default={}).items():
            try:
                validate_model(name)
                if not isinstance(spec, dict):
                    raise InvalidInput("must be a table, e.g. version = \"^1.0\"")
                req = typed(spec, "version", str, where="version", default="latest")
                Requirement.parse(req)
                path = validate_path(typed(spec, "path", str, where="path", default=f"models/{name}"))
                link = typed(spec, "link", str, where="link", default="auto")
                if link not in linking.MODES:
                    raise InvalidInput(f"link = {link!r} is not one of {', '.join(linking.MODES)}")
                hf_repo = typed(spec, "hf_cache", (str, type(None)), where="hf_cache", default=None)
                if hf_repo is not None and "/" not in validate_model(hf_repo):
                    raise InvalidInput(f"hf_cache = {hf_repo!r} is not an HF repo id ORG/NAME")
                patterns = {}
                for key in ("include", "exclude"):
                    globs = typed(spec, key, list, where=key, default=[])
                    if not all(isinstance(g, str) for g in globs):
                        raise InvalidInput(f"{key} must be a list of glob strings, e.g. {key} = [\"low_noise/\"]")
                    patterns[key] = globs
                selection = Selection.of(patterns["include"], patterns["exclude"])
                if selection is not None and hf_repo is not None:
                    raise InvalidInput("hf_cache = exports a whole version; it cannot go with include/exclude")
            except InvalidInput as e:
                raise InvalidInput(f"{p}: model {name!r}: {e}") from e
            proj.models[name] = ModelSpec(name, req, path, link, hf_repo, selection)
        return proj

    def read_lock(self) -> LockFile:
        try:
            data = read_file(self.lock_path, max_bytes=MAX_LOCK_BYTES)
        except FileNotFoundError:
            return LockFile()
        return LockFile.decode(data, str(self.lock_path))

    def write_lock(self, lock: LockFile) -> bool:
        """Write cas.lock if its bytes change; returns whether it did."""
        data = lock.encode()
        try:
            if read_file(self.lock_path, max_bytes=MAX_LOCK_BYTES) == data:
                return False
        except (FileNotFoundError, InvalidInput):
            pass
        write_file(self.lock_path, data, self.root, mode=0o644, replace=True)
        return True

    def set_requirement(self, model: str, requirement: str) -> None:
        """Add or change a model's requirement in cas.toml, keeping the rest of the file (comments,
        order, formatting) as its authors wrote it."""
        import tomlkit

        Requirement.parse(requirement)
        doc = tomlkit.parse(read_file(self.toml_path, max_bytes=MAX_TOML_BYTES).decode("utf-8"))
        models = doc.setdefault("models", tomlkit.table(is_super_table=True))
        if model not in models:
            models[model] = tomlkit.table()
        models[model]["version"] = requirement
        write_file(self.toml_path, tomlkit.dumps(doc).encode(), self.root, mode=0o644, replace=True)
        old = self.models.get(model)
        self.models[model] = ModelSpec(model, requirement, old.path if old else f"models/{model}",
                                       old.link if old else "auto", old.hf_cache if old else None)

    @classmethod
    def create(cls, root: Path, remote: str | None = None) -> Project:
        """Start a project: a commented cas.toml in ``root`` (an existing one is kept)."""
        import tomlkit

        remote_line = f"remote = {tomlkit.string(remote).as_string()}" if remote else '# remote = "team"'
        text = TEMPLATE.format(remote_line=remote_line)
        write_file(root / TOML, text.encode(), root, mode=0o644)  # first writer wins: never replaces
        return cls.load(root)

    def stale(self, lock: LockFile) -> list[str]:
        """Why cas.lock does not match cas.toml (empty when it does)."""
        why = []
        for name, spec in sorted(self.models.items()):
            lk = lock.models.get(name)
            if lk is None:
                why.append(f"{name} is in cas.toml but not locked")
            elif lk.requirement != spec.requirement:
                why.append(f"{name}: cas.toml asks for {spec.requirement!r}, cas.lock was resolved for {lk.requirement!r}")
        for name in sorted(set(lock.models) - set(self.models)):
            why.append(f"{name} is locked but no longer in cas.toml")
        return why


def check_locked_manifest(lk: Locked, name: str, digest: Digest, m) -> None:
    if digest != lk.manifest:
        raise Conflict(f"{name}@{lk.version} is {digest}, but cas.lock says {lk.manifest}")
    if not lk.matches(m):
        raise IntegrityError(
            f"cas.lock's file list for {name}@{lk.version} does not match manifest {lk.manifest}; "
            "the lock was edited by hand? Run `cas lock` to rewrite it"
        )


# lock and sync ------------------------------------------------------------------------------------


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
    restored: list[str] = field(default_factory=list)  # project files whose blob had been written through them
    exported: dict[str, str] = field(default_factory=dict)  # name -> HF cache repo folder (hf_cache =)
    gitignored: list[str] = field(default_factory=list)  # lines added to the project's .gitignore

    def to_json(self) -> dict:
        return {"models": self.models, "bytes_downloaded": self.downloaded,
                "relocked": [c.to_json() for c in self.relocked], "restored": self.restored,
                "exported": self.exported, "gitignored": self.gitignored}


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
            missing += _missing_locally(store, name, lk, project.models[name].selection)
    if missing:
        raise NotFound("offline, and the store lacks what cas.lock needs:\n  " + "\n  ".join(missing))

    keep: dict[str, Digest] = {}  # what the registration keeps of a model held only in part
    for name, lk in sorted(lockf.models.items()):
        spec = project.models[name]
        if spec.selection is not None:
            m, keep[name], got = await _sync_part(store, remotes or [], name, lk, spec.selection, offline=offline,
                                                  settings=settings, progress=progress)
        else:
            m, got = await _sync_whole(store, remotes or [], name, lk, offline=offline, settings=settings,
                                       progress=progress)
        result.downloaded += got
        runtime.check(name, lk.version, m.meta, ignore=ignore_requirements)
        for attempt in (1, 2):
            try:
                with Destination.under(project.root, spec.path) as dest:
                    checkout(store, m, dest, link=spec.link, clean=True)
                break
            except BlobsChanged as e:  # quarantined: fetched again, and the project's files restored
                if offline or attempt == 2:
                    raise
                changed = [f"{spec.path}/{x.path}" for x in m.entries if x.digest in e.digests]
                log.warning("%s changed in the store (written through a link); fetching it again and restoring "
                            "%s", ", ".join(changed), ", ".join(changed))
                res = await fetch(store, remotes or [], name, lk.version, settings=settings, progress=progress,
                                  selection=spec.selection)
                result.downloaded += res.stats.bytes_downloaded
                result.restored += changed
        if store.refs.get_tag(name, lk.version) is None and name not in keep:
            store.refs.set_tag(name, lk.version, lk.manifest)
        if spec.hf_cache:
            result.exported[name] = export_hf_cache(store, name, lk.version, spec.hf_cache).path
        result.models[name] = lk.version
    result.gitignored = keep_out_of_git(project, [project.models[name].path for name in result.models])
    try:
        register_root(store, project.lock_path, lockf, keep)
    except OSError as e:
        if e.errno != errno.EROFS:
            raise
        # A read-only mount of the store (a GPU node's) serves the project but cannot record it:
        # the store's writer decides what its GC keeps.
        log.warning("the store %s is read-only here: this project is not registered as a GC root there", store.root)
    return result


def keep_out_of_git(project: Project, paths: list[str]) -> list[str]:
    """Add each materialised model path to the project's .gitignore (as `dvc add` does): weights
    belong in the store and cas.lock, never in a commit. Returns the lines added."""
    gi = project.root / ".gitignore"
    try:
        text = read_file(gi, max_bytes=MAX_TOML_BYTES).decode("utf-8")
    except FileNotFoundError:
        text = ""
    have = {line.strip() for line in text.splitlines()}
    add = [line for line in dict.fromkeys(f"/{p.strip('/')}/" for p in paths)
           if line not in have and line.rstrip("/") not in have and line.lstrip("/") not in have]
    if add:
        new = text + ("" if not text or text.endswith("\n") else "\n") + "".join(f"{line}\n" for line in add)
        write_file(gi, new.encode(), project.root, mode=0o644, replace=True)
    return add


async def _still_published(remotes: list[Remote], name: str, lk: Locked) -> None:
    """The remote still publishes the locked version as the locked manifest (a moved one is refused)."""
    index, _ = await read_index(remotes, name)
    entry = index.versions.get(lk.version)
    if entry is None:
        raise NotFound(f"{name}@{lk.version} (locked) is no longer published on the remote")
    if entry.manifest != lk.manifest:
        raise Conflict(f"the remote's {name}@{lk.version} is now {entry.manifest}, but cas.lock says "
                       f"{lk.manifest}: a published version moved; refusing it")


async def _sync_whole(store: Store, remotes: list[Remote], name: str, lk: Locked, *, offline: bool,
                      settings: Settings | None, progress) -> tuple[Manifest, int]:
    """The locked version for a checkout, fetched if the store lacks any of it; and the bytes downloaded."""
    got = 0
    if not offline:
        await _still_published(remotes, name, lk)
        if not (store.has_manifest(lk.manifest) and not _missing_locally(store, name, lk)):
            got = (await fetch(store, remotes, name, lk.version, settings=settings, progress=progress)).stats.bytes_downloaded
    m = store.get_manifest(lk.manifest)
    check_locked_manifest(lk, name, lk.manifest, m)
    return m, got


async def _sync_part(store: Store, remotes: list[Remote], name: str, lk: Locked, selection: Selection, *,
                     offline: bool, settings: Settings | None, progress) -> tuple[Manifest, Digest, int]:
    """The locked version's selected files for a checkout: from the whole version if the store
    holds it, else as a partial version (fetched if not here). Returns the manifest to check out,
    the one the project's registration must keep, and the bytes downloaded."""
    if store.has_manifest(lk.manifest) and not _missing_locally(store, name, lk):
        whole = store.get_manifest(lk.manifest)
        check_locked_manifest(lk, name, lk.manifest, whole)
        return whole.select(selection, lk.manifest), lk.manifest, 0
    if not offline:
        await _still_published(remotes, name, lk)
    res = await fetch(store, remotes, name, lk.version, settings=settings, progress=progress, offline=offline,
                      selection=selection)
    m = store.get_manifest(res.manifest)
    held = m.selection
    whole_digest = held[1] if held is not None else res.manifest
    if whole_digest != lk.manifest:
        raise Conflict(f"this store has {name}@{lk.version} as part of {whole_digest}, but cas.lock says {lk.manifest}")
    files = {(f.path, f.size, f.digest) for f in lk.files}
    if held is not None and not all((e.path, e.size, e.digest) in files for e in m.entries):
        raise IntegrityError(f"the part of {name}@{lk.version} in the store ({res.manifest}) lists files cas.lock's "
                             f"{lk.manifest} does not; run `cas lock` to rewrite the lock")
    if held is None:
        check_locked_manifest(lk, name, lk.manifest, m)
        m = m.select(selection, lk.manifest)
    return m, res.manifest, res.stats.bytes_downloaded


def _missing_locally(store: Store, name: str, lk: Locked, selection: Selection | None = None) -> list[str]:
    if selection is not None:
        return [f"{name}@{lk.version}: {f.path} ({format_size(f.size)}, {f.digest})" for f in lk.files
                if selection.selects(f.path) and not store.has_blob(f.digest)]
    if not store.has_manifest(lk.manifest):
        have = sum(1 for f in lk.files if store.has_blob(f.digest))
        return [f"{name}@{lk.version}: manifest {lk.manifest} ({have} of {len(lk.files)} files' blobs present)"]
    out = []
    for f in lk.files:
        if not store.has_blob(f.digest):
            out.append(f"{name}@{lk.version}: {f.path} ({format_size(f.size)}, {f.digest})")
    return out


def record_fetch(project: Project, name: str, version: str, digest: Digest, m: Manifest) -> tuple[bool, str | None]:
    """After `cas fetch M@V` inside a project: lock that version if cas.lock has none of M yet
    (and require it, if cas.toml's requirement does not already allow it). A version already
    locked is never replaced this way (that was a silent downgrade of a committed file); `cas lock
    M@V` is how to change it. Returns (whether cas.lock changed, the other version it keeps)."""
    lockf = project.read_lock()
    held = lockf.models.get(name)
    if held is not None and held.version != version:
        return False, held.version
    spec = project.models.get(name)
    if spec is None or not Requirement.parse(spec.requirement).matches(version, prereleases=True):
        project.set_requirement(name, version)
    lockf.models[name] = Locked.of(project.models[name].requirement, version, digest, m)
    return project.write_lock(lockf), None
