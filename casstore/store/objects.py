"""The object database: blobs and manifests addressed by digest, plus the store's refs.

Writes follow invariants 2-4 of docs/architecture.md: a writer-unique temp file on the store's filesystem, hashed
after it is written (the digest names exactly the bytes published), fsynced, then linked into
place without replacing. A second writer of the same object just refreshes its mtime.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from casstore.errors import (
    IntegrityError,
    InvalidInput,
    NotFound,
    OutOfSpace,
    StoreFormatError,
    StoreUnusable,
)
from casstore.fs import linking
from casstore.fs.atomic import fsync_fd, makedirs, open_dir_under, publish_file, translate_os_error, write_file
from casstore.fs.writers import temp_name
from casstore.model.digest import Digest, StreamHasher, all_hex, hash_file, hash_file_sha256
from casstore.model.manifest import Manifest, blob_sizes
from casstore.model.strictjson import load_file
from casstore.store import freshmarks, stamps
from casstore.store.layout import FORMAT_VERSION, TOP_DIRS, Layout
from casstore.store.refs import Refs

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Put:
    digest: Digest
    size: int
    new: bool  # False: the blob was already there
    method: str = "existing"  # or how the bytes got in: reflink, copy, hardlink


@dataclass(frozen=True)
class Staged:
    """A blob's bytes in a temp file of the store, hashed, not yet published."""

    tmp: Path
    digest: Digest
    size: int
    method: str
    sha256: str | None = None

    def discard(self) -> None:
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def _did_you_mean(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _staged_sha256(tmp: Path, method: str) -> Staged:
    digest, size, sha = hash_file_sha256(tmp)
    return Staged(tmp, digest, size, method, sha)


def touch(path: Path, now: float | None = None) -> bool:
    """Refresh an object's mtime to ``now`` (the store's clock; GC's grace period counts from
    it), keeping the mark of one changed through a link (store/stamps.py). False if it is gone,
    which a writer relying on the object must treat as absent (GC may just have collected it).
    ``Store.touch`` passes the store's clock."""
    try:
        stamps.refresh(path, time.time() if now is None else now)
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return path.exists()  # not ours to touch (another user's file on a shared store)


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.layout = Layout(self.root)
        self.refs = Refs(self.layout)
        self._safe_dirs: set[Path] = set()
        self.clock = stamps.Clock(self.now)
        self.fresh = freshmarks.Marker(self.root)

    def stamp_now(self, target: int | str | os.PathLike, d: Digest, atime_ns: int | None = None) -> None:
        """Stamp blob ``d`` (``target``: it, its temp file or a descriptor) with the store's
        clock, its fresh mark first (store/freshmarks.py), as ``touch`` refreshes one."""
        self.fresh.mark(d.hex)
        stamps.stamp(target, self.clock.now(), atime_ns)

    def touch(self, path: Path) -> bool:
        """``touch`` by the store's clock; a blob's fresh mark first (store/freshmarks.py)."""
        if path.parent.parent == self.layout.blobs:
            self.fresh.mark(path.name)
        return touch(path, self.clock.now())

    # opening -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | os.PathLike, *, create: bool = True) -> Store:
        root = Path(root).absolute()
        store = cls(root)
        fmt = store.layout.format_file
        try:
            if root.exists() and not root.is_dir():
                raise StoreUnusable(f"{root} is a file, not a store directory; set CAS_HOME or --store to a directory")
            if not fmt.exists():
                if not create:
                    raise NotFound(f"no casstore store at {root} yet (`cas add` or `cas fetch` creates it; "
                                   f"CAS_HOME or --store name another)")
                store._init()
            store._check_format()
        except OSError as e:
            if isinstance(e, OutOfSpace):
                raise
            raise StoreUnusable(f"cannot use {root} as the store: {e.strerror or e}; set CAS_HOME or --store to a "
                           f"directory you can write") from e
        from casstore.store.shared import apply_umask

        apply_umask(root)
        return store

    def _init(self) -> None:
        """Make this directory a store. The format file is published first, from a dot-named temp
        file beside it, so a process starting at the same moment never sees a non-empty directory
        without it (many ranks of one job may create the store together); the directories follow
        in ``_check_format``."""
        makedirs(self.root)
        fmt = self.layout.format_file
        foreign = [n for n in os.listdir(self.root) if not n.startswith(".") and n != fmt.name]
        if foreign and not fmt.exists():
            raise StoreFormatError(
                f"{self.root} is not empty and is not a casstore store (no {fmt.name}); refusing to use it"
            )
        data = json.dumps({"casstore_store": FORMAT_VERSION}).encode() + b"\n"
        write_file(fmt, data, self.root, mode=0o444, prefix=".")

    def _check_format(self) -> None:
        fmt = self.layout.format_file
        try:
            version = load_file(fmt, what="store format file", max_bytes=4096).get("casstore_store")
        except (OSError, InvalidInput, AttributeError) as e:
            raise StoreFormatError(f"unreadable store format file {fmt}: {e}") from e
        if version != FORMAT_VERSION:
            raise StoreFormatError(
                f"store {self.root} has format version {version!r}; this casstore knows only "
                f"version {FORMAT_VERSION} (upgrade casstore, or use another store)"
            )
        for d in TOP_DIRS:
            (self.root / d).mkdir(exist_ok=True)

    # blobs -------------------------------------------------------------------------------------

    def blob_path(self, d: Digest) -> Path:
        return self.layout.blob(d)

    def set_aside(self, d: Digest, *, manifest: bool = False) -> Path | None:
        """Where a GC running now holds ``d`` between setting it aside and its last check
        (gc/sweep.py), if it does: it puts back what a live lease or ref needs, so a reader whose
        lease it saw finds the object at its name or here. A lease written after that GC's
        re-mark does not bring it back: such a reader may find it gone after all."""
        trash = self.layout.gc_trash_manifests if manifest else self.layout.gc_trash
        try:
            names = [n for n in os.listdir(trash) if n.startswith(f"{d.hex}.")]
        except FileNotFoundError:
            return None
        return trash / names[0] if names else None

    def has_blob(self, d: Digest) -> bool:
        p = self.layout.blob(d)
        self.check_dirs(p)
        return p.exists()

    def check_dirs(self, path: Path) -> None:
        """Every directory from the store's root to ``path`` is a real one, never a symlink (on a
        group-shared store a member could swap ``blobs/ab`` for a link to files of his own, which
        others would then read as the store's): else ``UnsafeDestination`` naming it. Checked
        once per directory and process; publishing re-checks by descriptor (fs/atomic.py)."""
        parent = path.parent
        if parent in self._safe_dirs:
            return
        from casstore.errors import UnsafeDestination

        here = self.root
        for name in parent.relative_to(self.root).parts:
            here = here / name
            try:
                st = os.lstat(here)
            except FileNotFoundError:
                return  # nothing there yet: nothing to be misled by
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafeDestination(f"{here} is a symlink or not a directory, which casstore never makes inside "
                                        "a store; refusing to use what it points to (`cas doctor` reports it)")
        self._safe_dirs.add(parent)

    def make_blob_dirs(self, digests: Iterable[Digest]) -> None:
        """The ``blobs/XX`` directories these blobs go to, made at once with one fsync of
        ``blobs/`` (a writer of many blobs into a new store would otherwise fsync it once per
        directory as each blob is published). Opened without following a symlink, as a publish."""
        wanted = {d.hex[:2] for d in digests}
        fd = open_dir_under(self.root, self.layout.blobs)
        try:
            made = False
            for name in wanted:
                try:
                    os.mkdir(name, 0o777, dir_fd=fd)
                    made = True
                except FileExistsError:
                    pass
            if made:
                fsync_fd(fd)
        finally:
            os.close(fd)

    def tmp_path(self, prefix: str = "") -> Path:
        return self.layout.tmp / temp_name(prefix)

    def put_file(self, src: Path, *, expected: Digest | None = None, move: bool = False) -> Put:
        """Store a file's bytes as a blob.

        ``expected`` (from a hash already taken) lets an existing blob short-circuit the copy;
        the copy is hashed again anyway, so a file changed meanwhile is an error, not a bad blob.
        ``move`` hard-links the source instead of copying (same filesystem only).
        """
        src = Path(src)
        if expected is not None and self.touch(self.blob_path(expected)):
            try:
                return Put(expected, self.blob_path(expected).stat().st_size, False)
            except FileNotFoundError:
                pass  # collected just now: store it again
        staged = self.stage_file(src, link=move)
        try:
            if expected is not None and staged.digest != expected:
                raise IntegrityError(
                    f"{src} changed while it was being added (hashed as {expected}, copied as {staged.digest})"
                )
        except BaseException:
            staged.discard()
            raise
        return self.publish_staged(staged)

    def stage_file(self, src: Path, *, link: bool = False, sha256: bool = False) -> Staged:
        """A read-only temp copy of ``src`` (a hard link with ``link``, else a reflink, else a
        kernel copy), hashed once: what is published is exactly what was hashed. The source is
        read once; a kernel copy is hashed from the new file a step at a time as it is written
        (fs/linking.copy), a reflink or link once it is made."""
        src = Path(src)
        tmp = self.tmp_path()
        hasher = None
        try:
            try:
                if not link:
                    raise linking.LinkUnsupported("copy requested")
                linking.hardlink(src, tmp)
                method = "hardlink"
            except linking.LinkUnsupported:
                hasher = None if sha256 else StreamHasher()
                method = linking.reflink_or_copy(src, tmp, hasher)
            os.chmod(tmp, 0o444)  # with a hard link, the source's inode: nobody writes it from here on
            if sha256:
                return _staged_sha256(tmp, method)
            if method == "copy" and hasher is not None:  # hashed from the copy as it was written
                return Staged(tmp, hasher.digest(), hasher.size, method)
            digest, size = hash_file(tmp)
            return Staged(tmp, digest, size, method)
        except BaseException as e:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(e, OSError):
                raise translate_os_error(e, self.layout.tmp, os.stat(src).st_size if src.exists() else None) from e
            raise

    def publish_staged(self, staged: Staged) -> Put:
        try:
            return self._publish_blob(staged.tmp, staged.digest, staged.size, staged.method)
        except OSError as e:
            raise translate_os_error(e, self.layout.tmp, staged.size) from e
        finally:
            staged.discard()

    def _publish_blob(self, tmp: Path, digest: Digest, size: int, method: str) -> Put:
        final = self.blob_path(digest)
        self.stamp_now(tmp, digest)  # the mark of an unchanged blob (store/stamps.py)
        if publish_file(tmp, final, root=self.root, exclusive=False):
            return Put(digest, size, True, method)
        self.touch(final)
        return Put(digest, size, False)

    def iter_blobs(self) -> Iterator[tuple[Digest, Path]]:
        for d in sorted(self.blob_digests()):
            yield d, self.blob_path(d)

    def blob_digests(self) -> set[Digest]:
        """Every blob by its name, without a stat (GC, `cas doctor`; `cas du` goes through
        store/listing.py, which caches these names by directory)."""
        out: set[Digest] = set()
        for sub in self.blob_dirs():
            out.update(Digest.unchecked(self.blob_names(sub)))
        return out

    def blob_dirs(self) -> list[str]:
        """The ``blobs/XX`` directories by name; anything else under ``blobs/`` (a symlink above
        all: ``unsafe_links`` reports it) is skipped."""
        root = self.layout.blobs
        out = []
        with os.scandir(root) as it:
            for e in it:
                if len(e.name) == 2 and e.is_dir(follow_symlinks=False):
                    out.append(e.name)
        return out

    def unsafe_links(self) -> list[Path]:
        """Symlinks where a store has only real directories and files: the top directories and
        the fan-out directories of blobs, manifests and chunk maps (`cas verify`, `cas doctor`)."""
        out = []
        for top in ("blobs", "manifests", "chunks", "refs", "views", "tmp", "leases", "roots", "quarantine", "cache"):
            p = self.root / top
            if os.path.islink(p):
                out.append(p)
            elif top in ("blobs", "manifests", "chunks") and p.is_dir():
                out += [Path(e.path) for e in os.scandir(p) if e.is_symlink()]
        return out

    def blob_names(self, sub: str) -> list[str]:
        """The blob names in ``blobs/<sub>``: all checked in one match (100k blobs for `cas du`);
        a foreign name is skipped (`cas doctor` reports it)."""
        names = [n for n in os.listdir(os.path.join(self.layout.blobs, sub)) if n[:2] == sub]
        if not all_hex(names):
            names = [n for n in names if all_hex([n])]
        return names

    # manifests ---------------------------------------------------------------------------------

    def put_manifest(self, m: Manifest) -> Digest:
        """Write a manifest; every blob it lists must already be in the store (invariant 3)."""
        missing = [e for e in m.entries if not self.has_blob(e.digest)]
        if missing:
            raise IntegrityError(
                f"refusing to write manifest {m.name}@{m.version}: {len(missing)} blob(s) missing, "
                f"e.g. {missing[0].digest} for {missing[0].path}"
            )
        data = m.encode()
        digest = Digest.of_bytes(data)
        final = self.layout.manifest(digest)
        for _ in range(3):  # there, or refreshed where it is: a GC deciding on it now keeps it
            if write_file(final, data, self.layout.tmp, root=self.root, exclusive=False) or self.touch(final):
                break
            # set aside by a GC between the two: write it again (one copy remains if it is put back)
        return digest

    def has_manifest(self, d: Digest) -> bool:
        return self.layout.manifest(d).exists()

    def get_manifest(self, d: Digest) -> Manifest:
        """The manifest ``d``, checked against its digest."""
        return Manifest.decode(self.manifest_bytes(d), source=str(self.layout.manifest(d)))

    def manifest_bytes(self, d: Digest) -> bytes:
        """The bytes of manifest ``d``, checked against its digest."""
        p = self.layout.manifest(d)
        try:
            return self._manifest_bytes(d, p)
        except FileNotFoundError:
            raise NotFound(f"manifest {d} is not in the store {self.root}") from None

    def manifest_blobs(self, d: Digest, mine: Path | None = None) -> dict[str, int]:
        """GC's read of manifest ``d``: the blobs it lists by hex, with their sizes (model/manifest.blob_sizes),
        checked against its digest, from wherever it is now (``in_flight``; ``mine``: where this GC
        set it aside, if it did). A ref naming a manifest another GC holds aside is not broken."""
        try:
            return self.in_flight(d, lambda p: blob_sizes(self._manifest_bytes(d, p), source=str(p)),
                                  manifest=True, mine=mine)
        except FileNotFoundError:
            raise NotFound(f"manifest {d} is not in the store {self.root}") from None

    def _manifest_bytes(self, d: Digest, p: Path) -> bytes:
        data = p.read_bytes()
        if Digest.of_bytes(data) != d:
            raise IntegrityError(f"manifest file {p} does not match its digest {d}")
        return data

    def in_flight(self, d: Digest, read: Callable[[Path], T], *, manifest: bool = False, mine: Path | None = None) -> T:
        """``read(path)`` of object ``d`` where it is now: at its name (or ``mine``), else where a GC
        running now holds it aside (``set_aside``; that GC puts back what a lease or ref needs).
        It may move between two looks (renamed aside; linked back, then unlinked), so a miss
        everywhere is believed only after a few rounds; the last one raises FileNotFoundError."""
        final = self.layout.manifest(d) if manifest else self.blob_path(d)
        for _ in range(3):
            for p in (mine, final):
                try:
                    if p is not None:
                        return read(p)
                except FileNotFoundError:
                    pass
            if (aside := self.set_aside(d, manifest=manifest)) is not None:  # listed only after a miss
                try:
                    return read(aside)
                except FileNotFoundError:
                    pass
        return read(final)

    def quarantine_blob(self, d: Digest) -> Path:
        """Move a blob that does not hold its digest's bytes out of ``blobs/`` (GC removes it later)."""
        dest = self.layout.quarantine / f"{d.hex}.{int(time.time())}.{os.getpid()}"
        os.rename(self.blob_path(d), dest)
        return dest

    def assert_unchanged(self, m: Manifest, what: str) -> None:
        """Raise ``BlobsChanged`` (after quarantining them) if any blob of ``m`` was written through
        a materialised file since it was stored (store/stamps.py)."""
        from casstore.errors import BlobsChanged
        from casstore.store.hashcache import HashCache

        bad = stamps.changed(self, m.entries, HashCache())
        if not bad:
            return
        stuck = ""
        for e in bad:
            try:
                self.quarantine_blob(e.digest)
            except FileNotFoundError:
                pass
            except OSError as err:  # a store this process can only read: its owner must repair it
                stuck = f"; it could not be moved ({err.strerror}): ask the store's owner to run `cas verify`"
        names = ", ".join(e.path for e in m.entries if e.digest in {b.digest for b in bad})
        raise BlobsChanged(
            f"{m.name}@{m.version}: {names} changed in the store after it was stored (written through a hard-linked "
            f"checkout or a view's symlink?); moved to quarantine/ so nothing serves it again. `cas fetch "
            f"{m.name}@{m.version}` brings a good copy ({what}){stuck}", [e.digest for e in bad])

    def quarantine_manifest(self, d: Digest) -> None:
        """Move a manifest file that does not match its digest out of the way (as `verify` does a blob)."""
        dest = self.layout.quarantine / f"{d.hex}.{int(time.time())}.{os.getpid()}.json"
        try:
            os.rename(self.layout.manifest(d), dest)
        except FileNotFoundError:
            pass

    def iter_manifests(self) -> Iterator[Digest]:
        for d, _ in self._manifest_entries():
            yield d

    def manifest_mtimes(self) -> dict[Digest, float]:
        """Each manifest's mtime (GC and the reports read them all: 10,000 stats by a ``Path``
        each were 0.2 s of `cas list`); one that went since the listing is left out."""
        out = {}
        for d, e in self._manifest_entries():
            try:
                out[d] = e.stat().st_mtime
            except FileNotFoundError:
                continue
        return out

    def _manifest_entries(self) -> Iterator[tuple[Digest, os.DirEntry]]:
        root = str(self.layout.manifests)
        for sub in sorted(os.listdir(root)):
            try:
                with os.scandir(os.path.join(root, sub)) as it:
                    entries = sorted((e for e in it if e.name.endswith(".json")), key=lambda e: e.name)
            except (NotADirectoryError, FileNotFoundError):
                continue
            for e in entries:
                try:
                    yield Digest(e.name[:-5]), e
                except InvalidInput:
                    continue

    # resolving references ----------------------------------------------------------------------

    def resolve(self, model: str, version: str | None = None) -> tuple[str, Digest]:
        """``MODEL[@VERSION]`` to (version, manifest digest); no version means current. A version
        the store holds only part of (a selective fetch) resolves to that part."""
        if version is None:
            cur = self.refs.current(model)
            if cur is None:
                if not self.refs.tags(model):
                    raise NotFound(f"model {model} is not in the store {self.root}{_did_you_mean(model, self.refs.models())}")
                raise NotFound(f"model {model} has no current version; pick one with `cas use {model}@VERSION`")
            return cur.version, cur.manifest
        d = self.refs.get_tag(model, version) or self.refs.get_partial(model, version)
        if d is None:
            tags = self.refs.tags(model)
            if not tags and self.refs.current(model) is None:
                raise NotFound(f"{model}@{version} is not in the store {self.root}: no model {model} here"
                               f"{_did_you_mean(model, self.refs.models())}")
            raise NotFound(f"{model}@{version} is not in the store {self.root} (versions here: "
                           f"{', '.join(tags) or 'none'}){_did_you_mean(version, list(tags))}")
        return version, d

    def load(self, model: str, version: str | None = None) -> tuple[str, Digest, Manifest]:
        version, d = self.resolve(model, version)
        return version, d, self.get_manifest(d)

    def now(self) -> float:
        """The store's own clock: the mtime its filesystem gives a fresh file (invariant 6)."""
        p = self.tmp_path("clock.")
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            return p.stat().st_mtime
        except OSError:
            return time.time()
        finally:
            try:
                os.unlink(p)
            except OSError:
                pass  # never created (a read-only store)
