"""Leases: what an operation in flight (add, fetch, checkout, update) needs GC to keep.

A lease is a file ``leases/<host>.<pid>.<random>.json`` listing object digests, written before
the operation writes or relies on them and refreshed (its mtime) while it runs. GC keeps
everything a live lease lists; a lease not refreshed for ``ttl`` seconds by the store's own
clock belongs to a process that is gone, and is ignored and later removed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from casstore.errors import InvalidInput
from casstore.fs.atomic import READ_ONLY, write_file
from casstore.fs.writers import HOST, writer_id
from casstore.model.digest import Digest
from casstore.model.strictjson import field as typed
from casstore.model.strictjson import load_file

TTL = 600.0  # seconds without a refresh after which a lease is dead
MAX_LEASE_BYTES = 64 << 20
REFRESH = 30.0


class Lease:
    """A context manager held for the duration of the operation."""

    def __init__(self, store, what: str, digests: Iterable[Digest] = ()) -> None:
        self.store = store
        self.what = what
        self.digests: set[Digest] = set(digests)
        self.path = store.layout.leases / (writer_id() + ".json")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        data = json.dumps({"host": HOST, "pid": os.getpid(), "what": self.what, "time": time.time(),
                           "digests": sorted(d.hex for d in self.digests)}).encode()
        write_file(self.path, data, self.store.layout.tmp, mode=0o664, replace=True)

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def __enter__(self) -> Lease:
        try:
            self._write()
        except OSError as e:
            if e.errno not in READ_ONLY:
                raise
            # A store this process can only read: nothing it does here needs protecting from
            # its own GC, and it cannot announce itself to anyone else's.
            self._stop.set()
            return self
        self._thread = threading.Thread(target=self._refresh, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        try:
            os.unlink(self.path)
        except OSError:
            pass  # never written (a store this process can only read)


def live_leases(store, now: float | None = None, ttl: float = TTL) -> tuple[set[Digest], list[Path]]:
    """Digests held by live leases, and the paths of dead ones."""
    now = store.now() if now is None else now
    held: set[Digest] = set()
    dead: list[Path] = []
    d = store.layout.leases
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            st = p.stat()
            if now - st.st_mtime > ttl:
                dead.append(p)
                continue
            lease = load_file(p, what="lease", max_bytes=MAX_LEASE_BYTES, follow_symlinks=False, floats=True)
            for h in typed(lease, "digests", list, where=str(p)):
                held.add(Digest(h))
        except (OSError, InvalidInput):
            continue  # being written, or garbage: not a reason to delete anything
    return held, dead
