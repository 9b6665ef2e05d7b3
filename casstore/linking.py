"""Ways to make a file at a new path hold a blob's bytes: reflink, hardlink, symlink, copy.

Each function creates ``dst`` (which must not exist) and never writes through an existing path.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

MODES = ("auto", "reflink", "hardlink", "symlink", "copy")
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EPERM, errno.EMLINK)


class LinkUnsupported(OSError):
    """This filesystem (pair) cannot do the requested kind of link."""


def _create(dst: Path) -> int:
    return os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


def reflink(src: Path, dst: Path) -> None:
    with open(src, "rb") as s:
        fd = _create(dst)
        try:
            fcntl.ioctl(fd, _FICLONE, s.fileno())
        except OSError as e:
            os.close(fd)
            os.unlink(dst)
            if e.errno in _UNSUPPORTED:
                raise LinkUnsupported(e.errno, f"reflink not supported from {src} to {dst}") from e
            raise
        os.close(fd)


def copy(src: Path, dst: Path) -> None:
    """Kernel-side copy (copy_file_range), falling back to sendfile-free read/write."""
    with open(src, "rb") as s:
        fd = _create(dst)
        try:
            remaining = os.fstat(s.fileno()).st_size
            try:
                while remaining > 0:
                    n = os.copy_file_range(s.fileno(), fd, min(remaining, 1 << 30))
                    if n == 0:
                        break
                    remaining -= n
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                while chunk := s.read(8 << 20):
                    os.write(fd, chunk)
        except BaseException:
            os.close(fd)
            os.unlink(dst)
            raise
        os.close(fd)


def reflink_or_copy(src: Path, dst: Path) -> str:
    try:
        reflink(src, dst)
        return "reflink"
    except LinkUnsupported:
        copy(src, dst)
        return "copy"


def hardlink(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            raise LinkUnsupported(e.errno, f"hard link not possible from {src} to {dst}") from e
        raise


def symlink(src: Path, dst: Path) -> None:
    os.symlink(src, dst)
