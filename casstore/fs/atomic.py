"""Write-then-rename (docs/architecture.md, invariant 2): nothing partial is ever visible under a final name.

Temp files are unique to their writer (host, pid, random), live on the store's filesystem, are
fsynced before they are linked into place, and the directory is fsynced after.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

from casstore.errors import OutOfSpace
from casstore.fs.writers import temp_name
from casstore.model.sizes import format_size


def fsync_dir(path: Path) -> None:
    """Make a directory's new entries durable. Some filesystems (FUSE, SMB, some NFS servers)
    refuse to fsync a directory: they order metadata themselves or not at all, and refusing to
    work there would protect nothing."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def makedirs(path: Path) -> None:
    """Create directories, fsyncing each parent whose entry we added."""
    if path.is_dir():
        return
    makedirs(path.parent)
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    fsync_dir(path.parent)


_TRANSIENT = (errno.EACCES, errno.EBUSY, errno.EAGAIN)
# What writing to a store this process may only read raises (a read-only mount, another account's).
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def retry_transient(fn, *args, attempts: int = 8, delay: float = 0.05):
    """Retry an operation that SMB and some NAS clients fail transiently (EACCES, EBUSY) while
    another client holds the file open; a persistent failure is raised as it is."""
    for i in range(attempts):
        try:
            return fn(*args)
        except OSError as e:
            if e.errno not in _TRANSIENT or i == attempts - 1:
                raise
            time.sleep(delay * (2**i))


def link_no_replace(tmp: Path, final: Path) -> bool:
    """Publish ``tmp`` as ``final`` unless ``final`` exists; returns True if ours was published.

    link(2) fails with EEXIST instead of replacing, which is what makes first-writer-wins and
    compare-and-swap possible without a lock (also on NFS, where link is atomic).
    """
    try:
        retry_transient(os.link, tmp, final)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # Filesystems without hard links (some SMB/FUSE): the best they offer.
        if final.exists():
            return False
        os.replace(tmp, final)
        return True
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return True


def link_fd_no_replace(fd: int, tmp: Path, final: Path) -> bool:
    """``link_no_replace`` for the very file open as ``fd`` (created or adopted at ``tmp``): in a
    directory other accounts can write (a shared store's tmp/), the name ``tmp`` may have been
    swapped for a symlink or another file after we checked and hashed ours. Linking
    /proc/self/fd/N publishes the inode we hold; without /proc the name is checked against it."""
    proc = f"/proc/self/fd/{fd}"
    held = os.fstat(fd)
    try:
        retry_transient(lambda: os.link(proc, final, follow_symlinks=True))
    except FileExistsError:
        published = False
    except OSError:  # no /proc, or a filesystem without hard links: check the name, then link it
        st = os.lstat(tmp)
        if (st.st_dev, st.st_ino) != (held.st_dev, held.st_ino):
            from casstore.errors import IntegrityError

            raise IntegrityError(f"{tmp} was replaced while it was being published; nothing published") from None
        return link_no_replace(tmp, final)
    else:
        published = True
    try:  # drop our temp name, but only if it is still ours
        st = os.lstat(tmp)
        if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
            os.unlink(tmp)
    except FileNotFoundError:
        pass
    return published


def publish_file(tmp: Path, final: Path, *, fd: int | None = None) -> bool:
    """The one publish step (invariant 2): fsync the temp file, link it to ``final`` without
    replacing, fsync the directory. With ``fd``, the inode open as ``fd`` is what gets published,
    whatever the name ``tmp`` points to by then. Returns True if ours was published."""
    if fd is None:
        own = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(own)
        finally:
            os.close(own)
    else:
        os.fsync(fd)
    makedirs(final.parent)
    published = link_no_replace(tmp, final) if fd is None else link_fd_no_replace(fd, tmp, final)
    if published:
        fsync_dir(final.parent)
    return published


def write_file(final: Path, data: bytes | bytearray, tmp_dir: Path, *, mode: int = 0o444, replace: bool = False,
               prefix: str = "", durable: bool = True) -> bool:
    """Atomically write ``data`` to ``final``. Without ``replace``, an existing file wins.
    ``durable=False`` (a replaced cache file): no fsync; after a crash the file may be empty or
    old, which a cache's reader must tolerate anyway."""
    tmp = tmp_dir / temp_name(prefix)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fchmod(fd, mode)
            if not replace:
                return publish_file(tmp, final, fd=fd)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        retry_transient(os.replace, tmp, final)
        if durable:
            fsync_dir(final.parent)
        return True
    except OSError as e:
        raise translate_os_error(e, final) from e
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def translate_os_error(e: OSError, path: Path, needed: int | None = None) -> OSError:
    if e.errno == errno.ENOSPC:
        return out_of_space(path, needed)
    return e


def out_of_space(path: Path, needed: int | None) -> OutOfSpace:
    try:
        st = os.statvfs(path if path.is_dir() else path.parent)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = -1
    need = f"needed {format_size(needed)} ({needed} bytes), " if needed is not None else ""
    return OutOfSpace(
        f"no space left on the store's filesystem at {path}: {need}free {format_size(free)} ({free} bytes)",
    )


def remove_tree(path: Path) -> None:
    """Remove a tree of read-only directories (a view, or one being built)."""
    for dirpath, _, _ in os.walk(path):
        try:
            os.chmod(dirpath, 0o700)
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)
