"""`cas fetch`: resolve a version on the remotes, download what is missing, then record it.

Order (invariant 3): verified blobs, then the manifest, then the tag, then the current pointer for a
model that has none. Nothing from a remote is used before it is checked: the index is parsed
strictly, the manifest must hash to the digest the index names and parse (paths included), and
every blob is verified by the download engine before it is published.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from casstore.config import offline as is_offline
from casstore.errors import (
    BlobsChanged,
    CasError,
    Conflict,
    IntegrityError,
    InvalidManifest,
    NotFound,
    Offline,
    RemoteError,
    RemoteStatusError,
    RemoteTooSlow,
    RemoteUnreachable,
)
from casstore.model.digest import Digest
from casstore.model.globs import Selection
from casstore.model.index import Index
from casstore.model.manifest import MAX_MANIFEST_BYTES, Manifest
from casstore.model.versioning import latest, sort_key
from casstore.ops.checkout import prebuild_view
from casstore.remotes.base import FORMAT_FILE, Remote, index_path, read_small
from casstore.remotes.base import manifest as manifest_key
from casstore.remotes.layers import MirrorsFailed, stack
from casstore.store.leases import Lease
from casstore.store.markers import record_use
from casstore.store.objects import Store
from casstore.transfer.download import DeltaMemo, Downloader, Estimate, Settings, Stats

log = logging.getLogger("casstore")


@dataclass
class FetchResult:
    model: str
    version: str
    manifest: Digest
    current: bool = False
    stats: Stats = field(default_factory=Stats)
    elapsed: float = 0.0
    path: Path | None = None  # the read-only view, when asked for (casstore.fetch)
    files: int | None = None  # the version's files (None: a partial version held here, the whole unknown)
    selected: int | None = None  # with a selection: the files it selected (``manifest`` is that part)

    def to_json(self) -> dict:
        return {"model": self.model, "version": self.version, "manifest": str(self.manifest),
                "current": self.current, "files": self.files, "selected": self.selected, **self.stats.to_json(),
                "elapsed": round(self.elapsed, 3)}


async def read_index(remotes: Remote | list[Remote], model: str) -> tuple[Index, Remote]:
    """The model's index from the first mirror that has it (remotes/layers.py)."""
    r = stack(remotes)
    where = r.describe(index_path(model))
    got = await r.read_index(model)
    if got is not None:
        return Index.decode(got[0], source=where, model=model), r
    if not await r.looks_like_remote():
        urls = ", ".join(m.url for m in r.remotes)
        raise NotFound(f"there is no casstore remote at {urls} (no {FORMAT_FILE} there): check the URL or "
                       f"path of the remote; `cas push` creates a directory remote")
    raise NotFound(f"model {model} is not published on {', '.join(m.describe(index_path(model)) for m in r.remotes)}")


async def versions(remotes: Remote | list[Remote], model: str) -> Index:
    return (await read_index(remotes, model))[0]


async def manifest_bytes(remotes: Remote | list[Remote], digest: Digest) -> tuple[bytes, str]:
    """The manifest's bytes, verified, and where they came from. Bytes that do not verify are read
    again from a mirror that did not serve them, while one is left (layers.Mirrors.distrust)."""
    r = stack(remotes)
    key = manifest_key(digest)
    while True:
        data = await read_small(r, key, MAX_MANIFEST_BYTES)
        url = ", ".join(r.sources(key))
        if Digest.of_bytes(data) == digest:
            return data, url
        if not r.distrust(key):
            raise IntegrityError(f"{url} does not hash to {digest}; refusing the manifest")


