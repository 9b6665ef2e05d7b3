"""A git repository whose large files are in Git LFS: the files of a commit, the LFS ones read
from ``.git/lfs/objects`` (named by their SHA-256) rather than from the working tree, which may
hold only pointers (``GIT_LFS_SKIP_SMUDGE=1``). Uses the ``git`` command: the repository's own
tool reads its index, packs and alternates correctly, where a reader of our own would not.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from casstore.errors import InvalidInput, NotFound
from casstore.fs.scan import LFS_POINTER_MAX, LFS_POINTER_PREFIX, SourceFile, stat_file
from casstore.model.globs import DEFAULT_EXCLUDES, PathFilter
from casstore.model.paths import validate_path
from casstore.sources import Plan, is_hex


def _git(repo: Path, *args: str, data: bytes | None = None) -> bytes:
    try:
        # Plumbing only, and nothing the repository's own config could make git run on our behalf.
        p = subprocess.run(["git", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-C", str(repo),
                            *args], input=data, capture_output=True, timeout=600)
    except FileNotFoundError:
        raise NotFound("`git` is not installed; it is needed to import a git repository") from None
    if p.returncode != 0:
        raise InvalidInput(f"git {' '.join(args[:2])} in {repo} failed: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout


def is_git_repo(path: Path) -> bool:
    return (path / ".git").exists()


def parse_pointer(data: bytes) -> tuple[str, int] | None:
    """(oid, size) of a Git LFS pointer (the spec's key/value lines), or None if it is not one."""
    if len(data) >= LFS_POINTER_MAX or not data.startswith(LFS_POINTER_PREFIX):
        return None
    fields = dict(line.split(" ", 1) for line in data.decode("utf-8", "replace").splitlines() if " " in line)
    oid, size = fields.get("oid", ""), fields.get("size", "")
    if not oid.startswith("sha256:") or not is_hex(oid[7:], 64) or not size.isdigit():
        return None
    return oid[7:], int(size)


def read_git_repo(repo: Path, revision: str | None = None) -> Plan:
    repo = Path(repo).resolve()
    commit = _git(repo, "rev-parse", "--verify", f"{revision or 'HEAD'}^{{commit}}").decode().strip()
    git_dir = Path(_git(repo, "rev-parse", "--absolute-git-dir").decode().strip())
    listing = _git(repo, "ls-tree", "-r", "-z", "--full-tree", "-l", commit)
    entries: list[tuple[str, str, str, str, str]] = []  # mode, kind, sha1, size, path
    for rec in listing.split(b"\0"):
        if not rec:
            continue
        meta, raw_path = rec.split(b"\t", 1)
        mode, kind, sha1, size = meta.decode().split()
        entries.append((mode, kind, sha1, size, raw_path.decode("utf-8", "surrogateescape")))
    small = [e for e in entries if e[1] == "blob" and e[3].isdigit() and int(e[3]) < LFS_POINTER_MAX]
    pointers = _pointers(repo, small)
    skip = PathFilter(DEFAULT_EXCLUDES)
    files, git_sha1, warnings = [], {}, []
    lfs = git_dir / "lfs" / "objects"
    for mode, kind, sha1, _size, path in entries:
        if kind != "blob" or mode == "120000":
            warnings.append(f"{path}: a {'symlink' if mode == '120000' else kind} in git, not imported")
            continue
        if skip.match(path):
            continue
        rel = validate_path(path)
        if sha1 in pointers:
            oid, lfs_size = pointers[sha1]
            obj = lfs / oid[:2] / oid[2:4] / oid
            if not obj.is_file():
                raise NotFound(f"{rel} is a Git LFS pointer to {oid}, which is not in {lfs}: run `git lfs fetch` "
                               f"(or `git lfs pull`) in {repo} first")
            st = stat_file(obj, rel)
            if st.st_size != lfs_size:
                raise InvalidInput(f"{obj} has {st.st_size} bytes, but the LFS pointer of {rel} says {lfs_size}")
            files.append(SourceFile(rel, obj, st, sha256=oid, claimed_by=f"the LFS pointer of {rel} in {commit[:12]}",
                                    executable=mode == "100755"))
        else:
            work = repo / rel
            st = stat_file(work, rel)
            files.append(SourceFile(rel, Path(os.path.realpath(work)) if work.is_symlink() else work, st))
            git_sha1[rel] = (sha1, f"commit {commit[:12]} of {repo} (is the working tree changed? `git status`)")
    if not files:
        raise InvalidInput(f"commit {commit} of {repo} has no files")
    return Plan("git-lfs", f"{_origin_url(repo)}@{commit}", files, git_sha1, None, immutable=False, warnings=warnings)


def _origin_url(repo: Path) -> str:
    """``git+<origin URL>`` when it names a server; no local path (it would make the manifest differ
    between machines holding the same commit)."""
    try:
        url = _git(repo, "config", "--get", "remote.origin.url").decode().strip()
    except InvalidInput:
        return "git"
    if url.startswith(("/", ".", "file:")) or ("://" not in url and ":" not in url):
        return "git"
    if "://" in url:  # credentials (https://user:token@host/...) never go into a manifest
        scheme, rest = url.split("://", 1)
        host, _, path = rest.partition("/")
        url = f"{scheme}://{host.rsplit('@', 1)[-1]}/{path}"
    return f"git+{url}"


def _pointers(repo: Path, small: list) -> dict[str, tuple[str, int]]:
    """Which small blobs are LFS pointers: read in one `git cat-file --batch`."""
    if not small:
        return {}
    out = _git(repo, "cat-file", "--batch", data="".join(f"{e[2]}\n" for e in small).encode())
    found, pos = {}, 0
    for _ in small:
        nl = out.index(b"\n", pos)
        sha1, _kind, size = out[pos:nl].decode().split()
        body = out[nl + 1: nl + 1 + int(size)]
        pos = nl + 1 + int(size) + 1
        if (p := parse_pointer(body)) is not None:
            found[sha1] = p
    return found
