"""`cas export`: hand a version to the tools that expect another layout, without a second copy.

- ``hf-cache``: a Hugging Face hub cache repo (``models--ORG--NAME/{blobs,refs,snapshots}``), so
  unchanged ``from_pretrained("ORG/NAME")`` and ``hf cache ls`` work offline.
- ``oci``: an OCI image layout whose manifest is a CNCF ModelPack artifact (one raw layer per
  file, its path annotated), for ``oras cp --from-oci-layout`` or any registry client.

Every exported blob is a hard link to the casstore blob (a copy across filesystems), never a
symlink into the store: huggingface_hub deletes a revision's blobs by their *resolved* paths, so a
symlink chain ending in the store would let `hf cache delete` remove a casstore blob. With a hard
link it removes its own name only. Each export is also a GC root while it exists
(store/roots.py), and each blob is checked against its BLAKE3 digest as its SHA-256 is computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casstore.errors import IntegrityError, InvalidInput, UnsafeDestination
from casstore.fs import linking
from casstore.fs.atomic import makedirs, write_file
from casstore.model.digest import Digest, hash_file_sha256
from casstore.model.manifest import Entry, Manifest
from casstore.model.names import validate_model
from casstore.sources import hf
from casstore.store.hashcache import HashCache
from casstore.store.objects import Store
from casstore.store.roots import register_export

_HEX40 = frozenset("0123456789abcdef")


@dataclass
class ExportResult:
    kind: str
    model: str
    version: str
    manifest: Digest
    path: str  # the repo folder or the OCI layout
    files: int = 0
    bytes: int = 0
    linked: int = 0  # blobs exported as hard links
    copied: int = 0  # across filesystems: copies (reflinks where possible)
    hashed_bytes: int = 0  # read to compute SHA-256s the manifest did not record
    revision: str | None = None
    commit: str | None = None
    elapsed: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {**self.__dict__, "manifest": str(self.manifest), "elapsed": round(self.elapsed, 3)}


def sha256_of(store: Store, e: Entry, cache: HashCache, result: ExportResult) -> str:
    """The entry's SHA-256: recorded, remembered, or computed (and the blob verified on the way)."""
    if e.sha256 is not None:
        return e.sha256
    known = cache.sha256_of(e.digest)
    if known is not None:
        return known
    d, size, sha = hash_file_sha256(store.blob_path(e.digest))
    if d != e.digest or size != e.size:
        raise IntegrityError(f"blob {e.digest} ({e.path}) does not hold its bytes (hashes to {d}); "
                             "run `cas verify --repair` before exporting")
    result.hashed_bytes += size
    cache.put_sha256(e.digest, sha)
    return sha


def place(src: Path, dst: Path, result: ExportResult) -> None:
    """``dst`` becomes a name for the blob at ``src``: a hard link, else a copy. A regular file
    of the right size already there (HF's own download of that SHA-256) is left alone: it is the
    other tool's, and replacing it could only spread a store blob that rotted since its last check."""
    try:
        st = os.lstat(dst)
        if os.path.samefile(src, dst) or (stat.S_ISREG(st.st_mode) and st.st_size == os.stat(src).st_size):
            return
    except FileNotFoundError:
        pass
    def link(tmp: Path) -> None:
        try:
            linking.hardlink(src, tmp)
            result.linked += 1
        except linking.LinkUnsupported:
            linking.reflink_or_copy(src, tmp)
            os.chmod(tmp, 0o444)
            result.copied += 1

    _replace(dst, link)


