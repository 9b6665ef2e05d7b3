"""Running a GC plan against a live store: refs first, blobs last, each blob re-checked at the last
moment (docs/architecture.md, invariants 3 and 7)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from casstore.errors import InvalidInput
from casstore.fs.atomic import link_no_replace, remove_tree
from casstore.fs.writers import temp_name
from casstore.gc.housekeeping import clean
from casstore.gc.planner import Plan
from casstore.gc.policy import Policy
from casstore.gc.state import read_state
from casstore.model.digest import Digest
from casstore.store import chunkmaps
from casstore.store.leases import live_leases
from casstore.store.markers import marked, unmark
from casstore.store.objects import Store

# Called with the digest after a blob was moved aside and before the last check (tests use it to
# act at exactly that moment, as a concurrent writer or a kill would).
after_set_aside = None


@dataclass
class GcResult:
    versions: int = 0
    manifests: int = 0
    blobs: int = 0
    bytes_freed: int = 0
    spared: int = 0  # planned but found in use or refreshed at the last check
    cleaned: int = 0  # dead leases, abandoned temp files, expired history records
    elapsed: float = 0.0

    def to_json(self) -> dict:
        return dict(self.__dict__)


def execute(store: Store, p: Plan, policy: Policy) -> GcResult:
    t0 = time.monotonic()
    res = GcResult()
    for model, version, md in p.delete_versions:
        cur = store.refs.current(model)
        if (store.refs.get_tag(model, version) != md or (cur is not None and cur.version == version)
                or version in marked(store, model, "pins")):
            res.spared += 1
            continue
        store.refs.delete_tag(model, version)
        for kind in ("used", "keep"):
            unmark(store, model, version, kind)
        res.versions += 1
    for model in store.refs.models():
        res.cleaned += store.refs.compact_history(model)
    # Mark again from what is live now: refs and leases may have changed since the plan.
    now_state = read_state(store)
    live_manifests = {v.manifest for v in now_state.versions} | set(now_state.extra)
    reachable = set(now_state.leased)
    for v in now_state.versions:
        reachable |= v.blobs
    for blobs in now_state.extra.values():
        reachable |= blobs
    old_enough = now_state.now - policy.grace
    for md in p.delete_manifests:
        path = store.layout.manifest(md)
        try:
            if md in live_manifests or md in now_state.leased or path.stat().st_mtime >= old_enough:
                res.spared += 1
                continue
            os.unlink(path)
            res.manifests += 1
        except FileNotFoundError:
            continue
        view = store.layout.view(md)
        if view.is_dir():
            remove_tree(view)
    trash = store.layout.gc_trash
    trash.mkdir(exist_ok=True)
    recover_trash(store, reachable | set(live_leases(store)[0]), old_enough)
    for d in p.delete_blobs:
        if d in reachable:
            res.spared += 1
            continue
        final = store.blob_path(d)
        aside = trash / f"{d.hex}.{temp_name()}"
        try:
            if final.stat().st_mtime >= old_enough:  # refreshed since the re-mark: do not even move it
                res.spared += 1
                continue
            os.rename(final, aside)
        except FileNotFoundError:
            continue
        if after_set_aside is not None:
            after_set_aside(d)
        held, _ = live_leases(store)
        try:
            st = aside.stat()
        except FileNotFoundError:
            continue
        if d in held or st.st_mtime >= old_enough:  # a writer refreshed or leased it meanwhile
            if not link_no_replace(aside, final):
                os.unlink(aside)
            res.spared += 1
            continue
        os.unlink(aside)
        chunkmaps.discard(store, d)
        res.blobs += 1
        res.bytes_freed += st.st_size
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


def recover_trash(store: Store, reachable: set[Digest], old_enough: float) -> None:
    """Put back blobs a GC set aside and was killed before deciding on (if anything needs them)."""
    trash = store.layout.gc_trash
    for entry in os.scandir(trash) if trash.is_dir() else []:
        try:
            d = Digest(entry.name.split(".", 1)[0])
            if d in reachable or entry.stat().st_mtime >= old_enough:
                if not link_no_replace(Path(entry.path), store.blob_path(d)):
                    os.unlink(entry.path)
        except (InvalidInput, FileNotFoundError):
            continue
