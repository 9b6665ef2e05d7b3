"""A machine-local cache of file digests, keyed by (device, inode, size, mtime).

It lives in the user's cache directory, never in a shared store (invariant 13): inode numbers mean
nothing on another machine. It is advisory: any failure just means hashing again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from casstore.errors import InvalidInput
from casstore.model.digest import Digest, is_sha256_hex

# A file modified within this many seconds may change again without its mtime moving
# (coarse timestamps), so its digest is not cached: git's "racy clean" rule.
RACY_SECONDS = 2.0


def default_path() -> Path:
    env = os.environ.get("CAS_HASH_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("casstore")) / "hashes.sqlite"


class HashCache:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, shared by the hashing threads
        self.hits = 0

    def _conn(self) -> sqlite3.Connection | None:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                # An advisory cache: a commit need not reach the disk (WAL with NORMAL stays
                # consistent; a power cut loses only the newest rows, which are hashed again).
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS hashes (dev INTEGER, ino INTEGER, size INTEGER, "
                    "mtime_ns INTEGER, digest TEXT, PRIMARY KEY (dev, ino))"
                )
                # Files casstore itself copied out of the store (checkouts): their ctime too, which
                # no one can set back, so any later write makes the entry miss.
                db.execute(
                    "CREATE TABLE IF NOT EXISTS copies (dev INTEGER, ino INTEGER, size INTEGER, "
                    "mtime_ns INTEGER, ctime_ns INTEGER, digest TEXT, PRIMARY KEY (dev, ino))"
                )
                # SHA-256s of blobs, by BLAKE3 digest: a fact about the bytes, so never stale.
                db.execute("CREATE TABLE IF NOT EXISTS sha256 (digest TEXT PRIMARY KEY, sha256 TEXT)")
                self._db = db
            except sqlite3.Error:
                return None
        return self._db

    def get(self, st: os.stat_result) -> Digest | None:
        d = self._digest("SELECT digest FROM hashes WHERE dev=? AND ino=? AND size=? AND mtime_ns=?",
                         (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        if d is not None:
            self.hits += 1
        return d

    def _digest(self, sql: str, args: tuple) -> Digest | None:
        """The digest one row of ``sql`` names, or None (no row, no database, a damaged row)."""
        with self._lock:
            db = self._conn()
            if db is None:
                return None
            try:
                row = db.execute(sql, args).fetchone()
            except sqlite3.Error:
                return None
        try:
            return Digest(row[0]) if row else None
        except InvalidInput:
            return None

    def put(self, st: os.stat_result, digest: Digest) -> None:
        if time.time() - st.st_mtime < RACY_SECONDS:
            return
        with self._lock:
            db = self._conn()
            if db is None:
                return
            try:
                db.execute(
                    "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)",
                    (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, digest.hex),
                )
            except sqlite3.Error:
                pass

    def sha256_of(self, d: Digest) -> str | None:
        with self._lock:
            db = self._conn()
            if db is None:
                return None
            try:
                row = db.execute("SELECT sha256 FROM sha256 WHERE digest=?", (d.hex,)).fetchone()
            except sqlite3.Error:
                return None
        return row[0] if row and is_sha256_hex(row[0]) else None

    def put_sha256(self, d: Digest, sha256: str) -> None:
        with self._lock:
            db = self._conn()
            if db is None:
                return
            try:
                db.execute("INSERT OR REPLACE INTO sha256 VALUES (?, ?)", (d.hex, sha256))
            except sqlite3.Error:
                pass

    def remember_copy(self, st: os.stat_result, digest: Digest) -> None:
        """A copy (or reflink) of a blob that casstore has just made, as it is now."""
        with self._lock:
            db = self._conn()
            if db is None:
                return
            try:
                db.execute("INSERT OR REPLACE INTO copies VALUES (?, ?, ?, ?, ?, ?)",
                           (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest.hex))
            except sqlite3.Error:
                pass

    def copy_of(self, st: os.stat_result) -> Digest | None:
        """The blob a file is an untouched copy of, if casstore made it and nothing changed it since."""
        return self._digest("SELECT digest FROM copies WHERE dev=? AND ino=? AND size=? AND mtime_ns=? AND ctime_ns=?",
                            (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
