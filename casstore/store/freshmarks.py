"""Fresh marks: when blobs were last made fresh, per 4096th of the digest space, so that a report
(`cas du`) need not stat every blob a GC might free to learn which are within the grace period
(docs/architecture.md, "Fresh marks").

``<root>/cache/fresh/<hhh>`` is an empty file for the blobs whose hex starts with ``hhh``. A
casstore writer touches it (sets its mtime to now) before it creates or refreshes such a blob, so
no blob it made fresh has an mtime later than its mark's plus ``MARGIN``: a blob whose mark is
older than the grace period, by the margin, is old enough without a stat of its own.

Plans trust marks (`cas du`'s and GC's alike); GC's sweep does not: it stats each blob before and
after setting it aside (invariant 7). A blob refreshed by something that does not mark (a
casstore from before marks, a ``touch`` by hand) so looks old to a plan, which counts it in what
GC would free, while the sweep spares it. A missing mark is
made with the time it is made (true of any blob then), so removing ``cache/`` costs stats until
the grace period has passed, never a wrong figure beyond that.
"""

from __future__ import annotations

import math
import os
import time

GROUPS = 4096
DIR = "cache/fresh"
# How far past its mark's mtime a marked blob's may be: a writer re-marks a group only after
# half of it (one utime per group, not per blob), and an NFS client may see a mark's mtime up to
# its attribute cache's 60 s late.
MARGIN = 300.0
# Fewer blobs to ask about than this, and reading the marks costs as many stats as it saves.
MIN_BLOBS = GROUPS
_GROUP_OF = {f"{g:03x}": g for g in range(GROUPS)}  # a mark's name (a digest's first 3 hex digits) -> group
_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _group_dir(root: str, *, create: bool) -> int:
    """A descriptor of ``cache/fresh``, opened without following a symlink below the store's
    root (a group member could plant one to have marks made elsewhere)."""
    fd = os.open(root, _OPEN & ~os.O_NOFOLLOW)  # the root as named: CAS_HOME may be a symlink
    try:
        for part in DIR.split("/"):
            try:
                sub = os.open(part, _OPEN, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
                sub = os.open(part, _OPEN, dir_fd=fd)
            os.close(fd)
            fd = sub
        return fd
    except BaseException:
        os.close(fd)
        raise


def _make(name: str, fd: int) -> None:
    """A mark, made now if missing (its creation time is its mtime)."""
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=fd))


class Marker:
    """A writer's marks: each group touched at most once per ``MARGIN / 2``. The directory is
    opened for each touch, not held (a store on a mount this process must not keep busy)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self._root = os.fspath(root)
        self._since = -math.inf
        self._done: set[str] = set()

    def mark(self, hexdigest: str) -> None:
        group = hexdigest[:3]
        t = time.monotonic()
        if t - self._since > MARGIN / 2:
            self._since, self._done = t, set()
        if group in self._done:
            return
        self._done.add(group)
        try:
            fd = _group_dir(self._root, create=True)
        except OSError:  # a store this process cannot write: nor can it refresh a blob there
            return
        try:
            try:
                os.utime(group, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                _make(group, fd)
        except OSError:  # not ours to touch: without the mark, reports stat this group's blobs
            try:
                os.unlink(group, dir_fd=fd)
            except OSError:
                pass
        finally:
            os.close(fd)


def bounds(root: str | os.PathLike, *, create: bool = True) -> list[float]:
    """Per group (``int(hex[:3], 16)``), a time no marked blob of it was made fresh after: its
    mark's mtime plus ``MARGIN``; infinity for a group without a mark, whose mark is made now
    (``create``, where this process may write)."""
    out = [math.inf] * GROUPS
    try:
        fd = _group_dir(os.fspath(root), create=create)
    except OSError:
        return out
    try:
        for name in os.listdir(fd):
            if (g := _GROUP_OF.get(name)) is not None:
                try:
                    out[g] = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mtime + MARGIN
                except OSError:
                    pass
        if create:
            for g in (g for g, b in enumerate(out) if b == math.inf):
                try:
                    _make(f"{g:03x}", fd)
                except OSError:
                    break  # not writable: the rest stay unmarked too
    finally:
        os.close(fd)
    return out


def set_all(root: str | os.PathLike, t: float) -> None:
    """Every mark made and set to ``t``: a store whose blobs are all older than that (a synthetic
    store, a test's aged one)."""
    fd = _group_dir(os.fspath(root), create=True)
    try:
        for name in _GROUP_OF:
            _make(name, fd)
            os.utime(name, (t, t), dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)
