"""`use` and `rollback`: switch a model's current pointer, only to a complete version."""

from __future__ import annotations

from .errors import Conflict, NotFound
from .history import Switch, rollback_target
from .store import Store


def _complete(store: Store, model: str, version: str, digest) -> None:
    m = store.get_manifest(digest)
    missing = [e for e in m.entries if not store.has_blob(e.digest)]
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
    return store.refs.switch(model, version, digest, action="use", expect=head)


def rollback(store: Store, model: str, version: str | None = None) -> Switch:
    history = store.refs.history(model)
    if not history:
        store.resolve(model)  # raises the right NotFound
    target, digest = rollback_target(history, version)
    if store.refs.get_tag(model, target) is None:
        raise NotFound(f"{model}@{target} is no longer in the store; run `cas fetch {model}@{target}`")
    _complete(store, model, target, digest)
    return store.refs.switch(model, target, digest, action="rollback", expect=history[-1])
