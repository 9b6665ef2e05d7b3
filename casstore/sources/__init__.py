"""Where `cas import` reads models a team already has: a Hugging Face hub cache, an HF
``--local-dir`` folder, a git repository with LFS, an Ollama store.

Each reader turns a source into a ``Plan``: the files to add (with the SHA-256 or git SHA-1 the
source claims for each), where they came from, and whether the files are immutable objects of
another content-addressed store (then they may be hard-linked; nothing here writes to a source).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from casstore.errors import IntegrityError
from casstore.fs.scan import SourceFile


@dataclass
class Plan:
    kind: str  # hf-cache | hf-local-dir | git-lfs | ollama
    origin: str  # what the manifest records as its source
    files: list[SourceFile]
    git_sha1: dict[str, tuple[str, str]] = field(default_factory=dict)  # manifest path -> (sha1, who claims it)
    name: str | None = None  # the model name the source suggests
    immutable: bool = False  # files are another store's objects: linking them in is safe
    warnings: list[str] = field(default_factory=list)


def git_blob_sha1(path: Path) -> str:
    """Git's object name for a file's bytes (``git hash-object``)."""
    size = os.stat(path).st_size
    h = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_git_sha1(plan: Plan) -> None:
    """Refuse the plan if a file's git SHA-1 is not what its source claims (naming both)."""
    by_path = {f.path: f for f in plan.files}
    for rel, (want, who) in plan.git_sha1.items():
        got = git_blob_sha1(by_path[rel].abspath)
        if got != want:
            raise IntegrityError(f"{by_path[rel].abspath} ({rel}) has git SHA-1 {got}, but {who} names it {want}: "
                                 "the file is damaged or not the one published; nothing was added")


def is_hex(text: str, n: int) -> bool:
    return len(text) == n and all(c in "0123456789abcdef" for c in text)
