"""Write-then-rename (DESIGN.md rule 2): nothing partial is ever visible under a final name.

Temp files are unique to their writer (host, pid, random), live on the store's filesystem, are
fsynced before they are linked into place, and the directory is fsynced after.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import time
from pathlib import Path

from .errors import OutOfSpace
from .sizes import format_size

HOST = socket.gethostname().replace("/", "_")[:32]


def process_alive(host: str, pid: int) -> bool | None:
    """Is that writer alive? None when we cannot tell (another host)."""
    if host != HOST:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_name(prefix: str = "") -> str:
    return f"{prefix}{HOST}.{os.getpid()}.{secrets.token_hex(6)}.tmp"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
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


def write_file(final: Path, data: bytes, tmp_dir: Path, *, mode: int = 0o444, replace: bool = False) -> bool:
    """Atomically write ``data`` to ``final``. Without ``replace``, an existing file wins."""
    tmp = tmp_dir / temp_name()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            retry_transient(os.replace, tmp, final)
            published = True
        else:
            published = link_no_replace(tmp, final)
        fsync_dir(final.parent)
        return published
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
