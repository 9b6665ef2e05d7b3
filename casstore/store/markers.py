"""Version markers: empty files under ``refs/<model>/<kind>/<version>`` whose mtime is the fact.

- ``pins``: the user pinned the version; GC never collects it.
- ``keep``: the rollback root the last conservative update left (kept for the retention period).
- ``used``: when the version was last added, fetched, switched to, checked out or viewed.
- ``released``: an aggressive update left the version: GC keeps it only for what no policy can
  override (current, pinned, locked by a project, leased, the grace period). Using it again clears it.

GC reads them as roots (gc/state.py); the verbs write them here and nowhere else.
"""

from __future__ import annotations

import logging
import os

from casstore.errors import InvalidInput
from casstore.fs.atomic import READ_ONLY, fsync_dir, makedirs
from casstore.model.names import validate_version

log = logging.getLogger("casstore")
KINDS = ("pins", "keep", "used", "released")


def _dir(store, model: str, kind: str):
    assert kind in KINDS, kind
    return store.layout.markers(model, kind)


def marked(store, model: str, kind: str) -> dict[str, float]:
    """Versions with a marker of ``kind`` and the marker's mtime."""
    d = _dir(store, model, kind)
    out = {}
    for name in os.listdir(d) if d.is_dir() else []:
        try:
            out[validate_version(name)] = (d / name).stat().st_mtime
        except (InvalidInput, OSError):
            continue
    return out


def marked_one(store, model: str, version: str, kind: str) -> dict[str, float]:
    """``marked`` for one version, by its file's name rather than a directory listing."""
    try:
        return {version: (_dir(store, model, kind) / validate_version(version)).stat().st_mtime}
    except FileNotFoundError:
        return {}


def mark(store, model: str, version: str, kind: str) -> None:
    """Create a marker, or refresh its mtime (group-writable: on a shared store any member may
    refresh it)."""
    d = _dir(store, model, kind)
    p = d / validate_version(version)
    try:
        os.utime(p)
    except FileNotFoundError:
        makedirs(d)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o664)
        os.close(fd)
        fsync_dir(d)


def unmark(store, model: str, version: str, kind: str) -> bool:
    p = _dir(store, model, kind) / validate_version(version)
    if not os.path.lexists(p):  # the usual case: no unlink to fail (or to count, on a NAS)
        return False
    try:
        os.unlink(p)
    except FileNotFoundError:
        return False
    fsync_dir(p.parent)
    return True


def record_use(store, model: str, version: str) -> None:
    """Stamp a version as used now (a retention hint). A store this process can only read (a
    read-only mount, another account's store) is read as it is: no stamp, no error."""
    try:
        mark(store, model, version, "used")
    except OSError as e:
        if e.errno not in READ_ONLY:
            raise
        return
    try:
        unmark(store, model, version, "released")  # used again: no longer given up
    except OSError as e:  # a hint like the stamp: the next use tries again
        log.warning("could not clear the release of %s@%s: %s", model, version, e.strerror or e)
