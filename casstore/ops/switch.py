"""`use` and `rollback`: switch a model's current pointer, only to a complete version.

Against a concurrent GC: the target's digests are leased *before* its tag is checked again, so
either GC's re-mark sees the lease (and keeps the blobs), or GC had already removed the tag and
the switch is refused. Blobs are touched as they are checked, so a GC deciding on one right now
sees it as fresh and puts it back (gc.py).
"""

from __future__ import annotations

from casstore.errors import Conflict, NotFound
from casstore.model import runtime
from casstore.model.digest import Digest
from casstore.model.history import UNSET, Switch, rollback_target
from casstore.model.manifest import Manifest
from casstore.store.leases import Lease
from casstore.store.markers import record_use
from casstore.store.objects import Store


def switch_to(store: Store, model: str, version: str, digest: Digest, action: str, expect,
              m: Manifest | None = None) -> Switch:
    m = m if m is not None else store.get_manifest(digest)
    with Lease(store, f"{action} {model}@{version}", [digest, *m.blobs()]):
        if digest not in (store.refs.get_tag(model, version), store.refs.get_partial(model, version)):
            raise NotFound(f"{model}@{version} is no longer in the store; run `cas fetch {model}@{version}`")
        if not store.touch(store.layout.manifest(digest)):  # set aside by a GC this moment (gc/sweep.py)
            raise NotFound(f"{model}@{version}'s manifest {digest} is being collected; run `cas fetch {model}@{version}`")
        missing = [e for e in m.entries if not store.touch(store.blob_path(e.digest))]
        if missing:
            raise NotFound(
                f"{model}@{version} is incomplete in this store ({len(missing)} blob(s) missing, e.g. "
                f"{missing[0].digest} for {missing[0].path}); run `cas fetch {model}@{version}` first"
            )
        s = store.refs.switch(model, version, digest, action=action, expect=expect)
        record_use(store, model, version)
    return s


def use(store: Store, model: str, version: str, *, expect: str | None = None,
        ignore_requirements: bool = False) -> Switch:
    """Make ``version`` current. With ``expect``, only if the current version is still that one.
    A version whose runtime requirements this environment does not meet is refused (unless
    ``ignore_requirements``)."""
    _, digest = store.resolve(model, version)
    m = store.get_manifest(digest)
    runtime.check(model, version, m.meta, ignore=ignore_requirements)
    head = store.refs.current(model)
    if expect is not None and (head is None or head.version != expect):
        raise Conflict(f"current version of {model} is {head.version if head else 'none'}, not {expect}")
    if head is not None and head.version == version and head.manifest == digest:
        record_use(store, model, version)
        return head  # already current: no record, so rollback and `cas log` see no empty switch
    return switch_to(store, model, version, digest, "use", head, m)


def rollback(store: Store, model: str, version: str | None = None) -> Switch:
    """Back to the previous version (or to ``version``). Already there: nothing is recorded,
    and the current switch record is returned as it is."""
    history = store.refs.history(model)
    if not history:
        store.resolve(model)  # raises the right NotFound
    target, digest = rollback_target(history, version)
    head = history[-1]  # an unset record too: the switch is a compare-and-swap on its seq
    if head.action != UNSET and (head.version, head.manifest) == (target, digest):
        record_use(store, model, target)
        return head
    if (digest not in (store.refs.get_tag(model, target), store.refs.get_partial(model, target))
            or not store.has_manifest(digest)):
        raise NotFound(f"{model}@{target} (manifest {digest}) is no longer in the store (removed, or collected by GC); "
                       f"`cas rollback {model}{' ' + version if version else ''} --fetch` fetches it again first")
    return switch_to(store, model, target, digest, "rollback", head)


async def rollback_fetching(store: Store, remotes, model: str, version: str | None = None, *, settings=None,
                            progress=None) -> Switch:
    """``rollback``, fetching the target version first if GC collected its blobs."""
    from casstore.ops.fetch import fetch

    try:
        return rollback(store, model, version)
    except NotFound:
        target, _ = rollback_target(store.refs.history(model), version)
        await fetch(store, remotes, model, target, settings=settings, progress=progress)
        return rollback(store, model, version)
