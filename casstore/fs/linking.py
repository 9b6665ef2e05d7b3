"""Ways to make a file at a new path hold a blob's bytes: reflink, hardlink, symlink, copy.

Each function creates a new name (``O_EXCL | O_NOFOLLOW``, relative to a directory descriptor
when given) and never writes through an existing path.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

MODES = ("auto", "reflink", "hardlink", "symlink", "copy")
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EPERM, errno.EMLINK)


class LinkUnsupported(OSError):
    """This filesystem (pair) cannot do the requested kind of link."""


def _create(name: str, dir_fd: int | None) -> int:
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)


def reflink(src: Path, name: str, dir_fd: int | None = None) -> int:
    """Create ``name`` (in ``dir_fd``) sharing ``src``'s extents; returns its open descriptor."""
    try:
        import fcntl  # not on Windows; FICLONE is Linux's (macOS clones with clonefile, not used here)
    except ImportError:
        raise LinkUnsupported(errno.ENOTSUP, "reflink not supported on this platform") from None
    with open(src, "rb") as s:
        fd = _create(name, dir_fd)
        try:
            fcntl.ioctl(fd, _FICLONE, s.fileno())
        except OSError as e:
            os.close(fd)
            os.unlink(name, dir_fd=dir_fd)
            if e.errno in _UNSUPPORTED:
                raise LinkUnsupported(e.errno, f"reflink not supported from {src} to {name}") from e
            raise
        return fd


def copy(src: Path, name: str, dir_fd: int | None = None) -> int:
    """Kernel-side copy (copy_file_range), falling back to read/write; returns the open descriptor."""
    with open(src, "rb") as s:
        fd = _create(name, dir_fd)
        try:
            remaining = os.fstat(s.fileno()).st_size
            copy_range = getattr(os, "copy_file_range", None)  # Linux only: elsewhere, read and write
            try:
                while copy_range is not None and remaining > 0:
                    n = copy_range(s.fileno(), fd, min(remaining, 1 << 30))
                    if n == 0:
                        break
                    remaining -= n
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                copy_range = None
            if copy_range is None:  # both files' offsets are where copy_file_range left them
                while chunk := s.read(8 << 20):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            os.unlink(name, dir_fd=dir_fd)
            raise
        return fd


def reflink_or_copy(src: Path, dst: Path) -> str:
    try:
        os.close(reflink(src, str(dst)))
        return "reflink"
    except LinkUnsupported:
        os.close(copy(src, str(dst)))
        return "copy"


def hardlink(src: Path, name: str | Path, dir_fd: int | None = None) -> None:
    try:
        os.link(src, name, dst_dir_fd=dir_fd)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            raise LinkUnsupported(e.errno, f"hard link not possible from {src} to {name}") from e
        raise


def symlink(src: Path, name: str, dir_fd: int | None = None) -> None:
    os.symlink(src, name, dir_fd=dir_fd)
