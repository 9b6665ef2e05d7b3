"""casstore: a content-addressed store for large model weights.

    import casstore
    store = casstore.open_store()              # $CAS_HOME, the config file, or the user cache dir
    casstore.add(store, "weights/", "t2v-A14B", "1.1.0")
    path = casstore.path(store, "t2v-A14B@1.1.0")  # a read-only directory for from_pretrained
    casstore.use(store, "t2v-A14B", "1.1.0"); casstore.rollback(store, "t2v-A14B")

    weights = casstore.fetch("t2v-A14B@1.1.0")   # download if needed; a read-only directory
    result = await casstore.afetch("t2v-A14B", progress=lambda done, total: ...)  # in asyncio code
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from casstore.errors import CasError, Conflict, IntegrityError, InvalidInput, NotFound
from casstore.store.objects import Store

if TYPE_CHECKING:
    from casstore.ops.fetch import FetchResult

__all__ = ["Digest", "Entry", "Manifest", "Store", "CasError", "Conflict", "IntegrityError", "InvalidInput",
           "NotFound", "add", "afetch", "checkout", "fetch", "open_store", "path", "rollback", "use", "verify"]

# Loaded on first use, so that `import casstore.ops.switch` (what `cas use` needs) stays light.
_LAZY = {"Digest": "casstore.model.digest", "Entry": "casstore.model.manifest", "Manifest": "casstore.model.manifest",
         "add": "casstore.ops.add", "checkout": "casstore.ops.checkout", "rollback": "casstore.ops.switch",
         "use": "casstore.ops.switch", "verify": "casstore.ops.verify"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'casstore' has no attribute {name!r}")


def open_store(path=None, *, create: bool = True) -> Store:
    from casstore.config import store_path

    return Store.open(store_path(path), create=create)


def fetch(ref: str, *, remote: str | None = None, store: Store | str | None = None, jobs: int = 8,
          limit_rate: int | None = None, progress=None, offline: bool | None = None,
          include: Iterable[str] = (), exclude: Iterable[str] = ()) -> Path:
    """Fetch ``MODEL[@VERSION]`` (latest if no version) and return its read-only directory.
    ``include``/``exclude``: globs selecting the files to fetch (`hf_hub`'s allow/ignore patterns).

    An exact version complete in the store never contacts a remote; ``offline`` (default:
    ``CAS_OFFLINE``) never does, and a model without a version is then the newest one here.
    Inside a running event loop (a Jupyter cell, an async web handler) the download runs on a
    thread of its own, so this call blocks only its caller; ``await afetch(...)`` does not block.
    """
    import asyncio

    def run():
        return asyncio.run(afetch(ref, remote=remote, store=store, jobs=jobs, limit_rate=limit_rate,
                                  progress=progress, offline=offline, include=include, exclude=exclude))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        result = run()  # no loop here: the usual case
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="casstore-fetch") as pool:
            result = pool.submit(run).result()
    assert result.path is not None  # afetch always builds the view
    return result.path


async def afetch(ref: str, *, remote: str | None = None, store: Store | str | None = None, jobs: int = 8,
                 limit_rate: int | None = None, progress=None, offline: bool | None = None,
                 include: Iterable[str] = (), exclude: Iterable[str] = ()) -> FetchResult:
    """The async form of ``fetch``: returns a ``FetchResult`` (``.path``, ``.stats``, ``.version``)."""
    from casstore.model.globs import Selection
    from casstore.model.names import Ref
    from casstore.ops.checkout import view
    from casstore.ops.fetch import fetch as _fetch
    from casstore.ops.fetch import remotes_for_fetch
    from casstore.transfer.download import Settings

    r = Ref.parse(ref)
    st = store if isinstance(store, Store) else open_store(store)
    remotes = remotes_for_fetch(remote, offline=offline)
    try:
        result = await _fetch(st, remotes, r.model, r.version, settings=Settings.from_env(jobs=jobs, rate=limit_rate),
                              progress=progress, offline=offline,
                              selection=Selection.of(include, exclude))
    finally:
        for rm in remotes:
            await rm.close()
    from casstore.gc import auto_collect

    auto_collect(st, [result.manifest])  # the CLI's policy: only with gc.max_size, never this version
    result.path = view(st, result.manifest, st.get_manifest(result.manifest))
    return result


def path(store: Store, ref: str) -> Path:
    """The read-only directory of ``MODEL[@VERSION]``'s files inside the store."""
    from casstore.model.names import Ref
    from casstore.ops.checkout import view

    r = Ref.parse(ref)
    _, digest, m = store.load(r.model, r.version)
    return view(store, digest, m)
