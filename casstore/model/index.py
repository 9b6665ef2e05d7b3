"""The per-model version index a remote publishes: ``index/<model>.json``.

A static file server can serve it, so fetch needs no code on the server. It is updated last
when publishing (after blobs and manifest) and validated like everything from a remote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from casstore.errors import Conflict, InvalidInput
from casstore.model import strictjson
from casstore.model.digest import Digest
from casstore.model.manifest import MAX_SIZE, MAX_TIME, Manifest, encode_canonical
from casstore.model.names import validate_model, validate_version

SCHEMA = 1
MAX_INDEX_BYTES = 64 << 20
MAX_VERSIONS = 100_000


@dataclass(frozen=True, slots=True)
class IndexEntry:
    manifest: Digest
    created: int
    breaking: bool
    size: int
    files: int

    def to_json(self) -> dict[str, Any]:
        return {"manifest": str(self.manifest), "created": self.created, "breaking": self.breaking,
                "size": self.size, "files": self.files}


@dataclass
class Index:
    model: str
    versions: dict[str, IndexEntry] = field(default_factory=dict)

    def encode(self) -> bytes:
        return encode_canonical({
            "casstore_index": SCHEMA,
            "model": self.model,
            "versions": {v: e.to_json() for v, e in sorted(self.versions.items())},
        })

    @classmethod
    def decode(cls, data: bytes, *, source: str, model: str) -> Index:
        obj = strictjson.parse(data, source=source, what="version index", max_bytes=MAX_INDEX_BYTES,
                               max_containers=MAX_VERSIONS + 2)
        try:
            if not isinstance(obj, dict) or obj.get("casstore_index") != SCHEMA:
                raise InvalidInput("not a casstore version index (schema 1)")
            if obj.get("model") != model:
                raise InvalidInput(f"index is for model {obj.get('model')!r}, not {model!r}")
            raw = strictjson.field(obj, "versions", dict, where="index")
            versions = {}
            for v, e in raw.items():
                validate_version(v)
                if not isinstance(e, dict):
                    raise InvalidInput(f"entry for {v!r} is not an object")
                where = f"version {v!r}"
                ints = [strictjson.field(e, k, int, where=where) for k in ("created", "size", "files")]
                if min(ints) < 0 or ints[0] > MAX_TIME or max(ints[1:]) > MAX_SIZE:
                    raise InvalidInput(f"{where}: created, size or files out of range ({ints})"[:300])
                versions[v] = IndexEntry(Digest.parse(strictjson.field(e, "manifest", str, where=where)), ints[0],
                                         strictjson.field(e, "breaking", bool, where=where), ints[1], ints[2])
        except InvalidInput as e:
            raise InvalidInput(f"{source}: {e}") from e
        return cls(validate_model(model), versions)

    def publish(self, version: str, digest: Digest, m: Manifest, *, force: bool = False) -> None:
        old = self.versions.get(version)
        if old is not None and old.manifest != digest and not force:
            raise Conflict(
                f"{self.model}@{version} is already published on the remote as {old.manifest}; "
                f"refusing to move it to {digest} (use a new version, or --force)"
            )
        if old is not None and old.manifest == digest:
            return  # published before, by us or by anyone with the same files: nothing changes
        self.versions[version] = IndexEntry(digest, m.created or int(time.time()), m.breaking, m.size, len(m.entries))
