"""`cas doctor`: what is wrong or left over in a store, without changing anything."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from casstore.errors import InvalidInput
from casstore.fs.writers import gone, holder_of, read_holder
from casstore.gc.housekeeping import abandoned, junk_files
from casstore.gc.policy import DEFAULT_GRACE
from casstore.model.digest import Digest
from casstore.ops.checkout import missing_views, view
from casstore.store.layout import FORMAT_FILE, LAZY_DIRS, TOP_DIRS
from casstore.store.leases import live_leases
from casstore.store.objects import Store
from casstore.store.roots import project_roots
from casstore.store.shared import SHARED_FILE, is_shared
from casstore.transfer.settings import Settings


@dataclass
class Finding:
    kind: str  # permissions | stale-lock | orphaned-temp | quarantined | abandoned-partial | dead-lease |
    #            unreadable-lease | unreadable-root | unknown-file | dangling-tag | corrupt-manifest |
    #            corrupt-ref | missing-view | stale-upload | stale-remote-lock (remote)
    path: str
    detail: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "path": self.path, "detail": self.detail}


def build_views(store: Store) -> list[str]:
    """`cas doctor --fix`: the views a store from before add and fetch built them lacks."""
    built = []
    for label, d, m in missing_views(store):
        view(store, d, m)
        built.append(label)
    return built


def diagnose(store: Store, grace: float = DEFAULT_GRACE) -> list[Finding]:
    out: list[Finding] = []
    root = store.root
    now = store.now()
    known = set(TOP_DIRS) | set(LAZY_DIRS) | {FORMAT_FILE, SHARED_FILE}
    for name in sorted(os.listdir(root)):
        if name not in known:
            out.append(Finding("unknown-file", str(root / name), "not part of the store layout"))
    for sub, ok in (("blobs", lambda n: _is_hex(n)), ("manifests", lambda n: n.endswith(".json") and _is_hex(n[:-5]))):
        for dirpath, _, names in os.walk(root / sub):
            for n in names:
                p = os.path.join(dirpath, n)
                if not ok(n):
                    out.append(Finding("unknown-file", p, f"not a {sub[:-1]} name"))
                elif sub == "blobs" and os.stat(p).st_mode & 0o222:
                    out.append(Finding("permissions", p, "blob is writable; a hard-linked checkout could change it"))
    if is_shared(root):
        for dirpath, _dirnames, _ in os.walk(root):
            mode = stat.S_IMODE(os.stat(dirpath).st_mode)
            if mode & 0o2070 != 0o2070:
                out.append(Finding("permissions", dirpath, f"mode {mode:o}: a shared store's directories need g+rwx and setgid"))
    locks = store.layout.locks
    for lock in sorted(locks.glob("*.lock")) if locks.is_dir() else []:
        holder = read_holder(lock) or {}
        age = now - lock.stat().st_mtime
        if gone(holder_of(holder), lock.stat().st_mtime, now, Settings.from_env().stale_after):  # the engine's rule
            out.append(Finding("stale-lock", str(lock), f"held by {holder.get('host', '?')} pid {holder.get('pid', '?')}, "
                                                      f"not refreshed for {age:.0f}s"))
    for e in os.scandir(store.layout.tmp):
        if e.is_file(follow_symlinks=False) and e.name.endswith(".tmp") and now - e.stat().st_mtime > grace:
            dead = abandoned(e.name, e.stat().st_mtime, now, grace)  # the rule `cas gc` applies
            out.append(Finding("orphaned-temp", e.path, f"{now - e.stat().st_mtime:.0f}s old; "
                               + ("`cas gc` removes it" if dead else "its writer may still be alive; `cas gc` keeps it")))
    for path, size, since in junk_files(store, now):
        kind = "quarantined" if os.path.dirname(path) == str(store.layout.quarantine) else "abandoned-partial"
        out.append(Finding(kind, path, f"{size} bytes, {now - since:.0f}s old; counted against gc.max_size; "
                                       f"`cas gc` removes it after the grace period ({grace:.0f}s)"))
    leases = live_leases(store, now)
    for lease in leases.dead:
        out.append(Finding("dead-lease", str(lease), "its process is gone; `cas gc` removes it"))
    for lease, why in leases.unreadable:
        out.append(Finding("unreadable-lease", str(lease), f"{why}; GC stops on it: remove it if no casstore "
                                                           "operation is running"))
    out += _unreadable_refs(store)
    out += _unsafe(store)
    for label, d, _m in missing_views(store):
        out.append(Finding("missing-view", str(store.layout.view(d)), f"{label} is complete but has no sound view: a "
                                                                     "read-only mount of this store cannot serve "
                                                                     "`cas path` of it; `cas doctor --fix` builds it"))
    roots = project_roots(store)
    for path, why in roots.unreadable:
        out.append(Finding("unreadable-root", path, f"{why}; GC stops on it: remove the file if that project is gone "
                                                    "(its next `cas sync` registers it again)"))
    return out


def _unsafe(store: Store) -> list[Finding]:
    """Symlinks where a store has only real directories, and views that are not exactly their
    version's links (on a shared store, a member could point others at files of his own)."""
    from casstore.errors import CasError
    from casstore.ops.checkout import view_problem

    out = [Finding("symlink", str(p), "a symlink where casstore keeps only real directories: what it points to is "
                                      "not the store's; move it away") for p in store.unsafe_links()]
    views = store.layout.root / "views"
    for e in os.scandir(views) if views.is_dir() and not views.is_symlink() else []:
        try:
            d = Digest(e.name)
            m = store.get_manifest(d)
        except (InvalidInput, CasError):
            if e.is_symlink() or not e.is_dir(follow_symlinks=False):
                out.append(Finding("bad-view", e.path, "not a directory casstore built; move it away"))
            continue
        why = view_problem(store, Path(e.path), m)
        if why not in (None, "absent"):
            out.append(Finding("bad-view", e.path, f"{why}; `cas path {m.name}@{m.version}` builds it again"))
    return out


