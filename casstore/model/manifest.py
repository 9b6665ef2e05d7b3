"""Manifests: one model version as a canonical, human-readable JSON document.

Canonical means the same manifest always encodes to the same bytes (sorted keys, sorted entries,
fixed indentation, integers only, UTF-8, one trailing newline), so its digest names it. Parsing
validates everything, paths included (docs/architecture.md, invariant 8), before a caller can act on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from casstore.errors import InvalidInput, InvalidManifest
from casstore.model import strictjson
from casstore.model.digest import ALGORITHM, Digest, all_hex, is_sha256_hex
from casstore.model.names import validate_model, validate_version
from casstore.model.paths import check_tree, validate_path

if TYPE_CHECKING:
    from casstore.model.globs import Selection

# meta of a partial version (Manifest.select): the selection, and the digest of the whole version
SELECTION = "cas.selection"
SELECTION_OF = "cas.selection-of"

# Schema 2 adds an optional ``sha256`` to entries; a manifest without one is still written as
# schema 1, byte for byte as before, so its digest (its name) does not change.
SCHEMA = 1
SCHEMA_SHA256 = 2
MODES = (0o644, 0o755)
# Parsing costs about 5x the document's size in memory (bench/bench_parse.py); these bound it near 330 MiB.
MAX_MANIFEST_BYTES = 64 << 20
MAX_ENTRIES = 250_000
_ENTRY_FIELDS = {"path", "size", "digest", "mode"}
_PREFIX_TEXT = ALGORITHM + ":"
_PREFIX = len(_PREFIX_TEXT)
_ENTRY_FIELDS_SHA256 = _ENTRY_FIELDS | {"sha256"}
MAX_SIZE = (1 << 63) - 1  # what a file can hold (and a stat field)
MAX_TIME = 253402300799  # the last second of 9999: later times do not print as dates


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    size: int
    digest: Digest
    mode: int = 0o644
    sha256: str | None = None  # hex; the name other tools (HF, Git LFS, Ollama, OCI) give these bytes

    def to_json(self) -> dict[str, Any]:
        out = {"path": self.path, "size": self.size, "digest": str(self.digest), "mode": self.mode}
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        return out

    def same_file(self, other: Entry) -> bool:
        """The same path, bytes and mode (a SHA-256 recorded on one side only changes nothing)."""
        return (self.path, self.size, self.digest, self.mode) == (other.path, other.size, other.digest, other.mode)

    @property
    def executable(self) -> bool:
        return self.mode == 0o755


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    version: str
    entries: tuple[Entry, ...]
    created: int = 0
    note: str = ""
    breaking: bool = False
    meta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_model(self.name)
        validate_version(self.version)
        if type(self.created) is not int or not 0 <= self.created <= MAX_TIME:
            raise InvalidManifest(f"manifest {self.name}@{self.version}: bad created time {self.created!r}")
        if not isinstance(self.note, str) or not isinstance(self.breaking, bool):
            raise InvalidManifest(f"manifest {self.name}@{self.version}: bad note or breaking flag")
        for k, v in self.meta.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidManifest(f"manifest {self.name}@{self.version}: meta {k!r} must map strings to strings")
        entries = tuple(sorted(self.entries, key=lambda e: e.path))
        for e in entries:
            validate_path(e.path)
            if type(e.size) is not int or not 0 <= e.size <= MAX_SIZE:
                raise InvalidManifest(f"manifest entry {e.path!r}: bad size {e.size!r}")
            if type(e.mode) is not int or e.mode not in MODES:
                raise InvalidManifest(f"manifest entry {e.path!r}: mode {e.mode!r} is not 0o644 or 0o755")
            if not isinstance(e.digest, Digest):
                raise InvalidManifest(f"manifest entry {e.path!r}: digest is not a Digest")
            if e.sha256 is not None and not is_sha256_hex(e.sha256):
                raise InvalidManifest(f"manifest entry {e.path!r}: sha256 {e.sha256!r} is not 64 lowercase hex digits")
        check_tree(e.path for e in entries)
        object.__setattr__(self, "entries", entries)
        object.__setattr__(self, "meta", MappingProxyType(dict(sorted(self.meta.items()))))

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)

    @property
    def schema(self) -> int:
        return SCHEMA_SHA256 if any(e.sha256 is not None for e in self.entries) else SCHEMA

    def blobs(self) -> set[Digest]:
        return {e.digest for e in self.entries}

    def to_json(self) -> dict[str, Any]:
        return {**self.to_json_head(), "entries": [e.to_json() for e in self.entries]}

    def select(self, sel: Selection, of: Digest) -> Manifest:
        """The part of this version (digest ``of``) that ``sel`` selects, as a manifest of its own
        (a partial version, docs/format.md): its meta names the selection and the whole version,
        so the same selection of the same version is the same manifest on every machine. A
        selection of every file is the whole version: this manifest itself."""
        entries = tuple(e for e in self.entries if sel.selects(e.path))
        if not entries:
            raise InvalidInput(f"{self.name}@{self.version}: {sel.describe()} selects none of its {len(self.entries)} "
                               f"files (e.g. {', '.join(e.path for e in self.entries[:3])})")
        if len(entries) == len(self.entries):
            return self
        meta = {**self.meta, SELECTION: sel.encode(), SELECTION_OF: str(of)}
        return Manifest(self.name, self.version, entries, self.created, self.note, self.breaking, meta)

    @property
    def selection(self) -> tuple[Selection, Digest] | None:
        """For a partial version: the selection and the whole version's digest."""
        from casstore.model.globs import Selection

        if SELECTION not in self.meta or SELECTION_OF not in self.meta:
            return None
        return Selection.decode(self.meta[SELECTION]), Digest.parse(self.meta[SELECTION_OF])

    def encode(self) -> bytes:
        return b"".join(self._pieces())

    def digest(self) -> Digest:
        return Digest.of_pieces(self._pieces())

    def _pieces(self) -> Iterator[bytes]:
        """The canonical bytes (``encode_canonical(self.to_json())``, to the byte) in pieces of
        about 1 MiB, without the per-entry dicts ``to_json`` builds: a 240,000-entry manifest's
        digest cost 300 MiB more that way (fetch checks it)."""
        doc = self.to_json_head()
        doc["entries"] = [_SLOT] if self.entries else []
        head, _, tail = encode_canonical(doc).partition(_SLOT_TEXT)
        batch = [head.removesuffix(b"  ")]
        size = len(batch[0])
        last = len(self.entries) - 1
        for i, e in enumerate(self.entries):
            text = _entry_text(e) + (b",\n" if i < last else b"")
            batch.append(text)
            size += len(text)
            if size >= 1 << 20:
                yield b"".join(batch)
                batch, size = [], 0
        batch.append(tail)
        yield b"".join(batch)

    def to_json_head(self) -> dict[str, Any]:
        """``to_json`` without the entries."""
        return {
            "casstore_manifest": self.schema,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "note": self.note,
            "breaking": self.breaking,
            "meta": dict(self.meta),
        }

    @classmethod
    def decode(cls, data: bytes, *, source: str = "manifest") -> Manifest:
        """Parse and validate manifest bytes; errors name ``source`` (a path, URL or digest)."""
        obj = strictjson.parse(data, source=source, what="manifest", max_bytes=MAX_MANIFEST_BYTES,
                               max_containers=MAX_ENTRIES + 3, error=InvalidManifest)
        try:
            return cls.from_json(obj)
        except InvalidInput as e:
            raise InvalidManifest(f"{source}: {e}") from e

    @classmethod
    def from_json(cls, obj: Any) -> Manifest:
        if not isinstance(obj, dict):
            raise InvalidManifest("manifest is not a JSON object")
        schema = obj.get("casstore_manifest")
        if type(schema) is not int or schema not in (SCHEMA, SCHEMA_SHA256):
            raise InvalidManifest(f"unknown manifest schema {schema!r} (this casstore reads {SCHEMA} and {SCHEMA_SHA256})")
        known = {"casstore_manifest", "name", "version", "created", "note", "breaking", "meta", "entries"}
        if extra := set(obj) - known:
            raise InvalidManifest(f"unknown manifest fields {sorted(extra)}")
        raw_entries = obj.get("entries")
        if not isinstance(raw_entries, list):
            raise InvalidManifest("manifest 'entries' is not a list")
        if len(raw_entries) > MAX_ENTRIES:
            raise InvalidManifest(f"manifest has {len(raw_entries)} entries, more than {MAX_ENTRIES}")
        entries = []
        for i, raw in enumerate(raw_entries):
            if not isinstance(raw, dict) or (raw.keys() != _ENTRY_FIELDS and (
                    schema == SCHEMA or raw.keys() != _ENTRY_FIELDS_SHA256)):
                raise InvalidManifest(f"malformed manifest entry {i}: expected an object with exactly "
                                      f"path, size, digest and mode" + (" (and sha256)" if schema == SCHEMA_SHA256 else ""))
            path, size, digest, mode = raw["path"], raw["size"], raw["digest"], raw["mode"]
            sha256 = raw.get("sha256")
            if "sha256" in raw and not is_sha256_hex(sha256):
                raise InvalidManifest(f"manifest entry {path!r}: sha256 {sha256!r} is not 64 lowercase hex digits")
            # JSON gives exact types (a bool is no int); GC parses ~1M entries at scale, so the
            # error-naming checks run only for an entry that fails this one.
            if not (type(path) is str and type(size) is int and type(digest) is str and type(mode) is int):
                path = _typed(raw, "path", str, f"entry {i}")
                size = _typed(raw, "size", int, f"entry {path!r}")
                digest = _typed(raw, "digest", str, f"entry {path!r}")
                mode = _typed(raw, "mode", int, f"entry {path!r}")
            entries.append(Entry(path, size, Digest.parse(digest), mode, sha256))  # paths: checked in __post_init__
        meta = obj.get("meta", {})
        if not isinstance(meta, dict):
            raise InvalidManifest("manifest 'meta' is not an object")
        return cls(
            name=_typed(obj, "name", str, "manifest"),
            version=_typed(obj, "version", str, "manifest"),
            entries=tuple(entries),
            created=_typed(obj, "created", int, "manifest", 0),
            note=_typed(obj, "note", str, "manifest", ""),
            breaking=_typed(obj, "breaking", bool, "manifest", False),
            meta=meta,
        )


