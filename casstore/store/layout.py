"""Where each thing lives inside a store directory (see docs/format.md).

    <root>/casstore.json                      {"casstore_store": 1}: the format version
    <root>/blobs/<hh>/<hex>                   file contents, read-only (model/keys.py)
    <root>/chunks/<hh>/<hex>                  the blob's chunk map (delta updates), a cache
    <root>/manifests/<hh>/<hex>.json          canonical manifest bytes, named by their digest
    <root>/cache/manifest-summaries           what `cas list`/`du` need of each manifest, a cache
    <root>/cache/fresh/<hhh>                  fresh marks: when blobs were last made fresh (store/freshmarks.py)
    <root>/refs/<model>/tags/<version>        "blake3:<hex>\\n": the version's manifest
    <root>/refs/<model>/history/<seq>.json    one immutable file per current-pointer switch
    <root>/refs/<model>/keep/<version>        rollback roots kept by `cas update` (store/markers.py)
    <root>/refs/<model>/pins/<version>        pinned versions
    <root>/refs/<model>/used/<version>        mtime: when the version was last used
    <root>/roots/projects/<key>.json          projects whose cas.lock GC must honour
    <root>/roots/exports/<key>.json           HF-cache and OCI exports, kept while they exist
    <root>/views/<manifest hex>/              read-only symlink trees built by `cas path`
    <root>/tmp/                               writer-unique temp files
    <root>/tmp/downloads/<hex>.<writer>.part  partial downloads (+ .progress records)
    <root>/tmp/locks/<hex>.lock               download locks (host, pid, time)
    <root>/tmp/gc-trash/                      blobs GC set aside before its last check
    <root>/tmp/gc-trash-manifests/            manifests, likewise
    <root>/quarantine/                        blobs that failed verification
    <root>/leases/                            operations in flight (used by GC)

Every path is derived here from a parsed ``Digest`` or a validated name, never from raw text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from casstore.model.digest import Digest
from casstore.model.keys import STORE_FORMAT_FILE, TMP, blob_key, chunks_key, manifest_key, tags_key
from casstore.model.names import model_part, validate_version

FORMAT_FILE = STORE_FORMAT_FILE
FORMAT_VERSION = 1
# Made when first written, so that a store from before them still opens on a read-only mount.
LAZY_DIRS = ("chunks", "cache")
TOP_DIRS = ("blobs", "manifests", "refs", "roots", "views", "tmp", "quarantine", "leases")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def format_file(self) -> Path:
        return self.root / FORMAT_FILE

    @property
    def tmp(self) -> Path:
        return self.root / TMP

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def downloads(self) -> Path:
        return self.root / TMP / "downloads"

    @property
    def locks(self) -> Path:
        return self.root / TMP / "locks"

    @property
    def gc_trash(self) -> Path:
        return self.root / TMP / "gc-trash"

    @property
    def gc_trash_manifests(self) -> Path:
        return self.root / TMP / "gc-trash-manifests"

    @property
    def leases(self) -> Path:
        return self.root / "leases"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def refs(self) -> Path:
        return self.root / "refs"

    def chunk_map(self, d: Digest) -> Path:
        return self.root / chunks_key(d)

    def blob(self, d: Digest) -> Path:
        return self.root / blob_key(d)

    def manifest(self, d: Digest) -> Path:
        return self.root / manifest_key(d)

    def model_dir(self, model: str) -> Path:
        return self.root / "refs" / model_part(model)

    def tags(self, model: str) -> Path:
        return self.root / tags_key(model)

    def tag(self, model: str, version: str) -> Path:
        return self.tags(model) / validate_version(version)

    def partials(self, model: str) -> Path:
        return self.model_dir(model) / "partial"

    def partial(self, model: str, version: str) -> Path:
        return self.partials(model) / validate_version(version)

    def history(self, model: str) -> Path:
        return self.model_dir(model) / "history"

    @property
    def project_roots(self) -> Path:
        return self.root / "roots" / "projects"

    def project_root(self, key: str) -> Path:
        return self.project_roots / f"{key}.json"

    @property
    def export_roots(self) -> Path:
        return self.root / "roots" / "exports"

    def markers(self, model: str, kind: str) -> Path:
        return self.model_dir(model) / kind

    def view(self, d: Digest) -> Path:
        return self.root / "views" / d.hex
