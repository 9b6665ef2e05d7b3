"""The per-model version index a remote publishes: ``index/<model>.json``.

A static file server can serve it, so fetch needs no code on the server. It is updated last
when publishing (after blobs and manifest) and validated like everything from a remote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .digest import Digest
from .errors import Conflict, InvalidInput
from .manifest import Manifest, encode_canonical
from .names import validate_model, validate_version

SCHEMA = 1
MAX_INDEX_BYTES = 64 << 20


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
    def decode(cls, data: bytes, *, source: str, model: str) -> "Index":
        if len(data) > MAX_INDEX_BYTES:
            raise InvalidInput(f"{source}: version index larger than {MAX_INDEX_BYTES} bytes")
        try:
            obj = json.loads(data.decode("utf-8"))
            if not isinstance(obj, dict) or obj.get("casstore_index") != SCHEMA:
                raise ValueError(f"unknown index schema {obj.get('casstore_index') if isinstance(obj, dict) else obj!r}")
            if obj.get("model") != model:
                raise ValueError(f"index is for model {obj.get('model')!r}, not {model!r}")
            versions = {}
            for v, e in obj["versions"].items():
                validate_version(v)
                if not isinstance(e, dict):
                    raise ValueError(f"entry for {v!r} is not an object")
                ints = [e.get(k) for k in ("created", "size", "files")]
                if not all(type(x) is int and x >= 0 for x in ints) or type(e.get("breaking")) is not bool:
                    raise ValueError(f"malformed entry for version {v!r}")
                versions[v] = IndexEntry(Digest.parse(e["manifest"]), *ints[:1], e["breaking"], *ints[1:])
        except InvalidInput as e:
            raise InvalidInput(f"{source}: {e}") from e
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise InvalidInput(f"{source}: not a valid version index: {e}") from e
        return cls(validate_model(model), versions)

    def publish(self, version: str, digest: Digest, m: Manifest, *, force: bool = False) -> None:
        old = self.versions.get(version)
        if old is not None and old.manifest != digest and not force:
            raise Conflict(
                f"{self.model}@{version} is already published on the remote as {old.manifest}; "
                f"refusing to move it to {digest} (use a new version, or --force)"
            )
        self.versions[version] = IndexEntry(digest, m.created, m.breaking, m.size, len(m.entries))
