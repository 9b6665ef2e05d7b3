"""Hugging Face's two layouts: the hub cache and a ``--local-dir`` folder.

Hub cache (huggingface_hub's docs, "Understand caching")::

    <cache>/models--ORG--NAME/blobs/<etag>              the bytes; etag = SHA-256 (LFS) or git SHA-1
    <cache>/models--ORG--NAME/refs/<revision>           the commit a branch or tag points to
    <cache>/models--ORG--NAME/snapshots/<commit>/<path> a relative symlink to ../../blobs/<etag>

``--local-dir``: the files themselves, and ``.cache/huggingface/download/<path>.metadata``
holding the commit, the etag and a download time, one per line.
"""

from __future__ import annotations

import os
from pathlib import Path

from casstore.errors import InvalidInput, NotFound
from casstore.fs.scan import SourceFile, stat_file
from casstore.model.names import validate_model
from casstore.model.paths import validate_path
from casstore.sources import Plan, is_hex

REPO_PREFIX = "models--"
LOCAL_META = Path(".cache") / "huggingface" / "download"


def hub_cache(explicit: str | os.PathLike | None = None) -> Path:
    """The hub cache huggingface_hub itself would use (HF_HUB_CACHE, then HF_HOME/hub)."""
    if explicit:
        return Path(explicit)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expanduser(home)) / "hub"


def repo_folder(repo_id: str) -> str:
    return REPO_PREFIX + validate_model(repo_id).replace("/", "--")


def repo_id_of(folder: str) -> str | None:
    if not folder.startswith(REPO_PREFIX):
        return None
    parts = folder[len(REPO_PREFIX):].split("--")
    return "/".join(parts) if 1 <= len(parts) <= 2 else None


def validate_ref(ref: str) -> str:
    """A branch or tag name as a relative path under ``refs/`` (``main``, ``pr/1``): nothing that
    could leave that directory."""
    parts = ref.split("/")
    if not ref or any(p in ("", ".", "..") for p in parts) or any(c in ref for c in "\\\0\n"):
        raise InvalidInput(f"invalid revision {ref!r}")
    return ref


def resolve_revision(repo: Path, revision: str | None) -> str:
    """The commit ``revision`` (a ref such as ``main``, or a commit) names in a cached repo."""
    revision = revision or "main"
    if is_hex(revision, 40) and (repo / "snapshots" / revision).is_dir():
        return revision
    ref = repo / "refs" / validate_ref(revision)
    try:
        commit = ref.read_text().strip()
    except FileNotFoundError:
        refs = sorted(p.relative_to(repo / "refs").as_posix() for p in (repo / "refs").rglob("*") if p.is_file()) \
            if (repo / "refs").is_dir() else []
        snaps = sorted(p.name for p in (repo / "snapshots").iterdir()) if (repo / "snapshots").is_dir() else []
        raise NotFound(f"revision {revision!r} is not in the cached repo {repo} (refs: {', '.join(refs) or 'none'}; "
                       f"snapshots: {', '.join(snaps) or 'none'})") from None
    if not is_hex(commit, 40) or not (repo / "snapshots" / commit).is_dir():
        raise NotFound(f"{ref} names commit {commit!r}, which has no snapshot in {repo}")
    return commit


def read_hub_repo(repo: Path, revision: str | None) -> Plan:
    repo = Path(repo)
    repo_id = repo_id_of(repo.name)
    if repo_id is None or not (repo / "snapshots").is_dir():
        raise InvalidInput(f"{repo} is not a Hugging Face cache repo (models--ORG--NAME with snapshots/)")
    commit = resolve_revision(repo, revision)
    snap = repo / "snapshots" / commit
    blobs = (repo / "blobs").resolve()
    files, git_sha1, warnings = [], {}, []
    for dirpath, dirnames, filenames in os.walk(snap):
        dirnames.sort()
        for name in sorted(filenames):
            link = Path(dirpath) / name
            rel = validate_path(link.relative_to(snap).as_posix())
            st = stat_file(link, rel)
            target = Path(os.path.realpath(link))
            if not target.is_relative_to(repo.resolve()):
                # a cache is a tree of links into its own blobs; one leading elsewhere is not HF's
                raise InvalidInput(f"{link} points outside its cache repo {repo}, to {target}; refusing to import it")
            etag = target.name if target.parent == blobs else None
            where = f"the HF cache ({repo / 'blobs'})"
            if etag is not None and is_hex(etag, 64):
                files.append(SourceFile(rel, target, st, sha256=etag, claimed_by=where))
                continue
            files.append(SourceFile(rel, target, st))
            if etag is not None and is_hex(etag, 40):
                git_sha1[rel] = (etag, where)
            else:
                warnings.append(f"{rel}: not a link to a named blob of {repo}, not cross-checked")
    if not files:
        raise InvalidInput(f"snapshot {snap} has no files")
    return Plan("hf-cache", f"hf://{repo_id}@{commit}", files, git_sha1, repo_id, immutable=True, warnings=warnings)


def read_local_dir(root: Path) -> Plan:
    """An ``hf download --local-dir`` folder: every file outside .cache/huggingface/, checked
    against the etag its download recorded (a file without a record is added unchecked, and said)."""
    from casstore.fs.scan import scan
    from casstore.model.globs import ALWAYS_EXCLUDED, DEFAULT_EXCLUDES, PathFilter

    files = scan(root, exclude=PathFilter([*ALWAYS_EXCLUDED, *DEFAULT_EXCLUDES]))
    meta_dir = root / LOCAL_META
    out, git_sha1, warnings, commits = [], {}, [], set()
    for f in files:
        record = meta_dir / f"{f.path}.metadata"
        try:
            commit, etag, when = record.read_text().splitlines()[:3]
        except (FileNotFoundError, ValueError):
            warnings.append(f"{f.path}: no download record in {meta_dir}, not cross-checked")
            out.append(f)
            continue
        commits.add(commit.strip())
        etag = etag.strip().strip('"')
        changed = " (modified after its download)" if _newer(f.st.st_mtime, when) else ""
        who = f"its download record {record}{changed}"
        if is_hex(etag, 64):
            out.append(SourceFile(f.path, f.abspath, f.st, sha256=etag, claimed_by=who))
        else:
            out.append(f)
            if is_hex(etag, 40):
                git_sha1[f.path] = (etag, who)
    # No local path in what the manifest records: the same download gives the same manifest everywhere.
    origin = "hf-local-dir" + (f"@{commits.pop()}" if len(commits) == 1 else "")
    return Plan("hf-local-dir", origin, out, git_sha1, None, immutable=False, warnings=warnings)


def _newer(mtime: float, recorded: str) -> bool:
    try:
        return mtime - 1 > float(recorded)
    except ValueError:
        return False
