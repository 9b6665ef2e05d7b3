"""Leftovers of writers that are gone: temp files, dead leases, abandoned partial downloads and the
quarantine. GC removes them and `cas doctor` reports them by the same rule (fs/writers.py)."""

from __future__ import annotations

import os
from pathlib import Path

from casstore.fs.atomic import fsync_dir, remove_tree
from casstore.fs.writers import gone, parse_writer
from casstore.gc.policy import DAY
from casstore.store import chunkmaps
from casstore.store.leases import live_leases
from casstore.store.objects import Store


def abandoned(name: str, mtime: float, now: float, grace: float) -> bool:
    """Is a temp file's writer gone? Temp files are never refreshed, so a writer on another host
    is judged by a long silence only: a day, or the grace period if longer."""
    return gone(parse_writer(name), mtime, now, max(grace, DAY))


def junk_files(store: Store, now: float):
    """Quarantined blobs, and partial downloads whose writer is gone: (path, size, mtime). They
    count against the size limit and go once past the grace period (quarantine: counted from
    when the file was moved there, which its name records)."""
    q = store.layout.quarantine
    for entry in os.scandir(q) if q.is_dir() else []:
        try:
            st = entry.stat(follow_symlinks=False)
            moved = entry.name.split(".")[1]
            yield entry.path, st.st_size, float(moved) if moved.isdigit() else st.st_mtime
        except (FileNotFoundError, IndexError):
            continue
    dl = store.layout.downloads
    for entry in os.scandir(dl) if dl.is_dir() else []:
        try:
            st = entry.stat(follow_symlinks=False)
            writer = entry.name.split(".", 1)[-1]  # <hex>.<host>.<pid>.<rand>.part
            if abandoned(writer, st.st_mtime, now, 0.0):
                yield entry.path, st.st_blocks * 512, st.st_mtime
        except FileNotFoundError:
            continue


def clean(store: Store, grace: float) -> int:
    """Remove dead leases, temp files whose writers are gone, and chunk maps whose blob is gone."""
    now = store.now()
    dead = live_leases(store, now).dead
    n = 0
    for p in dead:
        try:
            os.unlink(p)
            n += 1
        except FileNotFoundError:
            pass
    tmp = store.layout.tmp
    for entry in os.scandir(tmp):
        try:
            if not abandoned(entry.name, entry.stat(follow_symlinks=False).st_mtime, now, grace):
                continue
            if entry.is_file(follow_symlinks=False) and entry.name.endswith(".tmp"):
                os.unlink(entry.path)
                n += 1
            elif entry.is_dir(follow_symlinks=False) and entry.name.startswith("view."):
                remove_tree(Path(entry.path))
                n += 1
        except FileNotFoundError:
            pass
    for d in (store.layout.gc_trash, store.layout.gc_trash_manifests):  # partials and quarantine: junk_files
        for entry in os.scandir(d) if d.is_dir() else []:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                mtime = entry.stat(follow_symlinks=False).st_mtime
                if abandoned(entry.name.split(".", 1)[-1], mtime, now, grace) and now - mtime > grace:
                    os.unlink(entry.path)
                    n += 1
            except FileNotFoundError:
                pass
    for blob in chunkmaps.cached(store):  # maps whose blob went another way (quarantine, a hand)
        try:
            if not store.has_blob(blob) and now - store.layout.chunk_map(blob).stat().st_mtime > grace:
                chunkmaps.discard(store, blob)
                n += 1
        except FileNotFoundError:
            pass
    fsync_dir(tmp)
    return n
