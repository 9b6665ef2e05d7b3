"""Projects as GC roots: ``roots/projects/<key>.json`` names a project's cas.lock, the host it is
on, and the manifests it locked at its last sync; every one of them is kept (like Nix's indirect
roots). Exports (`cas export`) are roots the same way: ``roots/exports/<key>.json`` names the
exported path, and is dropped on its host once that path is gone.

The registration itself is the record GC keeps by, so a lock this process cannot read (another
user's private directory) or cannot see (a project on another machine's disk, the shared store on
a NAS) still keeps what it registered. Only on the host that wrote it can a registration be
found stale: its cas.lock gone, it is dropped. A registration that cannot be read stops GC
(``ProjectRoots.unreadable``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from casstore.errors import InvalidInput
from casstore.fs.atomic import makedirs, write_file
from casstore.fs.writers import HOST
from casstore.model.digest import Digest
from casstore.model.lockfile import MAX_LOCK_BYTES, LockFile
from casstore.model.strictjson import field as typed
from casstore.model.strictjson import load_file, read_file


def register_root(store, lock_path: Path, lock: LockFile, keep: dict[str, Digest] | None = None) -> None:
    """``keep``: a model the project holds only in part (cas.toml's include/exclude) keeps that
    partial version's manifest instead of the whole one the lock names."""
    key = Digest.of_bytes(str(lock_path).encode()).hex[:32]
    models = {n: str(lk.manifest) for n, lk in sorted(lock.models.items())} | {n: str(d) for n, d in (keep or {}).items()}
    _register(store, store.layout.project_root(key), {"lock": str(lock_path), "host": HOST, "models": models})


def register_export(store, path: Path, ref: str, manifest: Digest) -> None:
    """Keep ``manifest`` while ``path`` (an exported snapshot or OCI index) exists."""
    path = Path(os.path.abspath(path))
    key = Digest.of_bytes(f"{path}\0{manifest}".encode()).hex[:32]
    _register(store, store.layout.export_roots / f"{key}.json", {"export": str(path), "host": HOST,
                                                                 "models": {ref: str(manifest)}})


def _register(store, p: Path, doc: dict) -> None:
    makedirs(p.parent)
    write_file(p, json.dumps(doc, indent=1).encode() + b"\n", store.layout.tmp, mode=0o664, replace=True)


@dataclass
class ProjectRoots:
    manifests: dict[Digest, list[str]] = field(default_factory=dict)  # manifest -> "lock path:model"
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # registration path, why
    elsewhere: list[str] = field(default_factory=list)  # registrations whose lock this host cannot check


def project_roots(store) -> ProjectRoots:
    """Manifests that registered projects lock (and exports keep), and which lock files (exports)."""
    out = ProjectRoots()
    for f, lock_path, host, keep in _registrations(store.layout.project_roots, "project", "lock", out):
        if host == HOST:
            try:
                lock = LockFile.decode(read_file(lock_path, max_bytes=MAX_LOCK_BYTES), str(lock_path))
                keep += [(name, lk.manifest) for name, lk in lock.models.items()]  # locked since the last sync
            except FileNotFoundError:
                _drop(f)  # its project is gone
                continue
            except (OSError, InvalidInput):
                pass  # unreadable here (another user's directory): what it registered still counts
        else:
            out.elsewhere.append(str(f))
        for name, md in keep:
            out.manifests.setdefault(md, []).append(f"{lock_path}:{name}")
    for f, path, host, keep in _registrations(store.layout.export_roots, "export", "export", out):
        if host == HOST and not os.path.lexists(path):
            _drop(f)  # the export is gone (`hf cache delete`, rm -r): it keeps nothing any more
            continue
        if host != HOST:
            out.elsewhere.append(str(f))
        for name, md in keep:
            out.manifests.setdefault(md, []).append(f"export {path}:{name}")
    for md in out.manifests:
        out.manifests[md] = sorted(set(out.manifests[md]))
    return out


def _registrations(d: Path, what: str, path_key: str, out: ProjectRoots) -> Iterator[tuple[Path, Path, str | None, list]]:
    """Each readable registration in ``d``: (file, the path it names, host, [(name, manifest)]);
    an unreadable one goes to ``out.unreadable`` (and stops GC)."""
    if not d.is_dir():
        return
    for f in sorted(d.glob("*.json")):
        try:
            reg = load_file(f, what=f"{what} registration", max_bytes=1 << 16, follow_symlinks=False)
            path = Path(typed(reg, path_key, str, where=str(f)))
            host = typed(reg, "host", (str, type(None)), where=str(f), default=None)
            models = typed(reg, "models", dict, where=str(f), default={})
            keep = [(name, Digest.parse(typed(models, name, str, where=f"{f}: models"))) for name in models]
        except FileNotFoundError:
            continue
        except (OSError, InvalidInput) as e:
            out.unreadable.append((str(f), str(e)))
            continue
        yield f, path, host, keep


def _drop(f: Path) -> None:
    try:
        f.unlink()  # a read-only store keeps it, harmlessly
    except OSError:
        pass
