"""Leases: what an operation in flight (add, fetch, checkout, update) needs GC to keep.

A lease is a file ``leases/<writer id>.json`` listing object digests, written before the
operation writes or relies on them and refreshed (its mtime) while it runs. GC keeps everything
a live lease lists. Whether its writer is gone is fs/writers.py's one rule: at once when the
process is judged dead on this host, else after ``ttl`` seconds without a refresh by the store's
own clock; a dead lease is ignored and later removed. A live lease that cannot be read is
reported (``LeaseScan.unreadable``), and GC stops on it: it cannot know what that lease keeps.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from casstore.errors import CorruptStore, InvalidInput
from casstore.fs.atomic import READ_ONLY, write_file
from casstore.fs.writers import Writer, gone, writer_id
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
        data = json.dumps({**Writer.me().record(), "what": self.what, "time": time.time(),
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


@dataclass
class LeaseScan:
    held: set[Digest] = field(default_factory=set)
    dead: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # live by their mtime, but unparseable

    def check(self) -> set[Digest]:
        """``held``, or ``CorruptStore`` naming every live lease that cannot be read (GC fails closed)."""
        if self.unreadable:
            what = "; ".join(f"{p}: {why}" for p, why in self.unreadable)
            raise CorruptStore(f"cannot read {len(self.unreadable)} live lease(s), so GC cannot know what they keep: "
                               f"{what}. Stopping; remove the file if no operation is running (`cas doctor` lists it)")
        return self.held


def live_leases(store, now: float | None = None, ttl: float = TTL) -> LeaseScan:
    """Digests held by live leases, the paths of dead ones, and live ones that cannot be read."""
    now = store.now() if now is None else now
    scan = LeaseScan()
    d = store.layout.leases
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".json"))
    except FileNotFoundError:
        return scan
    for n in names:
        p = d / n
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue  # released since the listing
        try:
            lease = load_file(p, what="lease", max_bytes=MAX_LEASE_BYTES, follow_symlinks=False, floats=True)
            writer = Writer.from_record(lease)
            digests = [Digest(h) for h in typed(lease, "digests", list, where=str(p))]
        except FileNotFoundError:
            continue
        except (OSError, InvalidInput) as e:
            if now - st.st_mtime > ttl:
                scan.dead.append(p)  # garbage nobody has refreshed for the lease period
            else:
                scan.unreadable.append((p, str(e)))
            continue
        if gone(writer, st.st_mtime, now, ttl):
            scan.dead.append(p)
            continue
        scan.held.update(digests)
    return scan
