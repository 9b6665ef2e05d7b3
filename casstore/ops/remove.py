"""`cas rm MODEL@VERSION`: drop a version's tag (and its markers); its blobs go at the next GC.

Refs first, blobs last (docs/architecture.md, invariant 3): nothing here deletes an object. The
current version and pinned ones are refused unless forced; forced, the current version is unset
too (an ``rm`` history record), so `list`, `path`, `log` and GC all agree the model has no current
version, and `cas rollback` goes back to the version before it.
"""

from __future__ import annotations

from dataclasses import dataclass

from casstore.errors import Conflict
from casstore.model.history import UNSET
from casstore.store.markers import marked, unmark
from casstore.store.objects import Store


@dataclass(frozen=True)
class Removed:
    model: str
    version: str
    was_current: bool
    was_pinned: bool

    def to_json(self) -> dict:
        return {"removed": f"{self.model}@{self.version}", "was_current": self.was_current,
                "was_pinned": self.was_pinned}


def remove(store: Store, model: str, version: str, *, force: bool = False) -> Removed:
    version, digest = store.resolve(model, version)
    cur = store.refs.current(model)
    current = cur is not None and cur.version == version and cur.manifest == digest
    pinned = version in marked(store, model, "pins")
    if (current or pinned) and not force:
        why = "the current version (switch with `cas use` first)" if current else "pinned (`cas unpin` it first)"
        raise Conflict(f"{model}@{version} is {why}; or remove it anyway with --force")
    if current:  # before the tag goes: the pointer must never name a version with no tag
        store.refs.switch(model, version, digest, action=UNSET, expect=cur)
    store.refs.delete_tag(model, version)
    store.refs.delete_partial(model, version)  # a selective fetch's part of it, if any
    for kind in ("used", "pins", "keep", "released"):
        unmark(store, model, version, kind)
    return Removed(model, version, current, pinned)
