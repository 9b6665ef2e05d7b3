"""`cas check-updates` and `cas update`: plan (a frozen value, printable), then execute once.

An update fetches and verifies the whole new version before one atomic switch of the current
pointer, so an interrupted update leaves current on the old version. It never goes backwards
(`rollback` and `use` do), and a breaking target (a major bump, or the `breaking` flag) needs
``allow_breaking``.

Strategies: *conservative* keeps the old version as a rollback root (``refs/M/keep/V``) until
retention or the next update; *aggressive* releases the old version (``refs/M/released/V``): no
rollback root, no recency or retention protection, so the next GC collects it unless it is
pinned, locked by a project or in use; *parallel* keeps the rollback root and materialises both views (`cas path
M@OLD`, `cas path M@NEW`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from casstore.errors import Conflict, InvalidInput, NotFound, RequirementsUnmet
from casstore.model import runtime
from casstore.model.digest import Digest
from casstore.model.globs import Selection
from casstore.model.manifest import Manifest
from casstore.model.versioning import is_prerelease, latest, sort_key
from casstore.ops.fetch import delta_sources, install, load_manifest, read_index
from casstore.ops.switch import switch_to
from casstore.remotes.base import Remote
from casstore.store.markers import mark, marked, unmark
from casstore.store.objects import Store
from casstore.transfer.download import DeltaMemo, Downloader, Estimate, Settings

log = logging.getLogger("casstore")
STRATEGIES = ("conservative", "aggressive", "parallel")


def is_breaking(current: str, target: str, flagged: bool) -> bool:
    a, b = sort_key(current), sort_key(target)
    major_bump = a[0] == 1 and b[0] == 1 and b[1] > a[1]
    return flagged or major_bump


def compatible(index, current: str, *, prereleases: bool = False) -> str | None:
    """The newest version above ``current`` reachable without crossing a breaking one."""
    newer = sorted((v for v in index.versions if sort_key(v) > sort_key(current)
                    and (prereleases or not is_prerelease(v))), key=sort_key)
    best = None
    for v in newer:
        if is_breaking(current, v, index.versions[v].breaking):
            break
        best = v
    return best


@dataclass(frozen=True)
class UpdateInfo:
    model: str
    current: str
    latest: str | None
    breaking: bool  # is the latest version a breaking update?
    compatible: str | None = None  # the newest non-breaking update, if any
    unmet: tuple[str, ...] = ()  # what the latest version needs that this environment lacks
    recommended: str | None = None  # what `cas update` takes: the newest non-breaking one that runs here
    skipped: tuple[tuple[str, str], ...] = ()  # newer non-breaking versions passed over, and why
    error: str | None = None  # why this model could not be checked (the others still are)

    @property
    def available(self) -> bool:
        return self.latest is not None and sort_key(self.latest) > sort_key(self.current)

    def to_json(self) -> dict:
        return {"model": self.model, "current": self.current, "latest": self.latest,
                "update_available": self.available, "breaking": self.breaking, "compatible": self.compatible,
                "unmet_requirements": list(self.unmet), "recommended": self.recommended,
                "skipped": [{"version": v, "why": why} for v, why in self.skipped], "error": self.error}


async def _manifest(store: Store, remotes: list[Remote], model: str, index, version: str,
                    loaded: dict[str, Manifest]) -> Manifest:
    """A version's manifest, each fetched at most once per command (``loaded``)."""
    if version not in loaded:
        loaded[version] = await load_manifest(store, remotes, index.versions[version].manifest, model, version)
    return loaded[version]