async def fetch(
    store: Store,
    remotes: Remote | list[Remote],
    model: str,
    version: str | None = None,
    *,
    settings: Settings | None = None,
    progress=None,
    offline: bool | None = None,
    selection: Selection | None = None,
) -> FetchResult:
    """Bring ``model@version`` (the newest release if no version) into the store; with a
    ``selection``, only the files it selects, as a partial version (``install``).

    An exact version that is complete in the store (or, with a selection, whose same part is)
    never contacts a remote. Offline (``offline`` or ``CAS_OFFLINE=1``), or when no remote
    answers, a model without a version is the newest version complete in the store.
    """
    t0 = time.monotonic()
    if version is not None and (here := _complete_locally(store, model, version, selection)) is not None:
        try:
            return _local_result(store, model, version, *here, t0)
        except NotFound:  # a GC took part of it between the check and the lease: fetch it like any missing version
            if is_offline(offline) or not remotes:
                raise
            log.info("%s@%s was collected while being fetched; fetching it from the remote", model, version)
    if is_offline(offline):
        if version is None and (newest := _newest_local(store, model)) is not None:
            return _local_result(store, model, *newest, t0)
        what = f"{model}@{version}" if version else f"any version of {model}"
        raise NotFound(f"offline, and {what} is not complete in the store {store.root}")
    if not remotes:
        raise NotFound("no remote configured: add one with `cas remote add NAME URL --default`")
    remotes = stack(remotes, (settings or Settings.from_env()).tuning())  # built once: remotes/layers.py
    try:
        index, _ = await read_index(remotes, model)
    except RemoteError as e:
        if version is None and unavailable(e) and (newest := _newest_local(store, model)) is not None:
            log.warning("%s; using %s@%s, the newest version in the store", e, model, newest[0])
            return _local_result(store, model, *newest, t0)
        raise
    version, entry = published(index, model, version)
    local = store.refs.get_tag(model, version) or _whole_of_partial(store, model, version)
    if local is not None and local != entry.manifest:
        raise Conflict(
            f"the remote's {model}@{version} is now {entry.manifest}, but this store has it as {local}: "
            "a published version moved; refusing to change it silently"
        )
    m = await load_manifest(store, remotes, entry.manifest, model, version)
    result = await install(store, remotes, model, version, entry.manifest, m, settings=settings, progress=progress,
                           selection=selection)
    result.elapsed = time.monotonic() - t0
    return result


def published(index: Index, model: str, version: str | None):
    """``version`` (the newest release if None) and its index entry, or NotFound saying which exist."""
    if version is None:
        version = latest(index.versions)
        if version is None:
            raise NotFound(f"model {model} has no released version on the remote (only pre-releases?)")
    entry = index.versions.get(version)
    if entry is None:
        raise NotFound(f"{model}@{version} is not published (versions: {', '.join(index.versions) or 'none'})")
    return version, entry


@dataclass
class FetchPlan:
    """What `cas fetch M@V` would do, found without downloading a blob (`--dry-run`)."""

    model: str
    version: str
    manifest: Digest
    files: int
    bytes: int  # the version's distinct blobs
    bytes_here: int  # of those, already in the store
    blobs_missing: int
    bytes_missing: int  # the most the fetch downloads
    bytes_from_local: int  # of the missing, what local chunks hold (delta): not downloaded
    bytes_download: int  # what the fetch would download: bytes_missing less bytes_from_local and bytes_copied
    bytes_copied: int = 0  # of the missing, what a remote on the store's filesystem holds: copied

    def to_json(self) -> dict:
        return {**self.__dict__, "manifest": str(self.manifest)}


async def plan_fetch(store: Store, remotes: list[Remote], model: str, version: str | None, *,
                     settings: Settings | None = None, selection: Selection | None = None) -> FetchPlan:
    settings = settings or Settings.from_env()
    mirrors = stack(remotes, settings.tuning())
    here = _complete_locally(store, model, version, selection) if version is not None else None
    if version is not None and here is not None:
        digest, m = here
    else:
        index, _ = await read_index(mirrors, model)
        version, entry = published(index, model, version)
        digest = entry.manifest
        m = await load_manifest(store, mirrors, digest, model, version)
    if selection is not None:
        m = m.select(selection, digest)
        digest = m.digest()
    sizes = {e.digest: e.size for e in m.entries}
    missing = {d: n for d, n in sizes.items() if not store.has_blob(d)}
    est = (await Downloader(store, mirrors, settings).estimate(missing, delta_sources(store, model, missing))
           if missing else Estimate(0))
    total = sum(sizes.values())
    return FetchPlan(model, version, digest, len(m.entries), total, total - sum(missing.values()), len(missing),
                     sum(missing.values()), est.from_local, est.download, est.copied)


def unavailable(e: RemoteError) -> bool:
    """Down or out of reach (refused connections, timeouts, 5xx), as against a remote that
    answered wrongly or a TLS setup to fix: only the first lets `cas fetch M` go on with the
    newest local version."""
    if isinstance(e, MirrorsFailed):
        return all(unavailable(x) for x in e.errors)
    return (isinstance(e, (RemoteUnreachable, RemoteTooSlow)) or e.hung
            or (isinstance(e, RemoteStatusError) and (e.status or 0) >= 500))


