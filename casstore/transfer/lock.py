"""The per-blob download lock (docs/architecture.md, invariant 5): it only saves bandwidth. A lock
file records host, pid and time, is refreshed while held, is taken over when its writer is gone
(fs/writers.py), and a waiter says who it waits for every 10 s and gives up after
``lock_timeout`` with ``LockTimeout``. If it failed, both processes would download and the first
link would win."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from casstore.errors import LockTimeout
from casstore.fs.atomic import write_file
from casstore.fs.writers import Writer, describe, gone, holder_of, read_holder
from casstore.model.digest import Digest

log = logging.getLogger("casstore")


async def acquire(store, d: Digest, stale_after: float, timeout: float) -> Path | None:
    """Take the blob's download lock; None if the blob appeared while we waited.

    The lock file is written complete and then linked into place, so a reader never sees an
    empty one and mistakes a starting holder for a dead one.
    """
    lock = store.layout.locks / f"{d.hex}.lock"
    warned = False
    t0 = last_said = time.monotonic()
    while True:
        if store.has_blob(d):
            return None
        data = json.dumps({**Writer.me().record(), "time": time.time()}).encode()
        if write_file(lock, data, store.layout.tmp, mode=0o664):
            return lock
        holder = read_holder(lock)
        if stale(store, lock, holder, stale_after):
            if not warned:
                log.warning("taking over stale download lock %s (held by %s)", lock, describe(holder))
                warned = True
            release(lock)
            continue
        waited = time.monotonic() - t0
        if waited > timeout:
            raise LockTimeout(f"gave up after {waited:.0f}s waiting for {describe(holder)} to finish downloading "
                              f"{d} (lock {lock}); CAS_LOCK_TIMEOUT sets how long to wait")
        if time.monotonic() - last_said >= 10:
            log.warning("waiting %.0fs so far for %s, which is downloading %s", waited, describe(holder), d)
            last_said = time.monotonic()
        await asyncio.sleep(0.2)


def stale(store, lock: Path, holder: dict | None, stale_after: float) -> bool:
    try:
        return gone(holder_of(holder), lock.stat().st_mtime, store.now(), stale_after)
    except FileNotFoundError:
        return True


async def keep_fresh(lock: Path, every: float) -> None:
    """Refresh the lock's mtime while the download runs (cancel to stop)."""
    while True:
        await asyncio.sleep(every)
        try:
            os.utime(lock)
        except OSError:
            pass


def release(lock: Path) -> None:
    try:
        os.unlink(lock)
    except FileNotFoundError:
        pass