def blob_sizes(data: bytes, *, source: str = "manifest") -> dict[str, int]:
    """The blobs a manifest lists by their digests' hex, with their sizes, for GC's read, which
    needs nothing else of it (and names blobs by hex, gc/state.py's ListedBlobs):
    the same strict parse as ``decode``, every digest checked and every size typed and bounded
    (in bulk), but paths and the tree not checked (a third of a decode). A manifest whose bytes
    match its digest is what ``put_manifest`` wrote after a whole decode; one that would fail
    those checks here only keeps its blobs. Anything unexpected goes through ``decode``, so that
    GC stops on it with the error that names it. A blob holds what its digest names, so the size
    given is the blob's: GC stats only the blobs it might free."""
    raw = _checked_entries(data, source)
    sizes: list[Any] = [] if raw is None else [e.get("size") for e in raw]
    if raw is None or not (set(map(type, sizes)) <= {int} and (not sizes or min(sizes) >= 0 and max(sizes) <= MAX_SIZE)):
        return {e.digest.hex: e.size for e in Manifest.decode(data, source=source).entries}
    return dict(zip([e["digest"][_PREFIX:] for e in raw], sizes))


def blob_hexes(data: bytes, *, source: str = "manifest") -> list[str]:
    """The digests ``blob_sizes`` reads, as hex strings, for remote GC, which keeps 1M of them and no ``Digest``."""
    raw = _checked_entries(data, source)
    if raw is None:
        return [d.hex for d in Manifest.decode(data, source=source).blobs()]
    return [e["digest"][_PREFIX:] for e in raw]