async def install(store: Store, remotes: Remote | list[Remote], model: str, version: str, digest: Digest, m: Manifest, *,
                  settings: Settings | None = None, progress=None, selection: Selection | None = None,
                  memo: DeltaMemo | None = None) -> FetchResult:
    """Download what ``m`` (already checked by ``load_manifest``) needs, then record it: the
    manifest, the tag, and the current pointer if the model had none (invariant 3's order).

    With a ``selection``: only its files, recorded as a partial version (``refs/M/partial/V``
    naming the manifest of that part, ``Manifest.select``); a whole version fetched later
    replaces it. Every ref still names a manifest whose blobs are all here (invariant 3)."""
    target = m.select(selection, digest) if selection is not None else m
    wants: dict[Digest, int] = {e.digest: e.size for e in target.entries}
    with Lease(store, f"fetch {model}@{version}", [*wants, digest, target.digest()]):
        stats = await Downloader(store, remotes, settings, progress, memo).fetch(wants, delta_sources(store, model, wants))
        written = store.put_manifest(target)
        if target is m:
            store.refs.set_tag(model, version, written)
            store.refs.delete_partial(model, version)  # the whole version supersedes any part of it
            _whole_becomes_current(store, model, version, written)
        elif store.refs.get_tag(model, version) is None:
            store.refs.set_partial(model, version, written)
        result = FetchResult(model, version, written, stats=stats, files=len(m.entries),
                             selected=None if target is m else len(target.entries))
        _settle(store, result)
        prebuild_view(store, written, target)  # under the lease: a GC cannot take a blob meanwhile
    return result


def _whole_becomes_current(store: Store, model: str, version: str, whole: Digest) -> None:
    """A current pointer naming a part of this version now names all of it (`cas path M` then
    shows every file): a switch recorded as the fetch's, lost quietly to any concurrent switch."""
    cur = store.refs.current(model)
    if cur is None or cur.version != version or cur.manifest == whole:
        return
    try:
        held = store.get_manifest(cur.manifest).selection
        if held is not None and held[1] == whole:
            store.refs.switch(model, version, whole, action="fetch", expect=cur)
    except CasError:
        pass


def _whole_of_partial(store: Store, model: str, version: str) -> Digest | None:
    """The whole version's digest that the partial version held here is a part of."""
    d = store.refs.get_partial(model, version)
    try:
        sel = store.get_manifest(d).selection if d is not None else None
    except CasError:
        return None
    return sel[1] if sel is not None else None


async def load_manifest(store: Store, remotes: Remote | list[Remote], digest: Digest, model: str, version: str) -> Manifest:
    """The manifest an index names for ``model@version``: from the store, or from a remote,
    checked to hash to ``digest`` (manifest_bytes), to parse, to be that model and version, and
    to be canonical."""
    if store.has_manifest(digest):
        try:
            return store.get_manifest(digest)
        except (IntegrityError, InvalidManifest) as e:  # damaged here: the remote's copy replaces it
            log.warning("%s; moved to quarantine, fetching it again", e)
            store.quarantine_manifest(digest)
    data, url = await manifest_bytes(remotes, digest)
    m = Manifest.decode(data, source=url)
    if (m.name, m.version) != (model, version):
        raise InvalidManifest(f"{url} is {m.name}@{m.version}, but the index lists it as {model}@{version}")
    if m.digest() != digest:
        raise InvalidManifest(f"{url} is not in canonical form; refusing it")
    return m


def delta_sources(store: Store, model: str, wants: dict[Digest, int]) -> list[Digest]:
    """The local blobs of the model's current version (else its newest here): where a new
    version's tensors most likely already are. transfer/delta.py maps them if they have no map
    yet (one read of each); other blobs count only once they have one (pushed or fetched by delta)."""
    cur = store.refs.current(model)
    if cur is not None:
        d = cur.manifest  # a partial version too (its tag is absent)
    else:
        tags = store.refs.tags(model)
        newest = sorted(tags, key=sort_key)[-1:]
        if not newest:
            return []
        d = tags[newest[0]]
    try:
        m = store.get_manifest(d)
    except CasError:
        return []
    return list(dict.fromkeys(e.digest for e in m.entries if e.digest not in wants and store.has_blob(e.digest)))


