"""Which relative paths a list of glob patterns selects (`cas add --exclude`, `cas import`).

A pattern without ``/`` matches a name at any depth (``*.tmp``, ``.DS_Store``); one with ``/``
matches the whole relative path (``.cache/huggingface``); a trailing ``/`` matches directories
only. ``*`` and ``?`` are fnmatch's. Simple on purpose: gitignore's negations and ``**`` are not
needed to keep litter out of a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

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
