"""Where materialisation may write: directories opened one component at a time from a trusted
root, never through a symlink, never into ``.git`` (docs/security.md, "Writing outside the
store").

A ``Destination`` holds an open descriptor for the checkout's top directory. Every directory
below it is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's descriptor, and
every file is created, linked, renamed or removed relative to a descriptor, so replacing a
directory with a symlink after it was checked cannot redirect a write.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from casstore.errors import UnsafeDestination
from casstore.model.paths import is_git_name as _is_git
from casstore.model.paths import validate_path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_child(parent_fd: int, name: str, shown: Path) -> int:
    """Open directory ``name`` under ``parent_fd`` without following a link, making it if absent."""
    if _is_git(name):
        raise UnsafeDestination(f"refusing to write into {shown}: a .git directory")
    for _ in range(2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            try:
                os.mkdir(name, 0o777, dir_fd=parent_fd)
            except FileExistsError:
                pass  # another writer made it: open it (and check it) on the next pass
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                st = os.lstat(name, dir_fd=parent_fd)
                what = "a symlink that casstore did not create" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise UnsafeDestination(f"refusing to write through {shown}: it is {what}") from None
            raise
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


class Destination:
    """An open directory to materialise into, and the directories below it."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        self._dirs: dict[str, int] = {"": fd}

    @classmethod
    def under(cls, root: str | os.PathLike, rel: str) -> Destination:
        """``root/rel`` for a path a project file names: ``root`` (the project) is trusted, every
        component of ``rel`` is created or opened without following symlinks, and none is .git."""
        return cls._walk(Path(root).absolute(), validate_path(rel).split("/"))

    @classmethod
    def at(cls, path: str | os.PathLike) -> Destination:
        """A directory the user named: the existing directories above it are trusted as typed
        (the user chose them); the directory itself, and whatever must be created on the way to
        it, must not be a symlink or a file, and no component may be .git."""
        path = Path(path).absolute()
        if any(_is_git(p) for p in path.parts):
            raise UnsafeDestination(f"refusing to write into {path}: inside a .git directory")
        if path == path.parent:
            return cls(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), path)
        trusted, missing = path.parent, [path.name]
        while not trusted.is_dir():
            missing.insert(0, trusted.name)
            trusted = trusted.parent
        return cls._walk(trusted, missing)

    @classmethod
    def _walk(cls, root: Path, parts: list[str]) -> Destination:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            shown = root
            for part in parts:
                shown = shown / part
                nxt = _open_child(fd, part, shown)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, shown)

    def dir_fd(self, rel_dir: str) -> int:
        """The descriptor of directory ``rel_dir`` (a validated manifest path's parent), created
        as needed, each component checked."""
        if rel_dir in self._dirs:
            return self._dirs[rel_dir]
        parent, _, name = rel_dir.rpartition("/")
        fd = _open_child(self.dir_fd(parent), name, self.path / rel_dir)
        self._dirs[rel_dir] = fd
        return fd

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def clean(self, keep: set[str]) -> list[str]:
        """Remove what ``keep`` does not list: regular files and symlinks (the links themselves)
        and then-empty directories, found by walking descriptors without following a link. A
        .git directory, and anything that is not a file, link or directory, is left alone."""
        removed: list[str] = []
        keep_dirs = {k.rsplit("/", i)[0] for k in keep for i in range(1, k.count("/") + 1)}
        self._clean_dir(self.fd, "", keep, keep_dirs, removed)
        return sorted(removed)

    def _clean_dir(self, fd: int, prefix: str, keep: set[str], keep_dirs: set[str], removed: list[str]) -> bool:
        """Clean one directory; True if it is empty afterwards."""
        empty = True
        with os.scandir(fd) as it:
            entries = list(it)
        for e in entries:
            rel = prefix + e.name
            st = os.lstat(e.name, dir_fd=fd)
            if stat.S_ISDIR(st.st_mode):
                if _is_git(e.name):
                    empty = False
                    continue
                sub = os.open(e.name, _DIR_FLAGS, dir_fd=fd)
                try:
                    sub_empty = self._clean_dir(sub, rel + "/", keep, keep_dirs, removed)
                finally:
                    os.close(sub)
                if sub_empty and rel not in keep_dirs:
                    try:
                        os.rmdir(e.name, dir_fd=fd)
                        continue
                    except OSError:
                        pass
                empty = False
            elif (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)) and rel not in keep:
                os.unlink(e.name, dir_fd=fd)
                removed.append(rel)
            else:
                empty = False
        return empty
