"""`cas import SOURCE`: take in a model a team already has, checked against the digests its
source publishes, without a second copy where the filesystem allows.

SOURCE is ``hf://ORG/NAME[@REVISION]`` (the hub cache), ``ollama://NAME[:TAG]``, or a path: an
HF cache repo (``models--ORG--NAME``) or one of its snapshots, an ``hf download --local-dir``
folder, a git repository with LFS. Every byte is read once, for BLAKE3 and SHA-256 together; a
file whose SHA-256 (or, for small git files, SHA-1) is not what the source says stops the import
before anything is published (sources/ reads the claims, ops/add.py checks them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from casstore.errors import InvalidInput, NotFound
from casstore.ops.add import AddResult, add
from casstore.sources import Plan, check_git_sha1, gitlfs, hf, ollama
from casstore.store.objects import Store


@dataclass
class ImportResult:
    kind: str
    origin: str
    added: AddResult

    def to_json(self) -> dict:
        return {"kind": self.kind, "source": self.origin, **self.added.to_json()}


def plan(source: str, *, revision: str | None = None, hf_cache: str | None = None,
         ollama_models: str | None = None) -> Plan:
    """What ``source`` holds, with the digests it claims; nothing is hashed yet."""
    if source.startswith("hf://"):
        repo_id, _, rev = source[len("hf://"):].partition("@")
        cache = hf.hub_cache(hf_cache)
        repo = cache / hf.repo_folder(repo_id)
        if not repo.is_dir():
            raise NotFound(f"{repo_id} is not in the Hugging Face cache {cache} (no {repo.name}); "
                           "set HF_HUB_CACHE or pass --hf-cache")
        return hf.read_hub_repo(repo, rev or revision)
    if source.startswith("ollama://"):
        return ollama.read_ollama(ollama.models_dir(ollama_models), source[len("ollama://"):])
    path = Path(source)
    if not path.is_dir():
        raise NotFound(f"import source {source} is not a directory, hf://ORG/NAME or ollama://NAME")
    if path.parent.name == "snapshots" and hf.repo_id_of(path.parent.parent.name):
        return hf.read_hub_repo(path.parent.parent, path.name)  # a snapshot: that commit
    if hf.repo_id_of(path.name) and (path / "snapshots").is_dir():
        return hf.read_hub_repo(path, revision)
    if (path / hf.LOCAL_META).is_dir():
        return hf.read_local_dir(path)
    if gitlfs.is_git_repo(path):
        return gitlfs.read_git_repo(path, revision)
    raise InvalidInput(f"{source} is not a source `cas import` knows (an HF cache repo or snapshot, an HF "
                       "--local-dir folder with .cache/huggingface/, a git repository); `cas add` takes a plain directory")


def import_model(store: Store, source: str, model: str | None, version: str, *, revision: str | None = None,
                 hf_cache: str | None = None, ollama_models: str | None = None, move: bool = False,
                 note: str = "", meta: dict[str, str] | None = None, requires=(), force: bool = False,
                 jobs: int = 4, warn=None, progress=None) -> ImportResult:
    p = plan(source, revision=revision, hf_cache=hf_cache, ollama_models=ollama_models)
    name = model or p.name
    if name is None:
        raise InvalidInput(f"{source} does not say which model it is: pass --name")
    for w in p.warnings:
        if warn:
            warn(w)
    check_git_sha1(p)
    # Another store's objects (HF blobs, Ollama blobs) never change in place: linking them is the
    # zero-copy import, and the source is left as it was (no link is put back, nothing renamed).
    # Working files (a --local-dir, a git checkout) are copied (reflinked where the filesystem
    # can) unless --move says they may become read-only links to the store.
    added = add(store, source, name, version, files=p.files, sha256=True, move=p.immutable or move,
                leave_links=move and not p.immutable, note=note, meta={**(meta or {}), "source": p.origin},
                requires=requires, force=force, jobs=jobs, warn=warn, progress=progress)
    added.warnings[:0] = p.warnings
    return ImportResult(p.kind, p.origin, added)
