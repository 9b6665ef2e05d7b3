"""Turning a manifest into files: read-only views inside the store, and checkouts anywhere.

Never writes through a path it did not create (invariant 8, docs/security.md): every directory on the way to a target
is checked with lstat, and a file is replaced by creating a sibling and renaming it over the old
name, so an existing file, hard link or symlink at the target is never opened for writing.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from casstore.errors import CasError, DestinationError, InvalidInput, NotFound, StoreUnusable
from casstore.fs import linking
from casstore.fs.atomic import remove_tree
from casstore.fs.destination import Destination
from casstore.fs.writers import temp_name
from casstore.model.digest import Digest
from casstore.model.manifest import Entry, Manifest
from casstore.store.hashcache import HashCache
from casstore.store.objects import Store
from casstore.store.shared import is_shared

log = logging.getLogger("casstore")


def _held(store: Store, d: Digest) -> bool:
    # a blob a GC running now has set aside is still here: under the caller's lease it comes back,
    # unless that GC's re-mark came before the lease (then copying it fails: ``_gone``)
    return store.has_blob(d) or store.set_aside(d) is not None


def _require_blobs(store: Store, m: Manifest) -> None:
    missing = [e for e in m.entries if not _held(store, e.digest)]
    if missing:
        raise NotFound(
            f"{m.name}@{m.version}: {len(missing)} blob(s) missing from the store, e.g. {missing[0].digest} "
            f"for {missing[0].path}; fetch the version again"
        )


def prebuild_view(store: Store, digest: Digest, m: Manifest, links: Path | None = None) -> None:
    """The view of a version the store has just completed (add, fetch, update, sync): built now,
    as the HF cache builds its snapshots at download time, so that a read-only mount of this store
    (a GPU node's) serves `cas path` and the Python API for every version its writer holds. Best
    effort: a failure here is said once and `cas path` builds the view later. ``links``: from
    ``build_links`` while the blobs were written (add), used if the view is still to be made."""
    try:
        view(store, digest, m, record=False, links=links)  # its caller has just recorded the use
    except (OSError, CasError) as e:
        log.warning("%s@%s is in the store, but its view was not built (%s); `cas path` builds it", m.name,
                    m.version, e)


def missing_views(store: Store) -> list[tuple[str, Digest, Manifest]]:
    """Complete versions without a sound view: what a read-only mount of the store could not serve."""
    out = []
    for model in store.refs.models():
        for version, d in store.refs.tags(model).items():
            try:
                m = store.get_manifest(d)
                complete = all(store.has_blob(e.digest) for e in m.entries)
            except CasError:
                continue  # a damaged ref, a symlinked blobs/XX: `cas doctor` reports those as such
            if complete and view_problem(store, store.layout.view(d), m):
                out.append((f"{model}@{version}", d, m))
    return out


def view(store: Store, digest: Digest, m: Manifest, *, record: bool = True, links: Path | None = None) -> Path:
    """A directory of relative symlinks to the blobs, built once per manifest and reused only
    while it is exactly that: a real directory whose every entry is a link to the right blob
    (on a shared store a member could swap it for a directory of his own files). Anything else
    there is moved aside and the view built again. ``links``: ``build_links`` of ``m`` made
    beforehand, put in place instead of building them now (and removed if not needed)."""
    from casstore.store.markers import record_use

    final = store.layout.view(digest)
    tmp = links
    try:
        _require_blobs(store, m)  # also for a view built earlier: a blob may have been quarantined
        store.assert_unchanged(m, "and its view")  # root can write a blob through a view's symlink
        if record:
            record_use(store, m.name, m.version)
        problem = view_problem(store, final, m)
        if problem is None:
            return final
        if not os.access(store.layout.tmp, os.W_OK):  # a read-only mount, another user's store
            raise StoreUnusable(
                f"{m.name}@{m.version} is in the store {store.root}, but its view is {problem} and this store cannot "
                f"be written here: run `cas path {m.name}@{m.version}` or `cas doctor --fix` where it is writable "
                "(add and fetch build views as they go)")
        if problem != "absent":
            log.warning("%s %s; building it again", final, problem)
            _move_aside(store, final)
        if tmp is None:
            tmp = build_links(store, final, m)
        mode = _view_mode(store, final)
        try:
            os.rename(tmp, final)
        except OSError:
            if view_problem(store, final, m) is not None:  # another writer's view won: it must be sound too
                raise
        else:
            os.chmod(final, mode)
    finally:
        if tmp is not None and tmp.exists():
            remove_tree(tmp)
    return final


def build_links(store: Store, final: Path, m: Manifest) -> Path:
    """The links of the view ``final`` of ``m``, in a new directory under tmp/ (its name, for
    ``view`` to rename into place). It needs no blob yet: add builds it while writing them."""
    tmp = store.tmp_path("view.")
    try:
        # Private while it is built: on a shared store, tmp/ is writable by the whole group, and
        # nobody may plant a symlink inside a view before it is renamed into place.
        tmp.mkdir(0o700)
        for e in m.entries:
            link = tmp / e.path
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(_target(store, final, e), link)
        # Read-only all the way down, so nothing can be added inside a view; on a group-shared
        # store the group keeps write access, so that any member's GC can remove it later.
        mode = _view_mode(store, final)
        for dirpath, _, _ in os.walk(tmp, topdown=False):
            if dirpath != str(tmp):
                os.chmod(dirpath, mode)
        os.chmod(tmp, 0o700)  # moving a directory needs write access to it (its ".." changes)
    except BaseException:
        if tmp.exists():
            remove_tree(tmp)
        raise
    return tmp


def _view_mode(store: Store, final: Path) -> int:
    return stat.S_IMODE(os.stat(final.parent).st_mode) & (0o2575 if is_shared(store.root) else 0o2555)


def _target(store: Store, final: Path, e: Entry) -> str:
    return os.path.relpath(store.blob_path(e.digest), (final / e.path).parent)


def view_problem(store: Store, final: Path, m: Manifest) -> str | None:
    """What is wrong with the view at ``final`` for ``m`` ("absent" if there is none), or None."""
    try:
        st = os.lstat(final)
    except FileNotFoundError:
        return "absent"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory (a symlink?)"
    want = {e.path: _target(store, final, e) for e in m.entries}
    seen = 0
    stack = [(final, "")]
    while stack:
        d, rel = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError as e:
            return f"cannot be read: {e.strerror}"
        for entry in entries:
            path = f"{rel}{entry.name}"
            if entry.is_symlink():
                if want.get(path) != os.readlink(entry.path):
                    return f"has {path} linking elsewhere than to its blob"
                seen += 1
            elif entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), path + "/"))
            else:
                return f"has {path}, which is not a link to a blob"
    return None if seen == len(want) else f"lacks {len(want) - seen} of its {len(want)} links"


def _move_aside(store: Store, final: Path) -> None:
    """Take whatever is at a view's name out of the way (renaming moves a symlink itself)."""
    aside = store.tmp_path("view.")
    try:
        os.rename(final, aside)
    except FileNotFoundError:
        return
    except OSError as e:
        from casstore.errors import UnsafeDestination

        raise UnsafeDestination(f"{final} is not a sound view of its version and cannot be replaced here "
                                f"({e.strerror}); ask the store's owner to run `cas doctor`") from e
    if os.path.islink(aside) or not os.path.isdir(aside):
        os.unlink(aside)
    else:
        remove_tree(aside)


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
        self.copies = HashCache()

    def make(self, e: Entry, dir_fd: int, name: str) -> str:
        blob = self.store.blob_path(e.digest)
        if self.mode != "auto":
            self._one(self.mode, e, blob, dir_fd, name)
            return self.mode
        for mode in ("reflink", "hardlink", "copy"):
            if mode in self.refused or (mode == "hardlink" and e.executable):
                continue  # a hard link shares the blob's read-only, non-executable mode
            try:
                self._one(mode, e, blob, dir_fd, name)
                return mode
            except linking.LinkUnsupported:
                self.refused.add(mode)
        raise AssertionError("copy never reports LinkUnsupported")

    def _one(self, mode: str, e: Entry, blob: Path, dir_fd: int, name: str) -> None:
        """From the blob's name, or from where a GC running now has set it aside (``in_flight``:
        the caller's lease makes that GC put it back; same inode, same bytes). A symlink reads
        nothing: it names the blob's final path."""
        if mode == "symlink":
            self._from(mode, e, blob, dir_fd, name)
        else:
            self.store.in_flight(e.digest, lambda p: self._from(mode, e, p, dir_fd, name))

    def _from(self, mode: str, e: Entry, blob: Path, dir_fd: int, name: str) -> None:
        if mode == "hardlink":
            linking.hardlink(blob, name, dir_fd)
        elif mode == "symlink":
            linking.symlink(blob, name, dir_fd)
        else:
            bst = os.stat(blob)  # before the copy: if the blob moves after, in_flight may retry, and nothing is made yet
            fd = (linking.reflink if mode == "reflink" else linking.copy)(blob, name, dir_fd)
            try:
                os.fchmod(fd, 0o555 if e.executable else 0o444)
                os.utime(fd, ns=(bst.st_atime_ns, bst.st_mtime_ns))
            finally:
                os.close(fd)


def _is_ours(dir_fd: int, name: str, blob: Path, e: Entry, mode: str, copies: HashCache) -> bool:
    """Is ``name`` already this blob in the requested mode: our symlink to it, a hard link to it,
    or a read-only copy we made of it that nothing has changed since (the hash cache remembers
    each copy's stat, ctime included)?"""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
        if stat.S_ISLNK(st.st_mode):
            return mode == "symlink" and os.readlink(name, dir_fd=dir_fd) == str(blob)
        if mode == "symlink" or not stat.S_ISREG(st.st_mode):
            return False
        bst = os.stat(blob)
        if (st.st_dev, st.st_ino) == (bst.st_dev, bst.st_ino):
            return mode in ("auto", "hardlink")
        return (
            mode in ("auto", "copy", "reflink")
            and st.st_size == e.size
            and st.st_mode & 0o222 == 0
            and copies.copy_of(st) == e.digest
        )
    except OSError:
        return False


def _gone(store: Store, m: Manifest, e: Entry, err: FileNotFoundError) -> None:
    """A blob missing everywhere after ``_require_blobs`` found it, lease and all: a GC that read the
    leases before this one was written (its version already untagged, its blobs set aside) has
    deleted it since. Said as NotFound, naming it, not as a bare errno."""
    if _held(store, e.digest):
        return  # not the blob that went missing (the destination's directory, say)
    raise NotFound(
        f"{m.name}@{m.version}: blob {e.digest} for {e.path} was removed from the store while it was checked "
        f"out (a GC running now deleted this version?); fetch the version again") from err


def checkout(
    store: Store, m: Manifest, dest: str | os.PathLike | Destination, *, link: str = "auto", clean: bool = False
) -> CheckoutResult:
    """Materialise ``m`` into ``dest``: a directory the user named, or a ``Destination`` opened
    from a trusted root (a project's model path)."""
    from casstore.store.leases import Lease
    from casstore.store.markers import record_use
    with Lease(store, f"checkout {m.name}@{m.version}", [*m.blobs(), m.digest()]):
        record_use(store, m.name, m.version)
        store.touch(store.layout.manifest(m.digest()))
        linker = _Linker(store, link)
        _require_blobs(store, m)
        store.assert_unchanged(m, "and `cas checkout` restores the file")
        if isinstance(dest, Destination):
            return _checkout(store, m, dest, linker, clean=clean)
        with Destination.at(dest) as d:
            return _checkout(store, m, d, linker, clean=clean)


def _checkout(store: Store, m: Manifest, dest: Destination, linker: _Linker, *, clean: bool) -> CheckoutResult:
    t0 = time.monotonic()
    result = CheckoutResult(dest.path)
    for e in m.entries:
        parent, _, name = e.path.rpartition("/")
        fd = dest.dir_fd(parent)
        blob = store.blob_path(e.digest)
        if _is_ours(fd, name, blob, e, linker.mode, linker.copies):
            result.unchanged += 1
            continue
        try:
            if stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):
                raise DestinationError(f"cannot check out {e.path}: {dest.path / e.path} is a directory")
        except FileNotFoundError:
            pass
        tmp = f".{temp_name('cas.')}"
        try:
            try:
                used = linker.make(e, fd, tmp)
            except FileNotFoundError as err:
                _gone(store, m, e, err)
                raise
            # unlink-and-create in one step, relative to the checked directory: never writes into
            # what was at ``name``, never follows a link put there
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            if used in ("copy", "reflink"):  # as it is now, renamed (a rename moves the ctime)
                linker.copies.remember_copy(os.lstat(name, dir_fd=fd), e.digest)
        except linking.LinkUnsupported as err:
            raise DestinationError(f"--link {linker.mode} is not possible for {dest.path / e.path}: {err.strerror}") from err
        finally:
            try:
                os.unlink(tmp, dir_fd=fd)
            except FileNotFoundError:
                pass
        result.files += 1
        result.modes[used] = result.modes.get(used, 0) + 1
    if clean:
        result.removed = dest.clean({e.path for e in m.entries})
    result.elapsed = time.monotonic() - t0
    return result
