"""Running a GC plan against a live store: refs first, blobs last, each object re-checked at the
last moment (docs/architecture.md, invariants 3 and 7).

1. A version's tag goes only if ``root_reasons`` (the planner's one rule) finds no reason to keep
   it when the version is re-read now, file by file by name (``state.read_version``).
2. Every planned manifest and blob is set aside: renamed into ``tmp/gc-trash*/``, unless its
   mtime says a writer refreshed it since the plan. From here on a writer that looks for it
   finds it missing and writes it again.
3. On a network filesystem, GC waits ``settle`` seconds (``CAS_NAS_SETTLE``; 60 s there, 0 on a
   local disk): another client's lease, tag or refresh written before the set-aside may stay out
   of this client's directory listings and attribute cache that long.
4. The store is marked again from scratch, and the tags the plan knew are re-opened by name (a
   NAS client answers an open from the server, a listing perhaps from its cache). Whatever is now
   reachable, leased, refreshed, or (for a manifest) named by a ref that its own content names,
   is put back; the rest is unlinked, blobs by several threads at once. If the re-mark fails,
   everything goes back.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from casstore.config import env
from casstore.errors import CasError, InvalidInput
from casstore.fs.atomic import fsync_dir, link_no_replace, remove_tree
from casstore.fs.mounts import NETWORK_SETTLE, is_network
from casstore.fs.writers import temp_name
from casstore.gc.housekeeping import clean
from casstore.gc.planner import Plan, root_reasons
from casstore.gc.policy import Policy
from casstore.gc.state import read_state, read_version
from casstore.model import values
from casstore.model.digest import Digest
from casstore.model.keys import blob_key, manifest_key
from casstore.model.manifest import MAX_MANIFEST_BYTES
from casstore.model.strictjson import field as typed
from casstore.model.strictjson import load_file
from casstore.store import chunkmaps
from casstore.store.leases import live_leases
from casstore.store.markers import unmark
from casstore.store.objects import Store
from casstore.store.roots import project_roots

log = logging.getLogger("casstore")

# Called with the digest after an object (blob or manifest) was moved aside and before the last
# check (tests use it to act at exactly that moment, as a concurrent writer or a kill would).
after_set_aside = None
after_tags = None  # called once the tags are deleted, before anything is set aside

# Blobs unlinked at once, in runs of consecutive digests (so of neighbouring fan-out directories).
# On this ext4 disk one unlinker took 7.7 s for 99k small set-aside blobs, 2 took 5.3 s, 4 3.2 s,
# 8 2.5 s, 16 3.0 s (docs/benchmarks.md, "cas gc against rm, unlinks overlapped").
UNLINKERS = 8
UNLINK_RUN = 1024


@dataclass
class GcResult:
    versions: int = 0
    manifests: int = 0
    blobs: int = 0
    bytes_freed: int = 0
    spared: int = 0  # planned but found in use or refreshed at the last check
    cleaned: int = 0  # dead leases, abandoned temp files, expired history records
    settled: float = 0.0  # seconds waited for a network filesystem's caches
    elapsed: float = 0.0

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Aside:
    digest: Digest
    final: str  # paths as strings: a sweep sets 100k of them aside, and a Path each cost a third of it
    aside: str


def settle_time(store: Store) -> float:
    return env("CAS_NAS_SETTLE", values.seconds, NETWORK_SETTLE if is_network(store.root) else 0.0)


def execute(store: Store, p: Plan, policy: Policy) -> GcResult:
    t0 = time.monotonic()
    res = GcResult()
    now = store.now()
    projects = project_roots(store).manifests
    leased = frozenset(live_leases(store, now).check())
    emptied: set[Path] = set()  # ref directories to fsync once, before any object goes (invariant 3)
    for model, version, md in p.delete_versions:
        fresh = read_version(store, model, version, projects)
        if fresh is None or fresh.manifest != md or root_reasons(fresh, policy, now, leased):
            res.spared += 1
            continue
        if fresh.partial:
            store.refs.delete_partial(model, version, only=md, sync=False)
            emptied.add(store.layout.partials(model))
        else:
            store.refs.delete_tag(model, version, sync=False)
            emptied.add(store.layout.tags(model))
        for kind in ("used", "keep", "released"):
            unmark(store, model, version, kind)
        res.versions += 1
    for d in sorted(emptied):
        fsync_dir(d)
    for model in store.refs.models():
        res.cleaned += store.refs.compact_history(model)
    if after_tags is not None:
        after_tags()

    old_enough = now - policy.grace
    for d in (store.layout.gc_trash, store.layout.gc_trash_manifests):
        d.mkdir(parents=True, exist_ok=True)
    root, me = str(store.layout.root), temp_name()  # one writer id for this sweep's aside names
    manifests = [a for md in p.delete_manifests if (a := _set_aside(
        md, os.path.join(root, manifest_key(md)), str(store.layout.gc_trash_manifests), me, old_enough, res))
        is not None]
    trash = str(store.layout.gc_trash)
    blobs = [a for d in p.delete_blobs if (a := _set_aside(
        d, os.path.join(root, blob_key(d)), trash, me, old_enough, res)) is not None]
    try:
        res.settled = settle_time(store) if manifests or blobs else 0.0
        if res.settled:
            log.warning("gc: waiting %.0fs for other NAS clients' caches before the last check "
                        "(CAS_NAS_SETTLE)", res.settled)
            time.sleep(res.settled)
        # Mark again from what is live now, tags the plan knew re-opened by name.
        now_state = read_state(store, probe=[(m, v) for m, v, _ in p.delete_versions],
                               aside={a.digest: Path(a.aside) for a in manifests}, list_blobs=False)
    except BaseException:
        for a in manifests + blobs:
            _put_back(a)
        raise
    live_manifests = {v.manifest for v in now_state.versions} | set(now_state.extra) | set(policy.protect)
    live_manifests.update(now_state.leased)  # type: ignore[arg-type]  # GC's state names blobs by Digest
    reachable: set[Digest] = set(now_state.leased)  # type: ignore[arg-type]
    for v in now_state.versions:
        reachable.update(v.blobs)  # type: ignore[arg-type]
    for blobs_of in now_state.extra.values():
        reachable.update(blobs_of)  # type: ignore[arg-type]
    # "Refreshed since" counts from the sweep's start: a writer that touched a set-aside blob
    # after it is spared even with no grace at all (the clock read again for the re-mark came
    # later than such a touch, and with --grace 0 the blob went: a flaky test showed it).
    old_enough = min(old_enough, now_state.now - policy.grace)
    mine = {os.path.basename(a.aside) for a in manifests + blobs}
    recover_trash(store, reachable, live_manifests, old_enough, skip=mine)
    locked = project_roots(store).manifests if manifests else {}  # once, after the settle

    for a in manifests:
        if (a.digest in live_manifests or _fresh(a, old_enough) is None or _named_by_refs(store, a, locked)
                or not _unlink_aside(a)):
            _put_back(a)
            res.spared += 1
            continue
        res.manifests += 1
        view = store.layout.view(a.digest)
        if os.path.isdir(view) and not os.path.islink(view):
            remove_tree(view)
    _unlink_blobs(store, blobs, reachable, old_enough, res)

    still_junk = {path: (size, mtime) for path, size, mtime in now_state.junk}
    for junk in p.delete_junk:  # only what is still junk (a partial may have been adopted since)
        if junk in still_junk and still_junk[junk][1] < old_enough:
            try:
                os.unlink(junk)
                res.bytes_freed += still_junk[junk][0]
                res.cleaned += 1
            except FileNotFoundError:
                pass
    res.cleaned += clean(store, policy.grace)
    res.elapsed = time.monotonic() - t0
    return res


def _unlink_blobs(store: Store, blobs: list[Aside], reachable: set[Digest], old_enough: float,
                  res: GcResult) -> None:
    """The set-aside blobs' last check and unlink, ``UNLINKERS`` runs of them at once: each
    decision stands alone (``reachable`` is fixed by now), and an unlink here mostly waits in the
    kernel rather than computes, so several overlap where one after the other they would queue."""
    mapped = set(chunkmaps.cached(store)) if blobs else set()  # one listing, not an unlink per blob

    def run(part: list[Aside]) -> tuple[int, int, int]:
        gone = freed = spared = 0
        for a in part:
            if a.digest in reachable or (size := _fresh(a, old_enough)) is None or not _unlink_aside(a):
                _put_back(a)  # refreshed or leased meanwhile (or put back already)
                spared += 1
                continue
            if a.digest in mapped:
                chunkmaps.discard(store, a.digest)
            gone += 1
            freed += size
        return gone, freed, spared

    parts = [blobs[i:i + UNLINK_RUN] for i in range(0, len(blobs), UNLINK_RUN)]
    if len(parts) <= 1:
        counts = list(map(run, parts))
    else:
        with ThreadPoolExecutor(min(UNLINKERS, len(parts)), thread_name_prefix="gc-unlink") as pool:
            futures = [pool.submit(run, part) for part in parts]
        # Every run ended before a failure is raised: ``map`` would cancel the runs not yet started,
        # leaving their blobs aside without a last check (one a writer refreshed meanwhile among them).
        counts = [f.result() for f in futures]
    for gone, freed, spared in counts:
        res.blobs += gone
        res.bytes_freed += freed
        res.spared += spared


def _set_aside(d: Digest, final: str, trash: str, me: str, old_enough: float, res: GcResult) -> Aside | None:
    """Rename ``final`` out of its name, unless a writer refreshed it since the plan (or it is gone).
    ``me``: this sweep's temp name (its writer id), unique per object with the digest before it."""
    aside = f"{trash}/{d.hex}.{me}"
    try:
        if os.stat(final).st_mtime >= old_enough:  # refreshed since the plan: do not even move it
            res.spared += 1
            return None
        os.rename(final, aside)
    except FileNotFoundError:
        return None
    if after_set_aside is not None:
        after_set_aside(d)
    return Aside(d, final, aside)


