"""`cas add`: snapshot a directory or a file as MODEL@VERSION.

Order (invariant 3): scan and validate everything, hash, check formats and free space, then write
blobs, then the manifest, then the tag, then (for a model's first version) the current pointer.
A crash at any point leaves only temp files and unreferenced blobs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from casstore.errors import CasError, Conflict, IntegrityError, InvalidInput, SourceUnreadable
from casstore.fs.atomic import out_of_space, remove_tree
from casstore.fs.scan import SourceFile, scan
from casstore.model import formats, runtime
from casstore.model.digest import Digest, hash_file, hash_file_sha256
from casstore.model.globs import ALWAYS_EXCLUDED, DEFAULT_EXCLUDES, PathFilter
from casstore.model.manifest import Entry, Manifest
from casstore.model.names import validate_model, validate_version
from casstore.model.paths import check_tree
from casstore.ops.checkout import build_links, prebuild_view
from casstore.progress import Ticker
from casstore.store import summaries
from casstore.store.hashcache import HashCache
from casstore.store.leases import Lease
from casstore.store.markers import record_use
from casstore.store.objects import Staged, Store

__all__ = ["AddResult", "SourceFile", "add", "scan"]

log = logging.getLogger("casstore")


@dataclass
class AddResult:
    model: str
    version: str
    manifest: Digest
    files: int
    bytes: int
    new_blobs: int = 0
    new_bytes: int = 0
    hashed_bytes: int = 0
    cache_hits: int = 0
    unchanged: bool = False
    methods: dict[str, int] = field(default_factory=dict)  # how new blobs got in: reflink, copy, hardlink
    replaced: Digest | None = None
    current: bool = False
    excluded: list[str] = field(default_factory=list)  # source paths left out, and the pattern that did it
    warnings: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "manifest": str(self.manifest),
            "files": self.files,
            "bytes": self.bytes,
            "new_blobs": self.new_blobs,
            "new_bytes": self.new_bytes,
            "hashed_bytes": self.hashed_bytes,
            "cache_hits": self.cache_hits,
            "unchanged": self.unchanged,
            "methods": self.methods,
            "replaced": str(self.replaced) if self.replaced else None,
            "current": self.current,
            "excluded": self.excluded,
            "warnings": self.warnings,
            "elapsed": round(self.elapsed, 3),
        }


def add(
    store: Store,
    source: str | os.PathLike,
    model: str,
    version: str,
    *,
    note: str = "",
    breaking: bool = False,
    meta: dict[str, str] | None = None,
    requires: list[str] | tuple[str, ...] = (),
    force: bool = False,
    move: bool = False,
    strict: bool = False,
    jobs: int = 4,
    cache: HashCache | None = None,
    exclude: Sequence[str] = (),
    default_excludes: bool = True,
    allow_lfs_pointers: bool = False,
    sha256: bool = False,
    files: list[SourceFile] | None = None,
    leave_links: bool | None = None,
    warn=None,
    progress=None,
) -> AddResult:
    """Snapshot ``source`` as ``model@version``. ``progress(done, total)``: bytes hashed, then
    written (the total grows by the new blobs' bytes once hashing has found them).

    ``sha256`` records each file's SHA-256 beside its BLAKE3 digest, from the same read.
    ``files`` (from `cas import`) replaces the scan of ``source``: each file is hashed again
    whatever the hash cache says, and one whose SHA-256 differs from what its source claims
    stops the add before anything is published."""
    t0 = time.monotonic()
    requires = runtime.parse(requires)  # a typo in a requirement stops here, before any hashing
    validate_model(model)
    validate_version(version)
    excluded: list[str] = []
    if files is None:
        try:
            path_filter = PathFilter([*ALWAYS_EXCLUDED, *(DEFAULT_EXCLUDES if default_excludes else ()), *exclude])
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        files = scan(Path(source), exclude=path_filter, allow_lfs_pointers=allow_lfs_pointers, excluded=excluded)
        rehash = False
    else:
        check_tree(f.path for f in files)
        rehash = True
    want_sha = sha256 or any(f.sha256 for f in files)
    cache = cache if cache is not None else HashCache()
    result = AddResult(model, version, Digest("0" * 64), len(files), sum(f.st.st_size for f in files),
                       excluded=excluded)
    if excluded:
        log.info("excluded %d source paths: %s", len(excluded), ", ".join(excluded[:10]))

    # --move hashes once: a file whose blob is not known to be here is hard-linked into the
    # store's tmp, made read-only, hashed there and published under that digest. A copy is hashed
    # first (a file the store already has is then never copied: a second model sharing files
    # with the first costs a read, not a write), then copied and hashed again as it is copied
    # (fs/linking.copy), unless no manifest of the store lists a blob of its size: such a file
    # is copied and hashed once, as --move stages it (``unheard_of``). A version that exists
    # already is hashed first either way, so that a conflict is found before anything is made
    # read-only.
    staged: dict[str, Staged] = {}
    shas: dict[str, str] = {}  # manifest path -> SHA-256, when wanted
    cached = {f.path: None if rehash else cache.get(f.st) for f in files}
    known = {path: d for path, d in cached.items() if d is not None and store.has_blob(d)}
    first_add = store.refs.get_tag(model, version) is None
    stage_all = move and first_add
    unheard_of = (_sizes_not_listed(store, [f for f in files if cached[f.path] is None])
                  if first_add and not move else set())
    leave_links = move if leave_links is None else leave_links

    def cached_sha(f: SourceFile, d: Digest) -> bool:
        """Without a SHA-256 wanted, or with one known for ``d``, the cached digest will do."""
        if not want_sha:
            return True
        sha = cache.sha256_of(d)
        if sha is not None:
            shas[f.path] = sha
        return sha is not None

    def digest_of(f: SourceFile) -> tuple[Digest, int]:
        if f.path in known and cached_sha(f, known[f.path]) and store.touch(store.blob_path(known[f.path])):
            return known[f.path], 0
        if stage_all or f.st.st_size in unheard_of:
            return stage(f)
        d = cached[f.path]
        if d is not None and cached_sha(f, d):
            return d, 0
        try:
            if want_sha:
                d, size, shas[f.path] = hash_file_sha256(f.abspath)
                cache.put_sha256(d, shas[f.path])
            else:
                d, size = hash_file(f.abspath)
        except OSError as e:
            raise SourceUnreadable(f"cannot read source file {f.abspath}: {e.strerror}") from e
        if size != f.st.st_size:
            raise IntegrityError(f"{f.abspath} changed size while it was being added")
        cache.put(f.st, d)
        return d, size

    def stage(f: SourceFile) -> tuple[Digest, int]:
        try:
            with open(f.abspath, "rb"):  # a source we cannot read is the source's fault, not the store's
                pass
        except OSError as e:
            raise SourceUnreadable(f"cannot read source file {f.abspath}: {e.strerror}") from e
        s = store.stage_file(f.abspath, link=move, sha256=want_sha)
        staged[f.path] = s
        if s.size != f.st.st_size:
            raise IntegrityError(f"{f.abspath} changed size while it was being added")
        cache.put(f.st, s.digest)
        if s.sha256 is not None:
            shas[f.path] = s.sha256
            cache.put_sha256(s.digest, s.sha256)
        return s.digest, s.size

    for f in files:  # headers only, and before anything is staged (or, with --move, made read-only)
        for problem in formats.check_file(f.abspath, f.path):
            msg = f"{f.path}: {problem}"
            if strict:
                raise InvalidInput(f"malformed file {f.abspath}: {problem}")
            result.warnings.append(msg)
            if warn:
                warn(msg)

    try:
        tick = Ticker(progress, result.bytes)
        # Largest first: the last file to start is then a small one, not a shard that leaves one
        # thread hashing alone at the end (SHA-256 of one file cannot be split).
        by_size = sorted(range(len(files)), key=lambda i: -files[i].st.st_size)
        hashed: list[tuple[Digest, int]] = [(Digest("0" * 64), 0)] * len(files)
        # Progress counts the version's bytes once: a file whose blob must still be copied in is
        # half done when hashed, the rest when written (owed); one already here, or linked, is done.
        owed: dict[Digest, int] = {}  # a new blob's bytes still to count when it is written
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            for i, h in zip(by_size, pool.map(digest_of, [files[i] for i in by_size])):
                f = files[i]
                hashed[i] = h
                if f.path in staged or h[0] in owed or store.has_blob(h[0]):
                    tick(f.st.st_size)
                else:
                    tick(f.st.st_size // 2)
                    owed[h[0]] = f.st.st_size - f.st.st_size // 2
                log.info("%s: %s (%d bytes%s)", f.path, h[0], f.st.st_size, "" if h[1] else ", hash cache")
        digests = [d for d, _ in hashed]
        result.hashed_bytes = sum(n for _, n in hashed)
        result.cache_hits = cache.hits
        for f in files:  # before anything is published: a source that lies gets nothing in
            if f.sha256 is not None and shas.get(f.path) != f.sha256:
                raise IntegrityError(
                    f"{f.abspath} ({f.path}) has SHA-256 {shas.get(f.path)}, but {f.claimed_by or 'its source'} "
                    f"names it {f.sha256}: the file is damaged or not the one published; nothing was added")

        manifest = Manifest(
            name=model,
            version=version,
            entries=tuple(Entry(f.path, f.st.st_size, d, f.mode, shas.get(f.path) if want_sha else None)
                          for f, d in zip(files, digests)),
            # No clock in the identity: the same files under the same name, version and notes give the
            # same manifest on every machine, so a second publisher is a no-op, not a conflict. The
            # index records when a version was published; SOURCE_DATE_EPOCH sets a date on purpose.
            created=int(os.environ.get("SOURCE_DATE_EPOCH") or 0),
            note=note,
            breaking=breaking,
            meta={**(meta or {}), **({runtime.META_KEY: runtime.encode(requires)} if requires else {})},
        )

        existing = store.refs.get_tag(model, version)
        reuse = None  # the published manifest, when it already lists exactly these files
        if existing is not None and store.has_manifest(existing):
            if _same_content(store.get_manifest(existing), manifest):
                reuse = existing
            elif not force:
                raise Conflict(
                    f"{model}@{version} is already published as {existing} with other content; "
                    "versions never move silently (use a new version, or --force)"
                )

        with Lease(store, f"add {model}@{version}", [*digests, manifest.digest()]):
            return _write(store, files, digests, manifest, result, reuse, t0, force=force, move=move, jobs=jobs, tick=tick,
                          owed=owed, staged=staged, leave_links=leave_links)
    finally:
        for s in staged.values():  # linked into tmp but not published (an error, or a duplicate)
            s.discard()


PREHASH_WORTH = 64 << 20  # below this many bytes to hash, a first hash costs less than reading the sizes
# What reading the sizes costs, against what a first hash of the files would (2 vCPUs, a store of
# 1M blobs): ~10 ns per byte of the summaries file, ~5 ms per manifest it lacks, ~0.35 ns per
# byte hashed. So it is read only within a 32nd of the bytes to hash, a missing manifest
# counted as 512 KiB of file.
_AFFORD = 32
_PER_MANIFEST = 512 << 10


def _sizes_not_listed(store: Store, fresh: list[SourceFile]) -> set[int]:
    """The sizes of ``fresh`` (files to hash) that no manifest of the store lists a blob of: such
    a file cannot be a blob a version holds, so hashing it before the copy would only hash it
    twice. The sizes come from the reports' cache of manifests (store/summaries.py). A blob of
    no manifest is missed, and so is a file that another of ``fresh`` duplicates (shards of one
    size are common, duplicates rare): each is then copied, and the extra copy dropped at
    publishing. Only time is at stake, never which bytes are stored."""
    to_hash = sum(f.st.st_size for f in fresh)
    try:
        budget = to_hash // _AFFORD - os.stat(store.layout.root / summaries.FILE).st_size
    except FileNotFoundError:
        budget = to_hash // _AFFORD
    if to_hash < PREHASH_WORTH or budget < 0:
        return set()
    loaded = summaries.load(store)
    manifests = list(store.iter_manifests())
    if (len(manifests) - len(loaded[1].keys() & set(manifests))) * _PER_MANIFEST > budget:
        return set()  # too many manifests the cache lacks: parsing them would cost more than it saves
    summaries.summaries(store, manifests, loaded)
    return {f.st.st_size for f in fresh} - set(loaded[0].sizes)


def _write(store, files, digests, manifest, result, reuse, t0, *, force, move, jobs, tick, owed, staged,
           leave_links) -> AddResult:
    """Blobs, then the manifest, then the tag: while a lease keeps GC off all of them."""
    first: dict[Digest, SourceFile] = {}
    for f, d in zip(files, digests):
        first.setdefault(d, f)
    new = [d for d in first if not store.has_blob(d)]
    if not move:  # staged files are already in tmp: only the rest still needs room
        needed = sum(first[d].st.st_size for d in new if first[d].path not in staged)
        free = _free_bytes(store.layout.tmp)
        if needed > free:
            raise out_of_space(store.layout.tmp, needed)
    if new:
        store.make_blob_dirs(new)

    def put(item: tuple[Digest, SourceFile]):
        d, f = item
        s = staged.pop(f.path, None)
        if s is not None and s.digest == d:
            return store.publish_staged(s)
        return store.put_file(f.abspath, expected=d, move=move)

    built_for = manifest.digest() if reuse is None else None
    early: Future[Path | None] | None = None
    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            if built_for is not None:  # the view's links, while the blobs are written
                early = pool.submit(_early_links, store, built_for, manifest)
            for p in pool.map(put, first.items()):
                tick(owed.pop(p.digest, 0))
                if p.new:
                    result.new_blobs += 1
                    result.new_bytes += p.size
                    result.methods[p.method] = result.methods.get(p.method, 0) + 1
        tick(sum(owed.values()))  # blobs another writer stored meanwhile: done too
        _finish(store, files, digests, first, manifest, result, reuse, force=force, leave_links=leave_links)
        links = early.result() if early is not None and result.manifest == built_for else None
        prebuild_view(store, result.manifest, manifest, links=links)  # a read-only mount of this store can serve it
    finally:  # links the view did not take (renamed into place, or removed): an error, another manifest won
        if early is not None and (left := early.result()) is not None and left.exists():
            remove_tree(left)
    result.elapsed = time.monotonic() - t0
    return result


def _early_links(store: Store, digest: Digest, manifest: Manifest) -> Path | None:
    try:
        return build_links(store, store.layout.view(digest), manifest)
    except (OSError, CasError) as e:
        log.info("the view's links of %s were not built beside its blobs (%s); built after them", digest, e)
        return None


def _finish(store, files, digests, first, manifest, result, reuse, *, force, leave_links) -> None:
    """After the blobs: the manifest and the tag (or, for a version already published with these
    files, only what a new one would get), and the use."""
    model, version = manifest.name, manifest.version
    if leave_links:
        for f, d in zip(files, digests):
            _leave_link(store, f.abspath, d)

    if reuse is not None:  # blobs are back if any had gone; nothing else to write
        result.manifest, result.unchanged = reuse, True
        _current_if_none(store, model, version, result)  # as a new version would be (the model's current was removed)
        record_use(store, model, version)  # its view is built next: a store from before views were built at add has none
        return
    for d, f in first.items():  # a blob collected between our check and now is stored again
        if not store.has_blob(d):
            store.put_file(f.abspath, expected=d, move=False)
    result.manifest = store.put_manifest(manifest)
    try:
        result.replaced = store.refs.set_tag(model, version, result.manifest, force=force)
    except Conflict:
        # Another writer tagged this version first; fine if it holds the same files.
        winner = store.refs.get_tag(model, version)
        if winner is None or not _same_content(store.get_manifest(winner), manifest):
            raise
        result.manifest, result.unchanged = winner, True
    _current_if_none(store, model, version, result)
    record_use(store, model, version)


def _current_if_none(store: Store, model: str, version: str, result: AddResult) -> None:
    """A model with no current version (its first add, or its current one removed) gets this one."""
    if store.refs.current(model) is None:
        try:
            store.refs.switch(model, version, result.manifest, action="add", expect=None)
            result.current = True
        except Conflict:
            pass  # another writer made a version current at the same moment


def _same_content(a: Manifest, b: Manifest) -> bool:
    return (len(a.entries) == len(b.entries) and all(x.same_file(y) for x, y in zip(a.entries, b.entries))
            and (a.note, a.breaking, dict(a.meta)) == (b.note, b.breaking, dict(b.meta)))


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _leave_link(store: Store, src: Path, d: Digest) -> None:
    """After --move: make ``src`` a read-only hard link to the blob (a symlink across devices)."""
    blob = store.blob_path(d)
    try:
        if os.path.samefile(src, blob):
            return
    except FileNotFoundError:
        pass
    tmp = src.parent / f".{src.name}.cas-link.tmp"
    try:
        os.link(blob, tmp)
    except OSError:
        os.symlink(blob, tmp)
    os.replace(tmp, src)
