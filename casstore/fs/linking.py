"""Ways to make a file at a new path hold a blob's bytes: reflink, hardlink, symlink, copy.

Each function creates a new name (``O_EXCL | O_NOFOLLOW``, relative to a directory descriptor
when given) and never writes through an existing path.
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from casstore.model.digest import StreamHasher

MODES = ("auto", "reflink", "hardlink", "symlink", "copy")
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EPERM, errno.EMLINK)


class LinkUnsupported(OSError):
    """This filesystem (pair) cannot do the requested kind of link."""


def _create(name: str, dir_fd: int | None, access: int = os.O_WRONLY) -> int:
    return os.open(name, access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)


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


def copy(src: Path, name: str, dir_fd: int | None = None, hasher: StreamHasher | None = None) -> int:
    """Kernel-side copy (copy_file_range), falling back to read/write; returns the open descriptor.

    With ``hasher``, the copy goes a step at a time: each step is fed to ``hasher`` from the new
    file right after it is copied, while its pages are still in the CPU's cache, and its
    writeback is started, so that the fsync before publishing waits for less (both measured:
    docs/benchmarks.md). What is hashed is read back from the new file (the read/write fallback:
    the very buffer written), never taken from the source."""
    with open(src, "rb") as s:
        fd = _create(name, dir_fd, os.O_RDWR if hasher is not None else os.O_WRONLY)
        try:
            remaining = os.fstat(s.fileno()).st_size
            step = _STEP if hasher is not None else 1 << 30
            done = 0
            copy_range = getattr(os, "copy_file_range", None)  # Linux only: elsewhere, read and write
            try:
                while copy_range is not None and remaining > 0:
                    n = copy_range(s.fileno(), fd, min(remaining, step))
                    if n == 0:
                        break
                    if hasher is not None:
                        _hash_written(hasher, fd, done, n)
                        start_writeback(fd, done, n)
                    done += n
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
                    if hasher is not None:
                        hasher.update(chunk)
        except BaseException:
            os.close(fd)
            os.unlink(name, dir_fd=dir_fd)
            raise
        return fd


_STEP = 4 << 20  # hashed right after it is copied: it fits the CPU's cache
_MAPPED_MIN = 64 << 10


def _hash_written(hasher: StreamHasher, fd: int, offset: int, n: int) -> None:
    if n >= _MAPPED_MIN and offset % mmap.ALLOCATIONGRANULARITY == 0:
        with mmap.mmap(fd, n, offset=offset, access=mmap.ACCESS_READ) as mm, memoryview(mm) as view:
            hasher.update(view)
    else:
        hasher.update(os.pread(fd, n, offset))


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range of ``fd`` to disk now, without waiting for it
    (Linux's sync_file_range; elsewhere nothing). Only a head start for a later fsync."""
    if (f := _sync_file_range()) is not None:
        f(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only once something is copied: not on every command's start

    try:
        f = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    f.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return f


_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h


def reflink_or_copy(src: Path, dst: Path, hasher: StreamHasher | None = None) -> str:
    """``hasher`` is fed the bytes only if they were copied (the method is "copy"). A filesystem
    pair that cannot reflink at all is not asked again by this process: each refusal costs a
    file made and removed (ext4 refuses every time)."""
    pair = (os.stat(src).st_dev, os.path.dirname(dst))
    if pair not in _NO_REFLINK:
        try:
            os.close(reflink(src, str(dst)))
            return "reflink"
        except LinkUnsupported as e:
            if e.errno in _NEVER:
                _NO_REFLINK.add(pair)
    os.close(copy(src, str(dst), hasher=hasher))
    return "copy"


_NO_REFLINK: set[tuple[int, str]] = set()
_NEVER = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOTTY)  # the filesystems', not one file's


def hardlink(src: Path, name: str | Path, dir_fd: int | None = None) -> None:
    try:
        os.link(src, name, dst_dir_fd=dir_fd)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            raise LinkUnsupported(e.errno, f"hard link not possible from {src} to {name}") from e
        raise


def symlink(src: Path, name: str, dir_fd: int | None = None) -> None:
    os.symlink(src, name, dir_fd=dir_fd)