async def runnable_update(store: Store, remotes: list[Remote], model: str, index, current: str, *,
                          prereleases: bool = False, allow_breaking: bool = False,
                          loaded: dict[str, Manifest] | None = None) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest version above ``current`` (not crossing a breaking one unless ``allow_breaking``)
    whose runtime requirements this environment meets, and the newer ones skipped with why."""
    loaded = {} if loaded is None else loaded
    reach = latest(index.versions, prereleases=prereleases) if allow_breaking else compatible(
        index, current, prereleases=prereleases)
    if reach is None:
        return None, []
    candidates = sorted((v for v in index.versions if sort_key(current) < sort_key(v) <= sort_key(reach)
                         and (prereleases or not is_prerelease(v))), key=sort_key, reverse=True)
    skipped: list[tuple[str, str]] = []
    for v in candidates:
        problems = runtime.unmet((await _manifest(store, remotes, model, index, v, loaded)).meta)
        if not problems:
            return v, skipped
        skipped.append((v, "needs " + "; ".join(problems)))
    return None, skipped


async def check_updates(store: Store, remotes: list[Remote], models: list[str] | None = None,
                        *, prereleases: bool = False) -> list[UpdateInfo]:
    """One line per model: a model the remote does not publish (or that fails to read) is that
    model's line, not the failure of all."""
    out = []
    for model in models or store.refs.models():
        cur = store.refs.current(model)
        if cur is None:
            if models:
                store.resolve(model)  # a model named but not here (or with no current): NotFound
            continue
        try:
            index, _ = await read_index(remotes, model)
        except NotFound as e:
            out.append(UpdateInfo(model, cur.version, None, False, error=str(e)))
            continue
        newest = latest(index.versions, prereleases=prereleases)
        breaking = bool(newest and sort_key(newest) > sort_key(cur.version)
                        and is_breaking(cur.version, newest, index.versions[newest].breaking))
        unmet: tuple[str, ...] = ()
        loaded: dict[str, Manifest] = {}
        if newest is not None and sort_key(newest) > sort_key(cur.version):
            unmet = tuple(runtime.unmet((await _manifest(store, remotes, model, index, newest, loaded)).meta))
        recommended, skipped = await runnable_update(store, remotes, model, index, cur.version, prereleases=prereleases,
                                                     loaded=loaded)
        out.append(UpdateInfo(model, cur.version, newest, breaking, compatible(index, cur.version, prereleases=prereleases),
                              unmet, recommended, tuple(skipped)))
    return out


@dataclass(frozen=True)
class UpdatePlan:
    model: str
    current: str
    target: str
    manifest: Digest
    strategy: str
    breaking: bool
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    download_bytes: int = 0  # the estimate: new_bytes less what local chunks hold and copies
    head_seq: int = 0
    up_to_date: bool = False
    manifest_obj: Manifest | None = field(default=None, compare=False, repr=False)  # as planned: not fetched again
    selection: Selection | None = None  # the files to fetch of the target (a partial version), if not all
    new_bytes: int = 0  # the blobs the store lacks
    from_local: int = 0  # of those, what local chunks hold (a delta fetch copies it)
    copy_bytes: int = 0  # of those, what a remote on the store's filesystem holds (copied, not downloaded)
    memo: DeltaMemo | None = field(default=None, compare=False, repr=False)  # the maps the estimate read

    def to_json(self) -> dict:
        return {"model": self.model, "from": self.current, "to": self.target, "manifest": str(self.manifest),
                "strategy": self.strategy, "breaking": self.breaking, "up_to_date": self.up_to_date,
                "download_bytes": self.download_bytes, "new_bytes": self.new_bytes, "from_local": self.from_local,
                "copy_bytes": self.copy_bytes, "added": list(self.added), "changed": list(self.changed),
                "removed": list(self.removed),
                "selection": None if self.selection is None else {"include": list(self.selection.include),
                                                                  "exclude": list(self.selection.exclude)}}


def diff(old: Manifest, new: Manifest) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    a = {e.path: e.digest for e in old.entries}
    b = {e.path: e.digest for e in new.entries}
    added = tuple(sorted(set(b) - set(a)))
    removed = tuple(sorted(set(a) - set(b)))
    changed = tuple(sorted(p for p in set(a) & set(b) if a[p] != b[p]))
    return added, changed, removed


