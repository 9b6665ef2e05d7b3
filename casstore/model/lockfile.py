"""cas.lock: for each model, the requirement, the resolved version, the manifest digest and the
manifest's file list, so a pull request shows exactly which weight files changed.

JSON, stable: models sorted by name, one file per line, a trailing newline. Parsed strictly,
like everything that may have been edited by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from casstore.errors import InvalidInput
from casstore.model import strictjson
from casstore.model.digest import Digest
from casstore.model.manifest import Manifest
from casstore.model.names import validate_model, validate_version
from casstore.model.paths import check_tree, validate_path

SCHEMA = 1
MAX_LOCK_BYTES = 64 << 20
MAX_LOCK_FILES = 1_000_000


@dataclass(frozen=True)
class LockedFile:
    path: str
    size: int
    digest: Digest


@dataclass(frozen=True)
class Locked:
    requirement: str
    version: str
    manifest: Digest
    files: tuple[LockedFile, ...]

    @classmethod
    def of(cls, requirement: str, version: str, digest: Digest, m: Manifest) -> Locked:
        return cls(requirement, version, digest, tuple(LockedFile(e.path, e.size, e.digest) for e in m.entries))

    def matches(self, m: Manifest) -> bool:
        return self.files == tuple(LockedFile(e.path, e.size, e.digest) for e in m.entries)


@dataclass
class LockFile:
    models: dict[str, Locked] = field(default_factory=dict)

    def encode(self) -> bytes:
        out = ['{', f' "casstore_lock": {SCHEMA},', ' "models": {']
        names = sorted(self.models)
        for i, name in enumerate(names):
            lk = self.models[name]
            out.append(f"  {json.dumps(name)}: {{")
            out.append(f'   "requirement": {json.dumps(lk.requirement)},')
            out.append(f'   "version": {json.dumps(lk.version)},')
            out.append(f'   "manifest": "{lk.manifest}",')
            out.append('   "files": [')
            for j, f in enumerate(lk.files):
                comma = "," if j < len(lk.files) - 1 else ""
                out.append(f'    {{"path": {json.dumps(f.path, ensure_ascii=False)}, "size": {f.size}, "digest": "{f.digest}"}}{comma}')
            out.append("   ]")
            out.append("  }" + ("," if i < len(names) - 1 else ""))
        out += [" }", "}", ""]
        return "\n".join(out).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes, source: str = "cas.lock") -> LockFile:
        obj = strictjson.parse(data, source=source, what="lock file", max_bytes=MAX_LOCK_BYTES,
                               max_containers=MAX_LOCK_FILES)
        try:
            if not isinstance(obj, dict) or obj.get("casstore_lock") != SCHEMA:
                raise InvalidInput("not a casstore lock file (schema 1)")
            models = {}
            for name, lk in strictjson.field(obj, "models", dict, where="lock file").items():
                validate_model(name)
                if not isinstance(lk, dict):
                    raise InvalidInput(f"model {name!r} is not an object")
                files = []
                for i, f in enumerate(strictjson.field(lk, "files", list, where=name)):
                    if not isinstance(f, dict):
                        raise InvalidInput(f"{name}: file {i} is not an object")
                    where = f"{name}: file {i}"
                    files.append(LockedFile(validate_path(strictjson.field(f, "path", str, where=where)),
                                            _int(strictjson.field(f, "size", int, where=where)),
                                            Digest.parse(strictjson.field(f, "digest", str, where=where))))
                check_tree(f.path for f in files)
                if files != sorted(files, key=lambda f: f.path):
                    raise InvalidInput(f"files of {name} are not sorted by path")
                models[name] = Locked(strictjson.field(lk, "requirement", str, where=name),
                                      validate_version(strictjson.field(lk, "version", str, where=name)),
                                      Digest.parse(strictjson.field(lk, "manifest", str, where=name)), tuple(files))
        except InvalidInput as e:
            raise InvalidInput(f"{source}: {e}") from e
        return cls(models)


def _int(x: int) -> int:
    if x < 0:
        raise InvalidInput(f"bad size {x}: negative")
    return x
