"""Version requirements in cas.toml: ``"1.1.0"`` (exact), ``"^1.1"``, ``"~1.1"``, ``">=1.0, <2"``,
``"latest"``. A pure module: parsing, matching and resolving against a list of versions.

Pre-releases match only when asked for (``prereleases=True``) or when the requirement names one
exactly, as in Cargo and npm.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from casstore.errors import InvalidInput
from casstore.model.versioning import is_prerelease, sort_key

_NUM = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?")
_CMP = re.compile(r"\s*(>=|<=|>|<|=|==)?\s*(\S+)\s*")


def _key(text: str, req: str) -> tuple:
    m = _NUM.fullmatch(text)
    if m is None:
        raise InvalidInput(f"invalid version requirement {req!r}: {text!r} is not a version")
    return sort_key(f"{m[1]}.{m[2] or 0}.{m[3] or 0}" + (f"-{m[4]}" if m[4] else ""))


@dataclass(frozen=True)
class Requirement:
    text: str
    bounds: tuple[tuple[str, tuple], ...]  # (op, sort key); empty: any version
    exact: str | None = None

    @classmethod
    def parse(cls, text: str) -> Requirement:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"invalid version requirement {text!r}")
        t = text.strip()
        if t in ("latest", "*"):
            return cls(t, ())
        if t[0] in "^~":
            m = _NUM.fullmatch(t[1:])
            if m is None:
                raise InvalidInput(f"invalid version requirement {text!r}")
            major, minor, patch = int(m[1]), int(m[2] or 0), int(m[3] or 0)
            lo = _key(t[1:], text)
            if t[0] == "~":
                hi = (major, minor + 1, 0) if m[2] is not None else (major + 1, 0, 0)
            elif major > 0 or m[2] is None:
                hi = (major + 1, 0, 0)
            elif minor > 0 or m[3] is None:
                hi = (0, minor + 1, 0)
            else:
                hi = (0, 0, patch + 1)
            return cls(t, ((">=", lo), ("<", sort_key("{}.{}.{}-0".format(*hi)))))
        if any(c in t for c in "<>=,"):
            bounds = []
            for part in t.split(","):
                m = _CMP.fullmatch(part)
                if m is None or not m[2]:
                    raise InvalidInput(f"invalid version requirement {text!r}")
                op = {None: "==", "=": "=="}.get(m[1], m[1])
                bounds.append((op, _key(m[2], text)))
            return cls(t, tuple(bounds))
        return cls(t, (), exact=t)  # a plain version: exactly that one (semver or not)

    def matches(self, version: str, *, prereleases: bool = False) -> bool:
        if self.exact is not None:
            return version == self.exact
        if is_prerelease(version) and not prereleases:
            return False
        k = sort_key(version)
        if k[0] == 0 and self.bounds:
            return False  # not a semantic version: only exact requirements name it
        ops = {">=": k.__ge__, "<=": k.__le__, ">": k.__gt__, "<": k.__lt__, "==": k.__eq__}
        return all(ops[op](bound) for op, bound in self.bounds)

    def resolve(self, versions: Iterable[str], *, prereleases: bool = False) -> str | None:
        return max((v for v in versions if self.matches(v, prereleases=prereleases)), key=sort_key, default=None)
