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
from typing import Any

from casstore.errors import OutOfSpace
from casstore.fs.writers import temp_name
from casstore.model.sizes import format_size
from casstore.model.strictjson import read_file


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


def fsync_fd(fd: int) -> None:
    """``fsync_dir`` for a directory already open."""
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise


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


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir_under(root: Path, path: Path) -> int:
    """A descriptor for directory ``path`` inside ``root``, opened one component at a time from
    ``root`` without following a symlink, making what is missing. In a store other accounts can
    write (a group-shared one), ``blobs/ab`` swapped for a symlink to a directory of someone's
    own must not receive this process's files: that is an ``UnsafeDestination`` naming it."""
    from casstore.errors import UnsafeDestination

    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    shown = root
    try:
        for name in path.relative_to(root).parts:
            shown = shown / name
            for attempt in range(2):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    break
                except FileNotFoundError:
                    try:
                        os.mkdir(name, 0o777, dir_fd=fd)
                        fsync_fd(fd)
                    except FileExistsError:
                        pass
                    if attempt:
                        raise
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafeDestination(
                            f"refusing to write through {shown}: it is a symlink or not a directory, which casstore "
                            "never makes inside a store (`cas doctor` reports it; move it away)") from None
                    raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


_NO_LINK = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS)


def link_no_replace(tmp: Path, final: Path, *, exclusive: bool = True) -> bool:
    """Publish ``tmp`` as ``final`` unless ``final`` exists; returns True if ours was published.

    link(2) fails with EEXIST instead of replacing, which is what makes first-writer-wins and
    compare-and-swap possible without a lock (also on NFS, where link is atomic). Where a
    filesystem has no hard links (some SMB and FUSE mounts): ``renameat2(RENAME_NOREPLACE)``,
    equally atomic, where it has that; else, for a ref (``exclusive``: tags, history records,
    locks, indexes), an exclusive create of the final name itself, whose reader waits out a
    record still being written (``read_settled``); an object named by its digest (not
    ``exclusive``) may simply be renamed into place, as any copy of it is the same bytes.
    """
    try:
        retry_transient(os.link, tmp, final)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
        return _publish_without_link(tmp, final, exclusive)
    finally:
        _drop(tmp)
    return True


def _publish_without_link(tmp: Path, final: Path, exclusive: bool) -> bool:
    done = rename_noreplace(tmp, final)
    if done is not None:
        return done
    if not exclusive:
        if final.exists():
            return False
        os.replace(tmp, final)
        return True
    mode = os.stat(tmp).st_mode & 0o7777
    data = Path(tmp).read_bytes()  # refs are small: a tag, a history record, a lock, an index
    try:
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        return False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


_RENAME_NOREPLACE = 1
_renameat2: Any = None  # libc's renameat2, False where there is none


def rename_noreplace(src: Path, dst: Path) -> bool | None:
    """``renameat2(src, dst, RENAME_NOREPLACE)``: True if renamed, False if ``dst`` exists, None
    where the kernel, libc or filesystem does not offer it."""
    global _renameat2
    if _renameat2 is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            _renameat2 = fn
        except (OSError, AttributeError):
            _renameat2 = False
    if _renameat2 is False:
        return None
    import ctypes

    at_fdcwd = -100
    if _renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        return False
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return None
    raise OSError(err, os.strerror(err), str(dst))


def read_settled(path: Path | str, parse, *, settle: float = 2.0, max_bytes: int = 1 << 20):
    """``parse(bytes)`` of a small ref file; a record that does not parse yet is re-read for up
    to ``settle`` seconds while it is that young (one still being written by an exclusive create,
    where the filesystem has no hard links: ``link_no_replace``). ``parse`` raises ValueError
    (InvalidInput) for what does not parse."""
    deadline: float | None = None
    while True:
        data = read_file(path, max_bytes=max_bytes)
        try:
            return parse(data)
        except ValueError:
            if deadline is None:
                deadline = time.monotonic() + settle
            try:
                young = time.time() - os.stat(path).st_mtime < settle
            except FileNotFoundError:
                young = False
            if not young or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def link_fd_no_replace(fd: int, tmp: Path, final: Path, *, exclusive: bool = True) -> bool:
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
        return link_no_replace(tmp, final, exclusive=exclusive)
    else:
        published = True
    try:  # drop our temp name, but only if it is still ours
        st = os.lstat(tmp)
        if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
            os.unlink(tmp)
    except FileNotFoundError:
        pass
    return published


def publish_file(tmp: Path, final: Path, *, fd: int | None = None, root: Path | None = None,
                 exclusive: bool = True) -> bool:
    """The one publish step (invariant 2): fsync the temp file, link it to ``final`` without
    replacing, fsync the directory. With ``fd``, the inode open as ``fd`` is what gets published,
    whatever the name ``tmp`` points to by then. With ``root`` (a store), the directories from
    ``root`` to ``final`` must be real ones, never a symlink (``open_dir_under``). Returns True if
    ours was published."""
    if fd is None:
        own = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(own)
        finally:
            os.close(own)
    else:
        os.fsync(fd)
    if root is None:
        makedirs(final.parent)
        published = (link_no_replace(tmp, final, exclusive=exclusive) if fd is None
                     else link_fd_no_replace(fd, tmp, final, exclusive=exclusive))
        if published:
            fsync_dir(final.parent)
        return published
    parent = open_dir_under(root, final.parent)
    try:
        # The name is linked relative to the checked directory's descriptor: a directory swapped
        # for a symlink after the check redirects nothing.
        here = Path(f"/proc/self/fd/{parent}") / final.name if os.path.isdir("/proc/self/fd") else final
        published = (link_no_replace(tmp, here, exclusive=exclusive) if fd is None
                     else link_fd_no_replace(fd, tmp, here, exclusive=exclusive))
        if published:
            fsync_fd(parent)
        return published
    finally:
        os.close(parent)


def write_file(final: Path, data: bytes | bytearray, tmp_dir: Path, *, mode: int = 0o444, replace: bool = False,
               prefix: str = "", durable: bool = True, root: Path | None = None, exclusive: bool = True) -> bool:
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
                return publish_file(tmp, final, fd=fd, root=root, exclusive=exclusive)
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
        _drop(tmp)


def _drop(tmp: Path) -> None:
    """Remove a temp file once what it was for is done. A failure here (EIO on a flaky NAS) must
    not fail a command whose write is already published: the file is garbage GC removes later."""
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    except OSError as e:
        import logging

        logging.getLogger("casstore").info("could not remove the temp file %s (%s); `cas gc` removes it later",
                                           tmp, e.strerror)


def translate_os_error(e: OSError, path: Path, needed: int | None = None) -> OSError:
    """``e`` as the error to raise: ``OutOfSpace`` for a full disk, and an error about a
    descriptor (fsync, write) given the path it was for, so that the message names it."""
    if e.errno == errno.ENOSPC:
        return out_of_space(path, needed)
    if not e.filename and not isinstance(e, OutOfSpace) and e.errno is not None:
        return OSError(e.errno, e.strerror, str(path))  # the subclass for the errno, as the OS would raise it
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