async def plan_update(store: Store, remotes: list[Remote], model: str, *, to: str | None = None,
                      strategy: str = "conservative", allow_breaking: bool = False,
                      prereleases: bool = False, ignore_requirements: bool = False,
                      selection: Selection | None = None, settings: Settings | None = None) -> UpdatePlan:
    """``selection``: the files of the target to fetch; by default the current version's own
    selection, if it is a partial version (a GPU node that holds one expert keeps holding only it)."""
    if strategy not in STRATEGIES:
        raise InvalidInput(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    head = store.refs.current(model)
    if head is None:
        raise NotFound(f"model {model} has no current version here; use `cas fetch {model}` first")
    index, _ = await read_index(remotes, model)
    loaded: dict[str, Manifest] = {}
    target = to
    if target is None:
        newest = latest(index.versions, prereleases=prereleases)
        # Without --allow-breaking, the newest version that is not breaking; say if a newer one is.
        target = newest if allow_breaking else compatible(index, head.version, prereleases=prereleases)
        if target is None and newest is not None and sort_key(newest) > sort_key(head.version):
            raise Conflict(f"{model}@{newest} is a breaking update from {head.version} and no non-breaking "
                           "update exists; pass --allow-breaking to take it")
        if target is not None and sort_key(target) > sort_key(head.version) and not ignore_requirements:
            # what check-updates recommends: the newest of those that run here
            runnable, skipped = await runnable_update(store, remotes, model, index, head.version,
                                                      prereleases=prereleases, allow_breaking=allow_breaking,
                                                      loaded=loaded)
            if runnable is None:
                raise RequirementsUnmet(f"no update of {model} from {head.version} runs here: "
                                        + "; ".join(f"{v} {why}" for v, why in skipped)
                                        + " (--ignore-requirements to take the newest anyway)")
            target = runnable
        if target is None or sort_key(target) <= sort_key(head.version):
            target = head.version  # nothing newer: never a downgrade
    if target not in index.versions and target != head.version:
        raise NotFound(f"{model}@{to or 'latest'} is not published (versions: {', '.join(index.versions) or 'none'})")
    if target == head.version:
        return UpdatePlan(model, head.version, target, head.manifest, strategy, False, head_seq=head.seq, up_to_date=True)
    if sort_key(target) < sort_key(head.version):
        raise Conflict(f"{model}@{target} is older than the current {head.version}; update never goes backwards "
                       f"(use `cas rollback {model}` or `cas use {model}@{target}`)")
    entry = index.versions[target]
    breaking = is_breaking(head.version, target, entry.breaking)
    if breaking and not allow_breaking:
        raise Conflict(f"{model}@{target} is a breaking update from {head.version}"
                       f"{' (flagged breaking)' if entry.breaking else ' (major version bump)'}; "
                       "pass --allow-breaking to take it")
    local = store.refs.get_tag(model, target)
    if local is not None and local != entry.manifest:
        raise Conflict(f"the remote's {model}@{target} is now {entry.manifest}, but this store has {local}")
    new = await _manifest(store, remotes, model, index, target, loaded)
    runtime.check(model, target, new.meta, ignore=ignore_requirements)  # before anything is downloaded
    old = store.get_manifest(head.manifest)
    if selection is None and (held := old.selection) is not None:
        selection = held[0]
    wanted = new.select(selection, entry.manifest) if selection is not None else new
    added, changed, removed = diff(old, wanted)
    need = {e.digest: e.size for e in wanted.entries if not store.has_blob(e.digest)}
    # what the fetch will download, decided as it decides (delta from local chunks included)
    est = (await Downloader(store, remotes, settings or Settings.from_env()).estimate(need, delta_sources(store, model, need))
           if need else Estimate(0))
    return UpdatePlan(model, head.version, target, entry.manifest, strategy, breaking, added, changed, removed,
                      est.download, head.seq, manifest_obj=new, selection=selection, new_bytes=est.missing,
                      from_local=est.from_local, copy_bytes=est.copied, memo=est.memo)


async def execute_update(store: Store, remotes: list[Remote], plan: UpdatePlan, *, settings: Settings | None = None,
                         progress=None):
    """Fetch and verify everything, then switch in one step (a Conflict if current moved meanwhile)."""
    if plan.up_to_date:
        return None
    m = plan.manifest_obj or await load_manifest(store, remotes, plan.manifest, plan.model, plan.target)
    res = await install(store, remotes, plan.model, plan.target, plan.manifest, m, settings=settings, progress=progress,
                        selection=plan.selection, memo=plan.memo)
    head = store.refs.current(plan.model)
    if head is None or head.seq != plan.head_seq:
        raise Conflict(f"current version of {plan.model} changed while updating; nothing was switched")
    switched = switch_to(store, plan.model, plan.target, res.manifest, "update", head)
    old_digest = store.refs.get_tag(plan.model, plan.current) or store.refs.get_partial(plan.model, plan.current)
    for earlier in marked(store, plan.model, "keep"):  # one rollback root per model: the version just left
        if earlier != plan.current:
            unmark(store, plan.model, earlier, "keep")
    if plan.strategy in ("conservative", "parallel"):
        mark(store, plan.model, plan.current, "keep")
    else:  # aggressive: the old version gives up its rollback root and recency; the next GC takes it
        unmark(store, plan.model, plan.current, "keep")
        mark(store, plan.model, plan.current, "released")
    if plan.strategy == "parallel":
        from casstore.ops.checkout import view

        view(store, res.manifest, store.get_manifest(res.manifest))
        if old_digest is not None:
            view(store, old_digest, store.get_manifest(old_digest))
    return res, switched