class EntryRecords(NamedTuple):
    """What `cas verify` needs of a manifest's entries, a list per field."""

    hexes: list[str]  # the blobs' digests
    sizes: list[int]
    paths: list[str]
    sha256s: list[str | None]


def entry_records(data: bytes, *, source: str = "manifest") -> EntryRecords | None:
    """Every entry's digest, size, path and SHA-256, parsed as ``blob_sizes`` parses (digests
    checked in one match, sizes and SHA-256s typed and bounded), but paths and the tree not
    checked: a quarter of a decode (1,000 manifests of 100 files: 0.11-0.18 s against 0.47-0.59 s).
    Each field is checked over the whole list at once (a loop per entry was 0.09 s of 0.24 s at
    100k entries). None: anything else, which ``decode`` must name."""
    raw = _checked_entries(data, source)
    if raw is None:
        return None
    sizes: list = [e.get("size") for e in raw]
    paths: list = [e.get("path") for e in raw]
    shas: list = [e.get("sha256") for e in raw]
    if sizes and not ({*map(type, sizes)} == {int} and min(sizes) >= 0 and max(sizes) <= MAX_SIZE):
        return None  # a bool's type is bool, not int: refused here as by decode
    if paths and {*map(type, paths)} != {str}:
        return None
    if shas.count(None) != len(shas) and not all(sha is None or is_sha256_hex(sha) for sha in shas):
        return None
    return EntryRecords([e["digest"][_PREFIX:] for e in raw], sizes, paths, shas)


def _checked_entries(data: bytes, source: str) -> list[dict] | None:
    """The raw entries of a known schema, if every one is an object whose digest checks."""
    obj = strictjson.parse(data, source=source, what="manifest", max_bytes=MAX_MANIFEST_BYTES,
                           max_containers=MAX_ENTRIES + 3, error=InvalidManifest)
    raw = obj.get("entries") if isinstance(obj, dict) else None
    if not (isinstance(raw, list) and len(raw) <= MAX_ENTRIES and obj.get("casstore_manifest") in (SCHEMA, SCHEMA_SHA256)):
        return None
    try:
        texts = [e["digest"] for e in raw]  # a TypeError if an entry is no object (JSON: no dict)
        # Checked all at once (a parse per digest was half of GC's read at 1M blobs); a TypeError
        # if a digest is no string.
        if all(map(str.startswith, texts, repeat(_PREFIX_TEXT))) and all_hex([t[_PREFIX:] for t in texts]):
            return raw
    except (TypeError, KeyError):
        pass
    return None


def _typed(obj: dict, name: str, kind: type, what: str, default: Any = ...) -> Any:
    return strictjson.field(obj, name, kind, where=what, default=default, error=InvalidManifest)


_SLOT = "\x00casstore-entries\x00"
_SLOT_TEXT = b'"\\u0000casstore-entries\\u0000"'


def _entry_text(e: Entry) -> bytes:
    """One entry as ``encode_canonical`` writes it inside the manifest (sorted keys, indent 1)."""
    sha = "" if e.sha256 is None else f'\n   "sha256": "{e.sha256}",'
    return (f'  {{\n   "digest": "{e.digest}",\n   "mode": {e.mode},\n   "path": '
            f'{json.dumps(e.path, ensure_ascii=False)},{sha}\n   "size": {e.size}\n  }}').encode()


def encode_canonical(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
