"""Group-shared stores (docs/architecture.md, invariant 13): one store directory used by a team's accounts.

`cas init --shared` writes ``shared.json`` and makes every directory group-writable and setgid
(new files and directories then belong to the store's group, and Linux gives new directories
the setgid bit too). A process that opens a shared store sets its umask to 002 so that the
temp, lock and lease files it creates are group-writable; blobs and manifests stay read-only
(0444) for everyone.
"""

from __future__ import annotations

import json
import os
import stat

SHARED_FILE = "shared.json"


def is_shared(root) -> bool:
    return os.path.exists(os.path.join(root, SHARED_FILE))


def apply_umask(root) -> None:
    if is_shared(root):
        os.umask(0o002)


def _ensure(path: str, bits: int) -> None:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & bits == bits:
        return
    try:
        os.chmod(path, mode | bits)
    except PermissionError as e:
        from casstore.errors import StoreUnusable

        raise StoreUnusable(f"cannot make {path} group-shared (mode {mode:o} needs {bits:o}); its owner must run "
                       f"`chmod g+rwXs` on it") from e


def make_shared(store) -> None:
    from casstore.fs.atomic import write_file

    os.umask(0o002)
    root = store.root
    for dirpath, _dirnames, filenames in os.walk(root):
        _ensure(dirpath, 0o2070)
        for n in filenames:
            p = os.path.join(dirpath, n)
            if os.path.islink(p):
                continue
            _ensure(p, 0o040 | (0o020 if os.stat(p).st_mode & 0o200 else 0))
    if not is_shared(root):
        write_file(root / SHARED_FILE, json.dumps({"shared": True}).encode() + b"\n", store.layout.tmp, mode=0o664)
