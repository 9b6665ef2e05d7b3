"""Projects as GC roots: ``roots/projects/<key>.json`` names a project's cas.lock, and every
manifest that lock pins is kept (like Nix's indirect roots). A registration whose cas.lock has
gone is dropped."""

from __future__ import annotations

import json
from pathlib import Path

from casstore.errors import InvalidInput
from casstore.fs.atomic import makedirs, write_file
from casstore.model.digest import Digest
from casstore.model.lockfile import MAX_LOCK_BYTES, LockFile
from casstore.model.strictjson import field as typed
from casstore.model.strictjson import load_file, read_file


def register_root(store, lock_path: Path, lock: LockFile) -> None:
    key = Digest.of_bytes(str(lock_path).encode()).hex[:32]
    p = store.layout.project_root(key)
    makedirs(p.parent)
    data = json.dumps({"lock": str(lock_path),
                       "models": {n: str(lk.manifest) for n, lk in sorted(lock.models.items())}}, indent=1).encode()
    write_file(p, data + b"\n", store.layout.tmp, mode=0o664, replace=True)


def project_roots(store) -> dict[Digest, list[str]]:
    """Manifests that registered projects lock, and which lock files."""
    out: dict[Digest, list[str]] = {}
    d = store.layout.project_roots
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
