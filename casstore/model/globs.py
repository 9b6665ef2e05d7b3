"""Which relative paths a list of glob patterns selects (`cas add --exclude`, `cas import`), and
which files of a version a command asks for (``Selection``: `--include`/`--exclude` on fetch,
update and sync).

A pattern without ``/`` matches a name at any depth (``*.tmp``, ``.DS_Store``); one with ``/``
matches the whole relative path (``.cache/huggingface``); a trailing ``/`` matches directories
only. ``*`` and ``?`` are fnmatch's. Simple on purpose: gitignore's negations and ``**`` are not
needed to keep litter out of a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from casstore.errors import InvalidInput

# Never part of a model: VCS and tool metadata (HF's --local-dir keeps download timestamps under
# .cache/huggingface/, so including it would give the same weights a new manifest on each
# machine), and editor and OS litter.
ALWAYS_EXCLUDED = (".git/",)  # manifest paths may never hold one (model/paths.py): git would run it
DEFAULT_EXCLUDES = (
    ".hg/", ".svn/", ".cache/huggingface/", ".ipynb_checkpoints/", "__MACOSX/",
    ".DS_Store", "Thumbs.db", "desktop.ini", "*~", ".*.swp", ".~lock.*#", ".*.cas-link.tmp",
)


class PathFilter:
    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = []
        for p in patterns:
            if not isinstance(p, str) or not p.strip("/"):
                raise ValueError(f"empty exclude pattern {p!r}")
            dir_only = p.endswith("/")
            body = p.strip("/")
            self.patterns.append((p, body, dir_only, "/" in body))

    def match(self, rel: str, is_dir: bool = False) -> str | None:
        """The pattern that selects ``rel`` (a POSIX relative path), or None."""
        name = rel.rsplit("/", 1)[-1]
        for pattern, body, dir_only, anchored in self.patterns:
            if dir_only and not is_dir:
                continue
            if fnmatchcase(rel if anchored else name, body):
                return pattern
        return None


@dataclass(frozen=True)
class Selection:
    """The files of a version a command asks for (`--include`/`--exclude`, cas.toml's `include =`):
    a file is selected if some include pattern matches it (or there are none) and no exclude
    pattern does. Patterns as PathFilter's, a directory pattern (``low_noise/``) selecting what
    is under it; as `hf download --include`."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    _inc: PathFilter = field(init=False, repr=False, compare=False)
    _exc: PathFilter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inc", PathFilter(self.include))
        object.__setattr__(self, "_exc", PathFilter(self.exclude))

    @classmethod
    def of(cls, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> Selection | None:
        """None when nothing is selected out (no patterns): the whole version."""
        include = (include,) if isinstance(include, str) else include  # one pattern, not its letters
        exclude = (exclude,) if isinstance(exclude, str) else exclude
        try:
            sel = cls(tuple(dict.fromkeys(include)), tuple(dict.fromkeys(exclude)))
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        return sel if sel.include or sel.exclude else None

    def selects(self, path: str) -> bool:
        return ((not self.include or _matches(self._inc, path)) and not _matches(self._exc, path))

    def describe(self) -> str:
        return " ".join([*(f"--include {p}" for p in self.include), *(f"--exclude {p}" for p in self.exclude)])

    def encode(self) -> str:
        return json.dumps({"include": list(self.include), "exclude": list(self.exclude)}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Selection:
        try:
            doc = json.loads(text)
            sel = cls(tuple(doc["include"]), tuple(doc["exclude"]))
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidInput(f"bad selection {text!r}: {e}") from None
        return sel


def _matches(f: PathFilter, path: str) -> bool:
    """``path`` (a file) or one of the directories it is in."""
    if f.match(path) is not None:
        return True
    parts = path.split("/")
    return any(f.match("/".join(parts[:i]), is_dir=True) is not None for i in range(1, len(parts)))