def _replace(dst: Path, make) -> None:
    """``make(tmp)`` on a sibling name, then a rename over ``dst``: another tool reading the export
    sees the old name or the new one. The sibling's name is fixed, so a killed export's leftover
    is taken over, not left behind in another tool's directory."""
    tmp = dst.with_name(f".{dst.name}.cas-tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    make(tmp)
    os.replace(tmp, dst)


def safe_dir(root: Path, rel: Path | str) -> Path:
    """``root/rel`` as a directory, made if missing, with no symlink on the way below ``root``:
    an export writes links and files, and must not write them through someone's symlink."""
    d = Path(root)
    makedirs(d)
    for part in Path(rel).parts:
        d = d / part
        try:
            os.mkdir(d)
        except FileExistsError:
            pass
        if d.is_symlink() or not d.is_dir():
            raise UnsafeDestination(f"{d} is a symlink or not a directory; refusing to export through it")
    return d


def _symlink(target: str, link: Path) -> None:
    if not (link.is_symlink() and os.readlink(link) == target):
        _replace(link, lambda tmp: os.symlink(target, tmp))


def _write_small(path: Path, data: bytes) -> None:
    write_file(path, data, path.parent, mode=0o644, replace=True)


def hf_commit(m: Manifest, repo_id: str, revision: str | None) -> tuple[str, str]:
    """(ref, commit) to write. A 40-hex revision is the commit (under ref ``main``); otherwise the
    commit is the one the version was imported from (``source = hf://REPO@COMMIT``), or one made
    from the manifest digest, so that exporting the same version twice gives the same snapshot."""
    if revision and len(revision) == 40 and set(revision) <= _HEX40:
        return "main", revision
    ref = hf.validate_ref(revision or "main")
    source = m.meta.get("source", "")
    if source.startswith(f"hf://{repo_id}@"):
        commit = source.rsplit("@", 1)[1]
        if len(commit) == 40 and set(commit) <= _HEX40:
            return ref, commit
    return ref, m.digest().hex[:40]


def export_hf_cache(store: Store, model: str, version: str | None, repo_id: str | None = None, *,
                    revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> ExportResult:
    t0 = time.monotonic()
    version, digest, m = store.load(model, version)
    repo_id = validate_model(repo_id or model)
    if "/" not in repo_id:
        raise InvalidInput(f"an HF repo id is ORG/NAME, not {repo_id!r}: pass --repo ORG/NAME")
    repo = hf.hub_cache(cache_dir) / hf.repo_folder(repo_id)
    ref, commit = hf_commit(m, repo_id, revision)
    result = ExportResult("hf-cache", model, version, digest, str(repo), revision=ref, commit=commit)
    hashes = HashCache()
    shas = {e.path: sha256_of(store, e, hashes, result) for e in m.entries}
    snap = repo / "snapshots" / commit
    for sub in ("blobs", "refs", f"snapshots/{commit}"):
        safe_dir(repo, sub)
    register_export(store, snap, f"{model}@{version}", digest)  # before any link: GC keeps it from here on
    for e in m.entries:
        blob = repo / "blobs" / shas[e.path]
        place(store.blob_path(e.digest), blob, result)
        link = safe_dir(snap, Path(e.path).parent) / Path(e.path).name
        _symlink(os.path.relpath(blob, link.parent), link)
        result.files += 1
        result.bytes += e.size
    wanted = {e.path for e in m.entries}
    for dirpath, _dirs, names in os.walk(snap):
        for name in names:
            p = Path(dirpath) / name
            rel = p.relative_to(snap).as_posix()
            if rel not in wanted:
                if p.is_symlink():  # a previous export's: the snapshot is exactly this version
                    os.unlink(p)
                else:
                    result.warnings.append(f"{p} is not part of {model}@{version}; left as it is")
    ref_file = safe_dir(repo / "refs", Path(ref).parent) / Path(ref).name
    _write_small(ref_file, commit.encode())  # HF writes the bare commit, no newline
    result.elapsed = time.monotonic() - t0
    return result


# OCI image layout + CNCF ModelPack (github.com/modelpack/model-spec, docs/spec.md, docs/config.md)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MODEL_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
_WEIGHTS = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack", ".npz", ".tflite")
_DOCS = (".md", ".rst", ".txt", ".pdf")
_CODE = (".py", ".sh", ".ipynb")


def layer_media_type(path: str) -> str:
    name = path.rsplit("/", 1)[-1].lower()
    if name.endswith(_WEIGHTS):
        kind = "weight"
    elif name.startswith(("readme", "license", "notice")) or name.endswith(_DOCS):
        kind = "doc"
    elif name.endswith(_CODE):
        kind = "code"
    else:
        kind = "weight.config"  # config.json, tokenizer files, generation settings
    return f"application/vnd.cncf.model.{kind}.v1.raw"


def _descriptor(media: str, data_or_sha: bytes | str, size: int | None = None, **extra) -> dict:
    if isinstance(data_or_sha, bytes):
        return {"mediaType": media, "digest": "sha256:" + hashlib.sha256(data_or_sha).hexdigest(),
                "size": len(data_or_sha), **extra}
    return {"mediaType": media, "digest": f"sha256:{data_or_sha}", "size": size, **extra}


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def export_oci(store: Store, model: str, version: str | None, dest: str | os.PathLike, *,
               tag: str | None = None) -> ExportResult:
    """An OCI image layout at ``dest`` holding ``model@version`` as a ModelPack artifact, tagged
    ``tag`` (default: the version) in index.json. Other images already in the layout stay."""
    t0 = time.monotonic()
    version, digest, m = store.load(model, version)
    root = Path(dest)
    result = ExportResult("oci", model, version, digest, str(root))
    hashes = HashCache()
    shas = [sha256_of(store, e, hashes, result) for e in m.entries]
    blobs = safe_dir(root, "blobs/sha256")
    if (root / "oci-layout").exists():
        layout = json.loads((root / "oci-layout").read_text())
        if layout.get("imageLayoutVersion") != "1.0.0":
            raise InvalidInput(f"{root} is an OCI layout of version {layout.get('imageLayoutVersion')!r}, not 1.0.0")
    register_export(store, root / "index.json", f"{model}@{version}", digest)
    layers = []
    for e, sha in zip(m.entries, shas):
        place(store.blob_path(e.digest), blobs / sha, result)
        layers.append(_descriptor(layer_media_type(e.path), sha, e.size, annotations={
            "org.cncf.model.filepath": e.path,
            "org.opencontainers.image.title": e.path,  # what oras names a pulled file by
            "org.cncf.model.file.metadata+json": _canonical({
                "name": e.path.rsplit("/", 1)[-1], "size": e.size, "mode": e.mode, "uid": 0, "gid": 0,
                "mtime": "1970-01-01T00:00:00Z", "typeflag": 48}).decode(),  # '0': a regular file
        }))
        result.files += 1
        result.bytes += e.size
    names = [e.path.rsplit("/", 1)[-1] for e in m.entries]
    fmt = next((f for f, ext in (("safetensors", ".safetensors"), ("gguf", ".gguf"), ("onnx", ".onnx"),
                                 ("pt", ".pth"), ("pt", ".bin")) if any(n.endswith(ext) for n in names)), None)
    config = {"descriptor": {"name": model, "version": version,
                             **({"revision": m.meta["source"]} if "source" in m.meta else {}),
                             **({"description": m.note} if m.note else {})},
              "config": {"format": fmt} if fmt else {},
              "modelfs": {"type": "layers", "diffIds": [f"sha256:{s}" for s in shas]}}
    config_bytes = _canonical(config)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": MODEL_ARTIFACT,
                "config": _descriptor(MODEL_CONFIG, config_bytes), "layers": layers,
                "annotations": {"org.opencontainers.image.title": model, "org.opencontainers.image.version": version,
                                "org.casstore.manifest": str(digest)}}
    manifest_bytes = _canonical(manifest)
    for data in (config_bytes, manifest_bytes):
        d = hashlib.sha256(data).hexdigest()
        if not (blobs / d).exists():
            _write_small(blobs / d, data)
    ref = tag or version
    index_path = root / "index.json"
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if index_path.exists():
        index = json.loads(index_path.read_text())
        if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
            raise InvalidInput(f"{index_path} is not an OCI image index")
    keep = [d for d in index.get("manifests", [])
            if not isinstance(d, dict) or d.get("annotations", {}).get("org.opencontainers.image.ref.name") != ref]
    keep.append(_descriptor(OCI_MANIFEST, manifest_bytes, artifactType=MODEL_ARTIFACT,
                            annotations={"org.opencontainers.image.ref.name": ref}))
    index["manifests"] = keep
    _write_small(index_path, json.dumps(index, indent=1).encode() + b"\n")
    _write_small(root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    result.revision = ref
    result.elapsed = time.monotonic() - t0
    return result
