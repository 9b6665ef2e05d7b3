"""Validation of file paths inside a manifest (docs/architecture.md, invariant 8).

A manifest path is checked here once, when the manifest is parsed, before anything touches a
file; code that later joins it to a destination can rely on it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from casstore.errors import InvalidPath

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
# Characters that are unsafe on some filesystem we materialise to (Windows, SMB shares).
_FORBIDDEN_CHARS = set('\\:*?"<>|')
# ...and control characters (C0, DEL, C1): both found in one scan (GC parses ~1M paths at scale).
_BAD_CHAR = re.compile('[\x00-\x1f\x7f-\x9f\\\\:*?"<>|]')
# A repository's own directory, also as case-insensitive and 8.3-short-name filesystems spell it.
_GIT_NAMES = (".git", "git~1")


def _reject(path: str, why: str) -> InvalidPath:
    return InvalidPath(f"invalid manifest path {path!r}: {why}")


def validate_path(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path, else raise ``InvalidPath``."""
    if not isinstance(path, str):
        raise _reject(path, "not a string")
    if path == "":
        raise _reject(path, "empty")
    if bad := _BAD_CHAR.search(path):
        ch = bad.group()
        if ch in _FORBIDDEN_CHARS:
            raise _reject(path, f"forbidden character {ch!r}")
        raise _reject(path, f"control character U+{ord(ch):04X}")
    if not path.isascii() and unicodedata.normalize("NFC", path) != path:  # ASCII is always NFC
        raise _reject(path, "not in Unicode NFC form")
    if path.startswith("/"):
        raise _reject(path, "absolute")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise _reject(path, "not valid UTF-8 (lone surrogate)") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise _reject(path, f"longer than {MAX_PATH_BYTES} bytes")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise _reject(path, f"component {part!r} is not allowed")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise _reject(path, f"a component is longer than {MAX_COMPONENT_BYTES} bytes")
        if part != part.strip(" ") or part.endswith("."):
            raise _reject(path, "a component ends or starts with a space, or ends with a dot")
        if is_git_name(part):
            raise _reject(path, "a .git component (git would run what is written there)")
    return path


def is_git_name(name: str) -> bool:
    """Is this path component a repository's .git (as any filesystem may spell it)?"""
    return fold(name) in _GIT_NAMES


def fold(path: str) -> str:
    """The key under which two paths collide on a case-insensitive, normalising filesystem."""
    return (path if path.isascii() else unicodedata.normalize("NFC", path)).casefold()


def check_tree(paths: Iterable[str]) -> None:
    """Reject duplicates (also case- or normalisation-insensitively) and file/directory clashes."""
    seen: dict[str, str] = {}
    dirs: dict[str, str] = {}
    files = []
    for p in paths:
        key = fold(p)
        if key in seen:
            raise _reject(p, f"duplicate of {seen[key]!r} (case-insensitively)")
        seen[key] = p
        files.append(key)
        parts = key.split("/")
        for i in range(1, len(parts)):
            dirs.setdefault("/".join(parts[:i]), p)
    for key in files:
        if key in dirs:
            raise _reject(seen[key], f"is a file but also a directory of {dirs[key]!r}")
