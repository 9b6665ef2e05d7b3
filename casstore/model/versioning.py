"""Ordering versions: semantic versions first (pre-releases below their release), then others.

Only what fetch needs to pick "the latest"; requirement ranges belong to projects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SEMVER = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")


def sort_key(version: str) -> tuple:
    m = _SEMVER.fullmatch(version)
    if m is None:
        return (0, version)  # not semver: below every semver, ordered by text
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3] or 0), m[4]
    pre_key: tuple = (1,) if pre is None else (0, *[(0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")])
    return (1, major, minor, patch, pre_key)


def is_prerelease(version: str) -> bool:
    m = _SEMVER.fullmatch(version)
    return bool(m and m[4])


def latest(versions: Iterable[str], *, prereleases: bool = False) -> str | None:
    candidates = [v for v in versions if prereleases or not is_prerelease(v)]
    return max(candidates, key=sort_key, default=None)
