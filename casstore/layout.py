"""Where each thing lives inside a store directory (see docs/format.md).

    <root>/casstore.json                      {"casstore_store": 1}: the format version
    <root>/blobs/<hex[:2]>/<hex>              file contents, read-only
    <root>/manifests/<hex[:2]>/<hex>.json     canonical manifest bytes, named by their digest
    <root>/refs/<model>/tags/<version>        "blake3:<hex>\\n": the version's manifest
    <root>/refs/<model>/history/<seq>.json    one immutable file per current-pointer switch
    <root>/refs/<model>/keep/<version>        rollback roots kept by `cas update`
    <root>/roots/projects/<key>.json          projects whose cas.lock GC must honour
    <root>/views/<manifest hex>/              read-only symlink trees built by `cas path`
    <root>/tmp/                               writer-unique temp files
    <root>/quarantine/                        blobs that failed verification
    <root>/leases/                            operations in flight (used by GC)

Every path is derived here from a parsed ``Digest`` or a validated name, never from raw text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .digest import Digest
from .names import validate_model, validate_version

FORMAT_FILE = "casstore.json"
FORMAT_VERSION = 1
TOP_DIRS = ("blobs", "manifests", "refs", "roots", "views", "tmp", "quarantine", "leases")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def format_file(self) -> Path:
        return self.root / FORMAT_FILE

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def refs(self) -> Path:
        return self.root / "refs"

    @property
    def views(self) -> Path:
        return self.root / "views"

    def blob(self, d: Digest) -> Path:
        return self.root / "blobs" / d.hex[:2] / d.hex

    def manifest(self, d: Digest) -> Path:
        return self.root / "manifests" / d.hex[:2] / f"{d.hex}.json"

    def model_dir(self, model: str) -> Path:
        return self.root / "refs" / validate_model(model)

    def tags(self, model: str) -> Path:
        return self.model_dir(model) / "tags"

    def tag(self, model: str, version: str) -> Path:
        return self.tags(model) / validate_version(version)

    def history(self, model: str) -> Path:
        return self.model_dir(model) / "history"

    def view(self, d: Digest) -> Path:
        return self.root / "views" / d.hex
