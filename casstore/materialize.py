"""Turning a manifest into files: read-only views inside the store, and checkouts anywhere.

Never writes through a path it did not create (rule 6): every directory on the way to a target
is checked with lstat, and a file is replaced by creating a sibling and renaming it over the old
name, so an existing file, hard link or symlink at the target is never opened for writing.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import linking
from .atomic import temp_name
from .digest import Digest
from .errors import CasError, InvalidInput, NotFound
from .manifest import Entry, Manifest
from .store import Store


def _require_blobs(store: Store, m: Manifest) -> None:
    missing = [e for e in m.entries if not store.has_blob(e.digest)]
    if missing:
        raise NotFound(
            f"{m.name}@{m.version}: {len(missing)} blob(s) missing from the store, e.g. {missing[0].digest} "
            f"for {missing[0].path}; fetch the version again"
        )


def view(store: Store, digest: Digest, m: Manifest) -> Path:
    """A directory of relative symlinks to the blobs, built once per manifest and reused."""
    from .gc import mark

    final = store.layout.view(digest)
    _require_blobs(store, m)  # also for a view built earlier: a blob may have been quarantined
    mark(store, m.name, m.version, "used")
    if final.is_dir():
        return final
    tmp = store.tmp_path("view.")
    try:
        tmp.mkdir()
        for e in m.entries:
            link = tmp / e.path
            link.parent.mkdir(parents=True, exist_ok=True)
            final_parent = final / e.path
            os.symlink(os.path.relpath(store.blob_path(e.digest), final_parent.parent), link)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


@dataclass
class CheckoutResult:
    dest: Path
    files: int = 0
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0

    def to_json(self) -> dict:
        return {
            "dest": str(self.dest),
            "files": self.files,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "link_modes": self.modes,
            "elapsed": round(self.elapsed, 3),
        }


class _Linker:
    """Materialises one file with the requested mode; `auto` remembers what the filesystem refused."""

    def __init__(self, store: Store, mode: str) -> None:
        if mode not in linking.MODES:
            raise InvalidInput(f"unknown link mode {mode!r}; choose from {', '.join(linking.MODES)}")
        self.store = store
        self.mode = mode
        self.refused: set[str] = set()

    def make(self, e: Entry, dst: Path) -> str:
        blob = self.store.blob_path(e.digest)
        if self.mode != "auto":
            self._one(self.mode, e, blob, dst)
            return self.mode
        for mode in ("reflink", "hardlink", "copy"):
            if mode in self.refused or (mode == "hardlink" and e.executable):
                continue  # a hard link shares the blob's read-only, non-executable mode
            try:
                self._one(mode, e, blob, dst)
                return mode
            except linking.LinkUnsupported:
                self.refused.add(mode)
        raise AssertionError("copy never reports LinkUnsupported")

    def _one(self, mode: str, e: Entry, blob: Path, dst: Path) -> None:
        if mode == "hardlink":
            linking.hardlink(blob, dst)
        elif mode == "symlink":
            linking.symlink(blob, dst)
        else:
            (linking.reflink if mode == "reflink" else linking.copy)(blob, dst)
            os.chmod(dst, 0o555 if e.executable else 0o444)
            bst = os.stat(blob)
            os.utime(dst, ns=(bst.st_atime_ns, bst.st_mtime_ns))


def _is_ours(dst: Path, blob: Path, e: Entry, mode: str) -> bool:
    """Is ``dst`` already this blob in the requested mode: our symlink to it, a hard link to it,
    or a read-only copy we made (same size and the blob's mtime, which copies are given)?"""
    try:
        st = os.lstat(dst)
        if stat.S_ISLNK(st.st_mode):
            return mode == "symlink" and os.readlink(dst) == str(blob)
        if mode == "symlink" or not stat.S_ISREG(st.st_mode):
            return False
        bst = os.stat(blob)
        if (st.st_dev, st.st_ino) == (bst.st_dev, bst.st_ino):
            return mode in ("auto", "hardlink")
        return (
            mode in ("auto", "copy", "reflink")
            and st.st_size == e.size
            and st.st_mtime_ns == bst.st_mtime_ns
            and st.st_mode & 0o222 == 0
        )
    except OSError:
        return False


def _safe_parent(dest: Path, rel: str, created: set[Path]) -> Path:
    """Create the directories of ``rel`` under ``dest``, refusing any symlink on the way."""
    d = dest
    for part in rel.split("/")[:-1]:
        d = d / part
        if d in created:
            continue
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            os.mkdir(d)
        else:
            if stat.S_ISLNK(st.st_mode):
                raise CasError(f"refusing to write through symlink {d}: casstore did not create it")
            if not stat.S_ISDIR(st.st_mode):
                raise CasError(f"cannot create directory {d}: a file is in the way")
        created.add(d)
    return d


def checkout(
    store: Store, m: Manifest, dest: str | os.PathLike, *, link: str = "auto", clean: bool = False
) -> CheckoutResult:
    from .gc import mark
    from .leases import Lease

    with Lease(store, f"checkout {m.name}@{m.version}", [*m.blobs(), m.digest()]):
        mark(store, m.name, m.version, "used")
        return _checkout(store, m, dest, link=link, clean=clean)


def _checkout(store: Store, m: Manifest, dest, *, link: str, clean: bool) -> "CheckoutResult":
    t0 = time.monotonic()
    linker = _Linker(store, link)
    _require_blobs(store, m)
    dest = Path(dest).absolute()
    dest.mkdir(parents=True, exist_ok=True)
    result = CheckoutResult(dest)
    created: set[Path] = {dest}
    for e in m.entries:
        parent = _safe_parent(dest, e.path, created)
        dst = parent / e.path.rsplit("/", 1)[-1]
        blob = store.blob_path(e.digest)
        if _is_ours(dst, blob, e, link):
            result.unchanged += 1
            continue
        if os.path.isdir(dst) and not os.path.islink(dst):
            raise CasError(f"cannot check out {e.path}: {dst} is a directory")
        tmp = parent / f".{temp_name('cas.')}"
        try:
            used = linker.make(e, tmp)
            os.replace(tmp, dst)  # unlink-and-create in one step, never writing into dst
        except linking.LinkUnsupported as err:
            raise CasError(f"--link {link} is not possible for {dst}: {err.strerror}") from err
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        result.files += 1
        result.modes[used] = result.modes.get(used, 0) + 1
    if clean:
        result.removed = _clean(dest, {e.path for e in m.entries})
    result.elapsed = time.monotonic() - t0
    return result


def _clean(dest: Path, keep: set[str]) -> list[str]:
    removed = []
    for dirpath, dirnames, filenames in os.walk(dest, topdown=False):
        base = Path(dirpath)
        for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
            rel = (base / name).relative_to(dest).as_posix()
            if rel not in keep:
                os.unlink(base / name)
                removed.append(rel)
        if base != dest and not os.listdir(base):
            os.rmdir(base)
    return sorted(removed)