def _unreadable_refs(store: Store) -> list[Finding]:
    """Tags and current pointers whose manifest is missing or corrupt: GC stops on them (it cannot
    know what they keep), so each finding says how to repair or drop it."""
    from casstore.errors import CasError

    out = []
    for model in store.refs.models():
        try:
            tags = store.refs.tags(model)
            cur = store.refs.current(model)
        except CasError as e:
            out.append(Finding("corrupt-ref", str(store.layout.model_dir(model)), f"{e}; move the file away, "
                               "then `cas fetch` the version again"))
            continue
        named = [(f"{model}@{v}", str(store.layout.tag(model, v)), d) for v, d in tags.items()]
        if cur is not None and cur.manifest not in tags.values():
            named.append((f"{model} (current: {cur.version})", str(store.layout.history(model)), cur.manifest))
        for label, path, d in named:
            fix = (f"`cas fetch {label.split(' ')[0]}` fetches it again" if "@" in label else
                   f"`cas use {model}@VERSION` switches to another version")
            if not store.has_manifest(d):
                out.append(Finding("dangling-tag", path, f"{label} names {d}, which is not in the store; {fix}, "
                                                         f"or `cas rm {label.split(' ')[0]} --force` drops it"))
                continue
            try:
                store.get_manifest(d)
            except CasError as e:
                out.append(Finding("corrupt-manifest", str(store.layout.manifest(d)),
                                   f"{label}: {e}; {fix} (the damaged file goes to quarantine/), or "
                                   f"`cas rm {label.split(' ')[0]} --force` drops it"))
    return out


def _is_hex(name: str) -> bool:
    try:
        Digest(name)
        return True
    except InvalidInput:
        return False


async def diagnose_remote(remote, stale_after: float = 86400.0) -> list[Finding]:
    """Leftovers on a remote: multipart uploads nobody will complete (aborted: they cost storage
    and are invisible otherwise) and lock objects of dead processes (removed)."""
    from casstore.remotes.layers import stack
    from casstore.remotes.locks import stale_locks

    remote = stack(remote)  # retries and time limits, as every verb has them (remotes/layers.py)
    out: list[Finding] = []
    if remote.uploads:
        now = await remote.now()
        for key, upload_id, started in await remote.stale_uploads(older_than=now - stale_after):
            await remote.abort_upload(key, upload_id)
            out.append(Finding("stale-upload", remote.describe(key),
                               f"multipart upload started {now - started:.0f}s ago; aborted"))
    if remote.listable:
        for key, age in await stale_locks(remote):
            await remote.delete(key)
            out.append(Finding("stale-remote-lock", remote.describe(key), f"not refreshed for {age:.0f}s; removed"))
    return out
