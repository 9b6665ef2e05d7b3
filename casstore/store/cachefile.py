"""The files under a store's ``cache/``: msgpack documents that only save work (the manifest
summaries, the blob listing). A missing, damaged or unwritable one costs the work it saves,
never an error: it is ignored with a warning and rewritten.

A store this user cannot write (a read-only mount on a GPU node) keeps its copies next to the
hash cache instead, machine-local, under a name derived from the store's path; for such a store
the newer of the two is read. Both documents are checked against the store whatever their source (a summary is
of a manifest named by its digest, a listing is used only while its directory's times match),
so a copy left by another store at the same path costs work, never a wrong figure."""

from __future__ import annotations

import logging
import os
import sys
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import blake3
import msgpack

from casstore.fs.atomic import makedirs, write_file
from casstore.store import hashcache

log = logging.getLogger("casstore")

MAX_BYTES = 1 << 30
T = TypeVar("T")


def local_path(store, name: str) -> Path:
    """Where this machine keeps ``name`` for a store it cannot write."""
    key = blake3.blake3(os.fsencode(os.path.realpath(store.root))).hexdigest()[:32]
    return hashcache.default_path().parent / "stores" / key / Path(name).name


def load(store, name: str, fmt: int, what: str, parse: Callable[[dict, bytes], T]) -> T | None:
    """``parse(document, raw bytes)`` of ``name`` (a path in the store), or None when the file
    is missing or unusable; ``parse`` raises ValueError, TypeError or KeyError for a bad one."""
    path = store.layout.root / name
    if not _store_writable(store, path):
        path = _newer(path, local_path(store, name))
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        if len(raw) > MAX_BYTES or not isinstance(obj, dict) or obj.get("format") != fmt:
            raise ValueError(f"not {what} of format {fmt}")
        return parse(obj, raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
        log.warning("ignoring the %s %s: %s", what, path, e)
        return None


def save(store, name: str, fmt: int, what: str, doc: dict) -> None:
    path, tmp = store.layout.root / name, store.layout.tmp
    if not _store_writable(store, path):  # a read-only store: this machine keeps its own copy
        path = local_path(store, name)
        tmp = path.parent
    try:
        makedirs(path.parent)
        # No fsync: a file torn by a crash is ignored like any damaged one.
        write_file(path, msgpack.packb({"format": fmt, **doc}), tmp, mode=0o644, replace=True, durable=False)
    except OSError as e:  # a full disk, a store that refused after all: it is only a cache
        log.info("not caching the %s in %s: %s", what, path, e)


def ints(raw: object, code: str) -> array:
    """The integers a cache file holds packed, little-endian, as an ``array`` of ``code``: a
    list of 1M ints took msgpack 25-40 ms to build and as long to check, bytes take nothing."""
    if type(raw) is not bytes:
        raise ValueError("integers not packed as bytes")
    out = array(code)
    out.frombytes(raw)  # ValueError unless a whole number of them
    if sys.byteorder == "big":
        out.byteswap()
    return out


def packed(xs: Iterable[int], code: str) -> bytes:
    """``xs`` as ``ints`` reads them back."""
    out = xs if isinstance(xs, array) and xs.typecode == code else array(code, xs)
    if sys.byteorder == "big":
        out = array(code, out)  # swapped in a copy: ``xs`` may be the caller's
        out.byteswap()
    return out.tobytes()


def _store_writable(store, path: Path) -> bool:
    return _writable(path.parent if path.parent.exists() else store.layout.root)


def _writable(d: Path) -> bool:
    """Whether this user may write ``d`` (False on a read-only mount, even for root). Asked before
    looking for a local copy, so that a writable store's reports need not import platformdirs."""
    return os.access(d, os.W_OK)


def _newer(shared: Path, local: Path) -> Path:
    try:
        mine = os.stat(local).st_mtime_ns
    except OSError:
        return shared
    try:
        return local if mine > os.stat(shared).st_mtime_ns else shared
    except OSError:
        return local
