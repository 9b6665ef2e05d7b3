"""`cas verify`: re-hash blobs (or check sizes), quarantine corrupt ones, check refs and formats.

A corrupt blob is moved out of ``blobs/`` so the store never serves it again; a later fetch or
add brings a good copy back. The report names every version and path that used it.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from casstore.errors import CasError, UnsafeDestination
from casstore.model import formats
from casstore.model.digest import Digest, hash_file, hash_file_sha256
from casstore.ops.checkout import view_problem
from casstore.progress import Ticker
from casstore.store import stamps
from casstore.store.hashcache import HashCache
from casstore.store.objects import Store

log = logging.getLogger("casstore")


@dataclass
class Problem:
    kind: str  # corrupt | wrong-size | missing | bad-ref | bad-manifest | unsafe | bad-view | format | sha256
    what: str  # digest, ref or path
    detail: str
    used_by: list[str] = field(default_factory=list)  # "model@version:path"
    size: int | None = None  # a blob's size per its manifests, for --repair

    def to_json(self) -> dict:
        return {"kind": self.kind, "what": self.what, "detail": self.detail, "used_by": self.used_by}

    @property
    def repairable(self) -> bool:
        return self.kind in ("corrupt", "wrong-size", "missing") and self.size is not None


@dataclass
class VerifyReport:
    blobs: int = 0
    bytes: int = 0
    manifests: int = 0
    problems: list[Problem] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(p.kind != "format" for p in self.problems)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "manifests": self.manifests,
            "problems": [p.to_json() for p in self.problems],
            "quarantined": self.quarantined,
            "elapsed": round(self.elapsed, 3),
        }


def verify(
    store: Store, model: str | None = None, version: str | None = None, *, fast: bool = False, jobs: int = 2,
    sha256: bool = False, progress=None,
) -> VerifyReport:
    """Re-hash (or, ``fast``, size) every blob in scope. ``progress(done, total)``: bytes checked.
    ``sha256`` also checks the SHA-256 manifests record (a mismatch with the right BLAKE3 digest
    is the manifest's lie, not a corrupt blob: reported, never quarantined)."""
    t0 = time.monotonic()
    report = VerifyReport()
    # Which manifests are in scope, and who uses each blob.
    scope: dict[Digest, list[str]] = {}  # manifest digest -> refs naming it
    models = [model] if model else store.refs.models()
    for mdl in models:
        tags = store.refs.tags(mdl)
        if model and not tags and store.refs.current(mdl) is None:
            store.resolve(mdl)  # raises NotFound naming the store
        if version is not None:
            d = store.refs.get_tag(mdl, version)
            if d is None:
                store.resolve(mdl, version)  # raises NotFound with the versions present
            assert d is not None
            tags = {version: d}
        for v, d in tags.items():
            scope.setdefault(d, []).append(f"{mdl}@{v}")
        cur = store.refs.current(mdl) if version is None else None
        if cur is not None:
            scope.setdefault(cur.manifest, []).append(f"{mdl} (current: {cur.version})")
    if model is None:
        for d in store.iter_manifests():
            scope.setdefault(d, [])

    users: dict[Digest, list[str]] = {}
    sizes: dict[Digest, int] = {}
    format_checks: dict[Digest, str] = {}
    claimed: dict[Digest, dict[str, list[str]]] = {}  # blob -> SHA-256 a manifest records -> who says so
    for md, names in scope.items():
        try:
            m = store.get_manifest(md)
        except CasError as e:
            kind = "bad-ref" if names else "bad-manifest"
            report.problems.append(Problem(kind, str(md), str(e), names))
            continue
        report.manifests += 1
        label = f"{m.name}@{m.version}"
        view_path = store.layout.view(md)
        why = view_problem(store, view_path, m)
        if why not in (None, "absent"):
            report.problems.append(Problem("bad-view", str(view_path), f"{view_path} {why}; `cas path {label}` builds "
                                           "it again", names))
        for entry in m.entries:
            users.setdefault(entry.digest, []).append(f"{label}:{entry.path}")
            if sha256 and entry.sha256 is not None:
                claimed.setdefault(entry.digest, {}).setdefault(entry.sha256, []).append(f"{label}:{entry.path}")
            sizes[entry.digest] = entry.size
            if entry.path.endswith((".json", ".safetensors")):
                format_checks.setdefault(entry.digest, entry.path)

    for link in store.unsafe_links():
        report.problems.append(Problem("unsafe", str(link), f"{link} is a symlink, which casstore never makes in a "
                                       "store: whatever it points to is not the store's; move it away"))
    if model is None:
        present = dict(store.iter_blobs())
    else:
        present = {d: store.blob_path(d) for d in users if _has_blob(store, d)}
    for d in users:
        if d not in present:
            report.problems.append(Problem("missing", str(d), "blob is not in the store", users[d], sizes.get(d)))

    cache = HashCache()

    def check(item: tuple[Digest, Path]) -> Problem | None:
        d, path = item
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                # a symlink or device under blobs/ never came from casstore: its bytes are not
                # the store's, whatever they hash to
                return Problem("corrupt", str(d), f"{path} is not a regular file")
            if d in sizes and st.st_size != sizes[d]:
                return Problem("wrong-size", str(d), f"{path} has {st.st_size} bytes, manifests say {sizes[d]}")
            # --fast: sizes and stamps (store/stamps.py); only a blob whose stamp says it may have
            # changed (written through a link, or from a store before stamps) is hashed
            if d in claimed:
                got, size, sha = hash_file_sha256(path)
                if got == d and (liars := {s: who for s, who in claimed[d].items() if s != sha}):
                    return Problem("sha256", str(d), f"{path} has SHA-256 {sha}, but "
                                   + "; ".join(f"{', '.join(who[:3])} record {s}" for s, who in liars.items()))
            elif fast and (stamps.is_stamped(st) or cache.get(st) == d):
                return None
            else:
                got, size = hash_file(path)
        except OSError as e:
            return Problem("corrupt", str(d), f"cannot read {path}: {e.strerror}")
        if got != d:
            why = "" if stamps.is_stamped(st) else " (its mtime says it was written after it was stored)"
            return Problem("corrupt", str(d), f"{path} hashes to {got}{why}")
        if d in sizes and size != sizes[d]:
            return Problem("wrong-size", str(d), f"{path} has {size} bytes, manifests say {sizes[d]}")
        if not stamps.is_stamped(st):
            try:
                stamps.stamp(path, store.clock.now(), st.st_atime_ns)  # right bytes: the mark again
            except OSError:
                cache.put(st, d)  # a store this process may not change: remembered on this machine
        return None

    on_disk = {}
    for d, path in present.items():
        try:
            on_disk[d] = path.lstat().st_size
        except OSError:
            on_disk[d] = 0
    items = sorted(present.items(), key=lambda kv: on_disk[kv[0]], reverse=True)  # largest first: no long tail
    report.blobs, report.bytes = len(items), sum(on_disk.values())
    tick = Ticker(progress, report.bytes)
    bad: list[tuple[Digest, Path]] = []
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for (d, path), problem in zip(items, pool.map(check, items)):
            tick(on_disk[d])
            log.info("%s %s: %s", "sized" if fast else "hashed", d, "ok" if problem is None else problem.kind)
            if problem is None:
                continue
            problem.used_by = users.get(d, [])
            problem.size = sizes.get(d)
            report.problems.append(problem)
            if problem.kind != "sha256":  # the bytes are right: nothing to quarantine
                bad.append((d, path))
    # Every corrupt blob is in the report before any is moved: a failure below cannot hide one.
    for d, path in bad:
        try:
            report.quarantined.append(str(_quarantine(store, d, path)))
        except OSError as e:
            report.problems.append(Problem("corrupt", str(d), f"could not move {path} to quarantine: {e.strerror}",
                                           users.get(d, []), sizes.get(d)))

    if not fast:
        for d, rel in format_checks.items():
            if d in present and store.has_blob(d):
                for finding in formats.check_file(store.blob_path(d), rel):
                    report.problems.append(Problem("format", str(d), f"{rel}: {finding}", users[d]))
    report.elapsed = time.monotonic() - t0
    return report


def _has_blob(store: Store, d: Digest) -> bool:
    try:
        return store.has_blob(d)
    except UnsafeDestination:
        return False  # behind a symlinked directory: reported as "unsafe", never read


def _quarantine(store: Store, d: Digest, path: Path) -> Path:
    return store.quarantine_blob(d)


async def repair(store: Store, remotes, report: VerifyReport, *, settings=None, progress=None):
    """Fetch good copies of the corrupt (now quarantined) and missing blobs ``report`` found;
    returns the download's ``Stats``, or None if nothing was repairable."""
    from casstore.transfer.download import Downloader, Settings

    wants = {Digest.parse(p.what): p.size for p in report.problems if p.repairable and p.size is not None}
    if not wants:
        return None
    return await Downloader(store, remotes, settings or Settings.from_env(), progress).fetch(wants)