def _settle(store: Store, result: FetchResult) -> None:
    """After a fetch: the version becomes current if the model has none; its use is stamped."""
    if store.refs.current(result.model) is None:
        try:
            store.refs.switch(result.model, result.version, result.manifest, action="fetch", expect=None)
            result.current = True
        except Conflict:
            pass
    record_use(store, result.model, result.version)


def _complete_locally(store: Store, model: str, version: str,
                      selection: Selection | None = None) -> tuple[Digest, Manifest] | None:
    """``model@version``'s manifest (digest and parsed) if its tag, manifest and every blob are here
    and unchanged (a blob written through a link goes to quarantine, so it is fetched again).
    With a ``selection``: else its partial version, if it is that selection."""
    d = store.refs.get_tag(model, version)
    if d is None and selection is not None:
        d = store.refs.get_partial(model, version)
        try:
            if d is not None and (store.get_manifest(d).selection or (None,))[0] != selection:
                return None
        except CasError:
            return None
    if d is None or not store.has_manifest(d):
        return None
    try:
        m = store.get_manifest(d)
    except CasError:
        return None
    if not all(store.has_blob(e.digest) for e in m.entries):
        return None
    try:
        store.assert_unchanged(m, "fetching it now")
    except BlobsChanged as e:
        log.warning("%s", e)
        return None
    return d, m


def _newest_local(store: Store, model: str) -> tuple[str, Digest, Manifest] | None:
    """The newest version complete in the store, checking from the newest down."""
    for v in sorted(store.refs.tags(model), key=sort_key, reverse=True):
        if (here := _complete_locally(store, model, v)) is not None:
            return v, *here
    return None


def _local_result(store: Store, model: str, version: str, digest: Digest, m: Manifest, t0: float) -> FetchResult:
    """What a fetch of a version the store already holds does: lease and touch it (so a GC
    running now keeps it), make it current if the model has none, record its use. (With a
    selection, the whole version held here is the answer: it holds every selected file.)"""
    sizes = {e.digest: e.size for e in m.entries}
    partial = m.selection is not None
    result = FetchResult(model, version, digest, stats=Stats(blobs=len(sizes), bytes_total=sum(sizes.values()),
                                                             bytes_reused=sum(sizes.values())),
                         files=None if partial else len(m.entries), selected=len(m.entries) if partial else None)
    with Lease(store, f"fetch {model}@{version}", [digest, *sizes]):
        # GC sets a manifest aside and re-checks its mtime, as a blob's (gc/sweep.py)
        if (not store.touch(store.layout.manifest(digest)) or not all(store.touch(store.blob_path(d)) for d in sizes)
                or digest not in (store.refs.get_tag(model, version), store.refs.get_partial(model, version))):
            raise NotFound(f"{model}@{version} was collected while being fetched; fetch it again")
        _settle(store, result)
    result.elapsed = time.monotonic() - t0
    return result


def open_remotes(remote: str | None = None, *, insecure: bool = False, offline: bool | None = None,
                 project_remote: str | None = None, **http_options) -> list[Remote]:
    """The backends a command uses, in order: ``remote`` as the user named it, else
    ``project_remote`` (from cas.toml: a shared file, so a URL there gets no CAS_TOKEN), else every
    configured one. The verbs build them into one stack (remotes/layers.stack)."""
    from casstore.remotes.config import choose
    from casstore.remotes.layers import Tuning

    if is_offline(offline):
        raise Offline("offline (--offline or CAS_OFFLINE=1): not contacting a remote")
    specs = choose(remote) if remote else choose(project_remote, trusted=False)
    tuning = Tuning.from_env()
    return [s.open(insecure=insecure, tuning=tuning, **http_options) for s in specs]


def remotes_for_fetch(remote: str | None = None, *, insecure: bool = False, offline: bool | None = None,
                      **http_options) -> list[Remote]:
    """The remotes a fetch may use: none when offline, or when none is configured and none was
    named (a version complete in the store needs none; ``fetch`` says so if it does)."""
    if is_offline(offline):
        return []
    try:
        return open_remotes(remote, insecure=insecure, **http_options)
    except NotFound:
        if remote:
            raise
        return []
