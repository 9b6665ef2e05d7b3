"""`use` and `rollback`: switch a model's current pointer, only to a complete version."""

from __future__ import annotations

from .errors import Conflict, NotFound
from .gc import mark
from .history import Switch, rollback_target
from .store import Store, touch


def _complete(store: Store, model: str, version: str, digest) -> None:
    """Check every blob is present, refreshing each one's mtime: a GC deciding on it right now
    then sees it as fresh and puts it back (gc.py), or we see it gone and do not switch."""
    m = store.get_manifest(digest)
    touch(store.layout.manifest(digest))
    missing = [e for e in m.entries if not touch(store.blob_path(e.digest))]
    if missing:
        raise NotFound(
            f"{model}@{version} is incomplete in this store ({len(missing)} blob(s) missing, e.g. "
            f"{missing[0].digest} for {missing[0].path}); run `cas fetch {model}@{version}` first"
        )


def use(store: Store, model: str, version: str, *, expect: str | None = None) -> Switch:
    """Make ``version`` current. With ``expect``, only if the current version is still that one."""
    _, digest = store.resolve(model, version)
    _complete(store, model, version, digest)
    head = store.refs.current(model)
    if expect is not None and (head is None or head.version != expect):
        raise Conflict(f"current version of {model} is {head.version if head else 'none'}, not {expect}")
    s = store.refs.switch(model, version, digest, action="use", expect=head)
    _after_switch(store, model, version, digest)
    return s


def rollback(store: Store, model: str, version: str | None = None) -> Switch:
    history = store.refs.history(model)
    if not history:
        store.resolve(model)  # raises the right NotFound
    target, digest = rollback_target(history, version)
    if store.refs.get_tag(model, target) is None:
        raise NotFound(f"{model}@{target} is no longer in the store; run `cas fetch {model}@{target}`")
    _complete(store, model, target, digest)
    s = store.refs.switch(model, target, digest, action="rollback", expect=history[-1])
    _after_switch(store, model, target, digest)
    return s


def _after_switch(store: Store, model: str, version: str, digest) -> None:
    mark(store, model, version, "used")
    if store.refs.get_tag(model, version) is None:  # a GC removed the tag as we switched to it
        store.refs.set_tag(model, version, digest)
