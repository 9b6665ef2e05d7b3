"""The files of a source tree that `cas add` and `cas import` take in: validated manifest paths,
excludes applied, Git LFS pointers refused, symlinks standing for their targets. Nothing but
pointer-sized files is read here.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from casstore.errors import InvalidInput, NotFound, SourceUnreadable
from casstore.model.globs import PathFilter
from casstore.model.paths import check_tree, validate_path

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"
LFS_POINTER_MAX = 1024  # the LFS spec's bound on a pointer file's size

@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str  # manifest path
    abspath: Path  # a symlink's target, resolved: what gets read, and with --move linked
    st: os.stat_result
    sha256: str | None = None  # what a source (HF, Git LFS, Ollama) says the SHA-256 must be
    claimed_by: str = ""  # where that claim comes from, for the error that refutes it
    executable: bool | None = None  # None: as the file's mode says (an LFS object's is not the file's)

    @property
    def mode(self) -> int:
        x = self.st.st_mode & 0o111 if self.executable is None else self.executable
        return 0o755 if x else 0o644


def stat_file(abspath: Path, rel: str) -> os.stat_result:
    try:
        st = os.stat(abspath)
    except FileNotFoundError:
        raise NotFound(f"source file {abspath} does not exist (a dangling symlink?)") from None
    except OSError as e:
        raise SourceUnreadable(f"cannot read source file {abspath}: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"source {abspath} is not a regular file (manifest path {rel!r})")
    return st


def _source_file(abspath: Path, rel: str, allow_lfs_pointers: bool) -> SourceFile:
    st = stat_file(abspath, rel)
    if not allow_lfs_pointers and st.st_size < LFS_POINTER_MAX:
        _refuse_lfs_pointer(abspath)
    # A symlink (an HF snapshot is a tree of them) stands for its target: with --move the target
    # is what gets linked into the store, never the link itself.
    return SourceFile(rel, Path(os.path.realpath(abspath)) if abspath.is_symlink() else abspath, st)


def _refuse_lfs_pointer(abspath: Path) -> None:
    try:
        with open(abspath, "rb") as f:
            head = f.read(LFS_POINTER_MAX)
    except OSError as e:
        raise SourceUnreadable(f"cannot read source file {abspath}: {e.strerror}") from e
    if head.startswith(LFS_POINTER_PREFIX):
        oid = next((line.split(b":", 1)[-1].decode("ascii", "replace") for line in head.splitlines()
                    if line.startswith(b"oid ")), "?")
        raise InvalidInput(
            f"{abspath} is a Git LFS pointer (oid sha256:{oid}), not the file's bytes: run `git lfs pull` "
            "in its repository, or `cas import` that repository (which reads .git/lfs/objects), or pass "
            "--allow-lfs-pointers to store the pointer as it is")


def scan(source: Path, *, exclude: PathFilter | None = None, allow_lfs_pointers: bool = False,
         excluded: list[str] | None = None) -> list[SourceFile]:
    """List the files to add, with validated manifest paths; only pointer-sized files are read.
    What ``exclude`` leaves out is appended to ``excluded`` as "path (pattern)"."""
    source = Path(source)
    if not source.exists():
        raise NotFound(f"source path {source} does not exist")
    if source.is_file():
        rel = validate_path(source.name)
        return [_source_file(source, rel, allow_lfs_pointers)]
    if not source.is_dir():
        raise InvalidInput(f"source path {source} is neither a file nor a directory")
    out = []
    skipped = excluded if excluded is not None else []

    def onerror(e: OSError) -> None:
        raise SourceUnreadable(f"cannot read directory {e.filename}: {e.strerror}") from e

    def left_out(rel: str, is_dir: bool) -> bool:
        pattern = exclude.match(rel, is_dir) if exclude else None
        if pattern is not None:
            skipped.append(f"{rel}{'/' if is_dir else ''} ({pattern})")
        return pattern is not None

    for dirpath, dirnames, filenames in os.walk(source, onerror=onerror):
        base = Path(dirpath)
        at = base.relative_to(source).as_posix()
        prefix = "" if at == "." else at + "/"
        dirnames[:] = sorted(d for d in dirnames if not left_out(prefix + d, True))
        for d in dirnames:
            if (base / d).is_symlink():
                raise InvalidInput(f"source {base / d} is a symlink to a directory; add its target instead")
        for name in sorted(filenames):
            if left_out(prefix + name, False):
                continue
            abspath = base / name
            rel = validate_path(prefix + name)
            out.append(_source_file(abspath, rel, allow_lfs_pointers))
    check_tree(f.path for f in out)
    if not out:
        raise InvalidInput(f"source directory {source} has no files to add"
                           + (f" ({len(skipped)} excluded, e.g. {skipped[0]})" if skipped else ""))
    return out