def _fresh(a: Aside, old_enough: float) -> int | None:
    """The set-aside object's size if it may go: None if a writer refreshed it since (its mtime),
    or someone else took it from the trash (not ours to judge any more)."""
    try:
        st = os.stat(a.aside)
    except FileNotFoundError:
        return None
    return None if st.st_mtime >= old_enough else st.st_size


def _unlink_aside(a: Aside) -> bool:
    """The last step for an object this GC set aside; False if it is no longer there: another
    GC's ``recover_trash``, which judged it live from its own read, put it back meanwhile
    (tests/test_stress.py found it), so it is kept, not counted as freed."""
    try:
        os.unlink(a.aside)
        return True
    except FileNotFoundError:
        return False


def _put_back(a: Aside) -> None:
    try:
        if not link_no_replace(Path(a.aside), Path(a.final)):  # written again meanwhile: ours is a duplicate
            os.unlink(a.aside)
    except FileNotFoundError:
        pass


def _named_by_refs(store: Store, a: Aside, locked) -> bool:
    """Does a ref name this manifest now? Its content says which model and version it is, so the
    tag and the current pointer are opened by name; any project registration naming it counts too.
    A manifest that cannot be read is kept (fail closed)."""
    try:
        doc = load_file(a.aside, what="manifest", max_bytes=MAX_MANIFEST_BYTES, follow_symlinks=False)
        model, version = typed(doc, "name", str, where=str(a.aside)), typed(doc, "version", str, where=str(a.aside))
        if a.digest in (store.refs.get_tag(model, version), store.refs.get_partial(model, version)):
            return True
        cur = store.refs.current(model)
        if cur is not None and cur.manifest == a.digest:
            return True
    except FileNotFoundError:
        return True
    except (OSError, InvalidInput, CasError):
        return True
    return a.digest in locked


def recover_trash(store: Store, reachable: set[Digest], live_manifests: set[Digest], old_enough: float,
                  skip: frozenset[str] | set[str] = frozenset()) -> None:
    """Put back what a GC set aside and was killed before deciding on (if anything needs it)."""
    for trash, final, live in ((store.layout.gc_trash, store.blob_path, reachable),
                               (store.layout.gc_trash_manifests, store.layout.manifest, live_manifests)):
        for entry in os.scandir(trash) if trash.is_dir() else []:
            try:
                if entry.name in skip or not entry.is_file(follow_symlinks=False):
                    continue
                d = Digest(entry.name.split(".", 1)[0])
                if d in live or entry.stat(follow_symlinks=False).st_mtime >= old_enough:
                    _put_back(Aside(d, str(final(d)), entry.path))
            except (InvalidInput, FileNotFoundError):
                continue
