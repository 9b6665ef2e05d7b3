"""Noticing a blob changed through a materialised file (docs/architecture.md, invariant 12).

A checkout by hard link shares the blob's inode, and a view is a symlink to it; a process that
may ignore permissions (root, in most containers) can write the blob through either. Hashing
every blob on every use would find it, at the cost of reading 126 GB; instead casstore stamps
what it publishes and refreshes: the blob's mtime is set to a whole second (nanoseconds 0) of the
store's clock. Any write through a link sets the mtime to the kernel's current time, whose
nanoseconds are not 0 (but for one time in a billion), so

- a blob whose size is its manifest's and whose mtime is a whole second is unchanged;
- a blob of the right size with another mtime is hashed (once: the machine-local hash cache then
  knows that stat), and re-stamped if its bytes are right (a store from before stamps);
- a refresh (GC's "in use" signal) keeps a changed blob's mark: it sets the mtime to now with
  nanoseconds, so the change stays visible to the next check.

Filesystems with whole-second timestamps (FAT, sshfs) cannot show the mark: there a change of the
same size goes unseen until `cas verify` hashes it.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

NS = 1_000_000_000


def whole_second(now: float) -> int:
    """``now`` (seconds) as a stamp in nanoseconds: the whole second."""
    return int(now) * NS


def is_stamped(st: os.stat_result) -> bool:
    return st.st_mtime_ns % NS == 0


def stamp(target: int | str | os.PathLike, now: float, atime_ns: int | None = None) -> None:
    """Set a blob's mtime to the stamp of ``now`` (``target``: an open descriptor or a path)."""
    mtime = whole_second(now)
    os.utime(target, ns=(atime_ns if atime_ns is not None else mtime, mtime))


def refresh(path: str | os.PathLike, now: float) -> None:
    """Refresh an object's mtime to ``now`` (the store's clock), keeping the mark of one that
    changed: a stamped object is stamped again, an unstamped one set to the current time (which
    carries nanoseconds), so that a refresh never hides a write through a link."""
    st = os.stat(path)
    if is_stamped(st):
        stamp(path, now, st.st_atime_ns)
    else:
        os.utime(path)


@dataclass
class Clock:
    """The store's clock without creating a file each time: its offset from this machine's,
    measured again after ``ttl`` seconds (refreshes and stamps need second precision at most)."""

    measure: object  # () -> float: the store's clock now (Store.now)
    ttl: float = 60.0
    _offset: float = 0.0
    _at: float = field(default=-1e18)

    def now(self) -> float:
        t = time.monotonic()
        if t - self._at > self.ttl:
            self._offset = self.measure() - time.time()  # type: ignore[operator]
            self._at = t
        return time.time() + self._offset


def changed(store, entries: Iterable, cache=None) -> list:
    """The entries (``model.manifest.Entry``) whose blob no longer holds the bytes its digest
    names: a wrong size, or an unstamped mtime and then a wrong hash. A blob that hashes right
    is stamped again (or, where this process may not, its stat remembered in ``cache``, the
    machine-local hash cache), so it is hashed once, not at every use. Missing blobs are not
    this function's business."""
    from casstore.model.digest import hash_file

    bad, seen = [], set()
    for e in entries:
        if e.digest in seen:
            continue
        seen.add(e.digest)
        p = store.blob_path(e.digest)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        if st.st_size != e.size:
            bad.append(e)
            continue
        if is_stamped(st) or (cache is not None and cache.get(st) == e.digest):
            continue
        try:
            got, _ = hash_file(p)
        except FileNotFoundError:
            continue  # set aside by a GC since the stat
        if got != e.digest:
            bad.append(e)
            continue
        try:
            store.stamp_now(p, e.digest, st.st_atime_ns)
        except FileNotFoundError:
            continue
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EACCES, errno.EROFS):
                raise
            if cache is not None:
                cache.put(st, e.digest)
    return bad
