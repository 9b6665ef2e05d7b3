"""cas.lock: for each model, the requirement, the resolved version, the manifest digest and the
manifest's file list, so a pull request shows exactly which weight files changed.

JSON, stable: models sorted by name, one file per line, a trailing newline. Parsed strictly,
like everything that may have been edited by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .digest import Digest
from .errors import InvalidInput
from .manifest import Manifest
from .names import validate_model, validate_version
from .paths import check_tree, validate_path

SCHEMA = 1


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
    def of(cls, requirement: str, version: str, digest: Digest, m: Manifest) -> "Locked":
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
    def decode(cls, data: bytes, source: str = "cas.lock") -> "LockFile":
        try:
            obj = json.loads(data.decode("utf-8"))
            if not isinstance(obj, dict) or obj.get("casstore_lock") != SCHEMA:
                raise ValueError("not a casstore lock file (schema 1)")
            models = {}
            for name, lk in obj["models"].items():
                validate_model(name)
                files = tuple(LockedFile(validate_path(f["path"]), _int(f["size"]), Digest.parse(f["digest"]))
                              for f in lk["files"])
                check_tree(f.path for f in files)
                if list(files) != sorted(files, key=lambda f: f.path):
                    raise ValueError(f"files of {name} are not sorted by path")
                models[name] = Locked(str(lk["requirement"]), validate_version(lk["version"]),
                                      Digest.parse(lk["manifest"]), files)
        except InvalidInput as e:
            raise InvalidInput(f"{source}: {e}") from e
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise InvalidInput(f"{source} is not a valid lock file: {e}") from e
        return cls(models)


def _int(x) -> int:
    if type(x) is not int or x < 0:
        raise ValueError(f"bad size {x!r}")
    return x
