"""The files under a store's ``cache/``: msgpack documents that only save work (the manifest
summaries, the blob listing). A missing, damaged or unwritable one costs the work it saves,
never an error: it is ignored with a warning and rewritten, and on a read-only mount not
written at all."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import msgpack

from casstore.fs.atomic import makedirs, write_file

log = logging.getLogger("casstore")

MAX_BYTES = 1 << 30
T = TypeVar("T")


def load(store, name: str, fmt: int, what: str, parse: Callable[[dict, bytes], T]) -> T | None:
    """``parse(document, raw bytes)`` of ``name`` (a path in the store), or None when the file
    is missing or unusable; ``parse`` raises ValueError, TypeError or KeyError for a bad one."""
    path = store.layout.root / name
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
    path = store.layout.root / name
    try:
        makedirs(path.parent)
        write_file(path, msgpack.packb({"format": fmt, **doc}), store.layout.tmp, mode=0o644, replace=True,
                   durable=False)  # a torn file after a crash is ignored like any damaged one
    except OSError as e:  # a read-only store, a full disk: it is only a cache
        log.info("not caching the %s in %s: %s", what, path, e)
