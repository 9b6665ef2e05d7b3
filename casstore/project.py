"""Projects: cas.toml (what a project needs) and cas.lock (exactly which bytes), both in git.

    remote = "team"                      # a configured remote's name, or a URL (optional)
    [models.t2v-A14B]
    version = "^1.1"                     # see requirements.py
    path = "weights/t2v"                 # where `cas sync` materialises it (default models/<name>)
    link = "auto"                        # auto | reflink | hardlink | symlink | copy

`cas sync` materialises each model into its own `path`, which casstore owns: files the locked
version does not list are removed there. A project that syncs registers its lock with the store
as a GC root; a registration whose cas.lock has gone is dropped.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import linking
from .atomic import makedirs, write_file
from .digest import Digest
from .errors import Conflict, IntegrityError, InvalidInput
from .lockfile import MAX_LOCK_BYTES, Locked, LockFile
from .names import validate_model
from .paths import validate_path
from .requirements import Requirement
from .strictjson import field as typed, load_file, read_file
from .store import Store

TOML = "cas.toml"
TEMPLATE = """\
# The models this project needs; `cas lock` pins exact versions in cas.lock, `cas sync` brings
# them into each model's path. Commit both files.
{remote_line}                 # a configured remote's name, or a URL

# [models.t2v-A14B]
# version = "^1.1"                # a requirement: exact, ^, ~, >=,<, latest
# path = "weights/t2v"            # inside the project (default models/<name>)
# link = "auto"                   # auto | reflink | hardlink | symlink | copy
"""
MAX_TOML_BYTES = 1 << 20
LOCK = "cas.lock"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    requirement: str
    path: str
    link: str = "auto"


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
    def find(cls, start: Path | None = None) -> "Project | None":
        start = (start or Path.cwd()).absolute()
        for d in (start, *start.parents):
            if (d / TOML).is_file():
                return cls.load(d)
        return None

    @classmethod
    def load(cls, root: Path) -> "Project":
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
            except InvalidInput as e:
                raise InvalidInput(f"{p}: model {name!r}: {e}") from e
            proj.models[name] = ModelSpec(name, req, path, link)
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
                                       old.link if old else "auto")

    @classmethod
    def create(cls, root: Path, remote: str | None = None) -> "Project":
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


# GC roots ------------------------------------------------------------------------------------------


def _root_file(store: Store, project: Project) -> Path:
    key = Digest.of_bytes(str(project.lock_path).encode()).hex[:32]
    return store.root / "roots" / "projects" / f"{key}.json"


def register_root(store: Store, project: Project, lock: LockFile) -> None:
    p = _root_file(store, project)
    makedirs(p.parent)
    data = json.dumps({"lock": str(project.lock_path),
                       "models": {n: str(lk.manifest) for n, lk in sorted(lock.models.items())}}, indent=1).encode()
    write_file(p, data + b"\n", store.layout.tmp, mode=0o664, replace=True)


def project_roots(store: Store) -> dict[Digest, list[str]]:
    """Manifests that registered projects lock, and which lock files; drops registrations whose
    cas.lock is gone (like Nix's indirect roots)."""
    out: dict[Digest, list[str]] = {}
    d = store.root / "roots" / "projects"
    if not d.is_dir():
        return out
    for f in sorted(d.glob("*.json")):
        try:
            reg = load_file(f, what="project registration", max_bytes=1 << 16, follow_symlinks=False)
            lock_path = Path(typed(reg, "lock", str, where=str(f)))
            if not lock_path.exists():
                f.unlink()  # a read-only store raises here: the registration stays, harmlessly
                continue
            lock = LockFile.decode(read_file(lock_path, max_bytes=MAX_LOCK_BYTES), str(lock_path))
        except (OSError, InvalidInput):
            continue  # another project's broken registration or lock never stops this store's GC
        for name, lk in lock.models.items():
            out.setdefault(lk.manifest, []).append(f"{lock_path}:{name}")
    return out


def check_locked_manifest(lk: Locked, name: str, digest: Digest, m) -> None:
    if digest != lk.manifest:
        raise Conflict(f"{name}@{lk.version} is {digest}, but cas.lock says {lk.manifest}")
    if not lk.matches(m):
        raise IntegrityError(
            f"cas.lock's file list for {name}@{lk.version} does not match manifest {lk.manifest}; "
            "the lock was edited by hand? Run `cas lock` to rewrite it"
        )

