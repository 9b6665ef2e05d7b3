"""Object keys: the relative path of every object, the same in a store, a directory remote, over
HTTP and in a bucket (docs/format.md). Built only from a parsed ``Digest`` or a validated name
(docs/architecture.md, invariant 1)."""

from __future__ import annotations

import re

from casstore.model.digest import Digest
from casstore.model.names import model_part

TMP = "tmp"  # writers' temp files: in a store and in a directory remote, on the objects' filesystem
STORE_FORMAT_FILE = "casstore.json"  # what makes a directory a store (a remote has casstore-remote.json)


def blob_key(d: Digest) -> str:
    return blob_key_hex(d.hex)


def blob_key_hex(hexdigest: str) -> str:
    """For a report that holds 1M blobs as hex, not as ``Digest`` (gc/state.py)."""
    return f"blobs/{hexdigest[:2]}/{hexdigest}"


def chunks_key(d: Digest) -> str:
    """The chunk map of blob ``d`` (model/chunkmap.py): named by the blob it describes."""
    return f"chunks/{d.hex[:2]}/{d.hex}"


def manifest_key(d: Digest) -> str:
    return f"manifests/{d.hex[:2]}/{d.hex}.json"


def index_key(model: str) -> str:
    return f"index/{model_part(model)}.json"


def tags_key(model: str) -> str:
    """A store's tags of ``model``: one file per version, holding its manifest's digest."""
    return f"refs/{model_part(model)}/tags"


def tag_data(d: Digest) -> bytes:
    """What a tag (or partial version) file holds: its manifest's digest, one line."""
    return f"{d}\n".encode()


_AS_WRITTEN = re.compile(rb"blake3:([0-9a-f]{64})\n")


def tag_digest(data: bytes) -> Digest:
    """The digest a tag file names; written by hand it may have other whitespace around it."""
    if (m := _AS_WRITTEN.fullmatch(data)) is not None:  # as ``tag_data`` wrote it: one match, no decode
        return next(Digest.unchecked([m[1].decode()]))
    return Digest.parse(data[:200].decode("utf-8", "replace").strip())
