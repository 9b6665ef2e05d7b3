"""The pure part of GC: a ``Plan`` from a ``StoreState`` and a ``Policy``, printable before anything
is deleted (plan, then execute)."""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableSet, Sequence
from dataclasses import dataclass
from itertools import chain

from casstore.gc.policy import DAY, Policy
from casstore.gc.state import (
    BlobKey,
    StoreState,
    VersionState,
    blob_bytes,
    blob_digests,
    blob_stats,
    blobs_older_than,
    blobs_union,
    sorted_by_hex,
)
from casstore.model.digest import Digest


@dataclass(frozen=True)
class Plan:
    delete_versions: tuple[tuple[str, str, Digest], ...]
    delete_manifests: tuple[Digest, ...]
    delete_blobs: Sequence[Digest]  # sorted by hex
    bytes_before: int
    bytes_freed: int
    kept: tuple[tuple[str, tuple[str, ...]], ...]  # "model@version", reasons
    shortfall: int  # bytes still over max_size after the plan (0 if within, or no limit)
    young_spared: int  # blobs nothing keeps, left only because they are within the grace period
    delete_junk: tuple[str, ...] = ()  # quarantined and abandoned partial files past the grace period
    young_bytes: int = 0  # the bytes of those blobs
    grace: float = 0.0

    @property
    def bytes_after(self) -> int:
        return self.bytes_before - self.bytes_freed

    def to_json(self) -> dict:
        return {
            "delete_versions": [f"{m}@{v}" for m, v, _ in self.delete_versions],
            "delete_manifests": len(self.delete_manifests),
            "delete_blobs": len(self.delete_blobs),
            "bytes_before": self.bytes_before,
            "bytes_freed": self.bytes_freed,
            "bytes_after": self.bytes_after,
            "kept": {label: list(reasons) for label, reasons in self.kept},
            "shortfall": self.shortfall,
            "young_spared": self.young_spared,
            "young_spared_bytes": self.young_bytes,
            "grace": self.grace,
            "delete_junk": len(self.delete_junk),
        }


def root_reasons(v: VersionState, policy: Policy, now: float, leased: frozenset[BlobKey] = frozenset()) -> tuple[str, ...]:
    """Why GC keeps ``v`` (empty: it may go): the one rule, for the plan and for the sweep's
    last-moment re-check alike (gc/sweep.py)."""
    reasons = list(v.marks)
    if v.manifest in policy.protect:
        reasons.append("just fetched or switched to by this command")
    if not v.released:  # an aggressive update gave these up (store/markers.py)
        if v.kept_since is not None and (policy.retention_days is None or now - v.kept_since < policy.retention_days * DAY):
            reasons.append("rollback root")
        if v.recency is not None and v.recency < policy.keep_last:
            reasons.append(f"among the last {policy.keep_last} used")
        if policy.retention_days is not None and now - v.last_used < policy.retention_days * DAY:
            reasons.append(f"used within {policy.retention_days:g} days")
    if now - v.last_used < policy.grace:
        reasons.append(f"used {format_age(now - v.last_used)} ago, within the grace period ({format_age(policy.grace)})")
    if v.manifest in leased:
        reasons.append("leased by an operation in flight")
    return tuple(reasons)


def format_age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s >= 3600 and s % 3600 == 0 and s < 2 * 86400:
        return f"{s // 3600}h"
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def plan(state: StoreState, policy: Policy) -> Plan:
    """What to delete: unreferenced objects and files past the grace period; with a retention
    period, every version that is no root (unused for that long); then, while over
    ``max_size``, the least recently used versions that are no root."""
    old_enough = state.now - policy.grace
    total = blob_bytes(state.blobs) + sum(size for _, size, _ in state.junk)
    delete_junk = tuple(sorted(path for path, _, mtime in state.junk if mtime < old_enough))
    live_manifests = set(state.extra) | {d for d in state.leased if d in state.manifests} | set(policy.protect)
    live_manifests.update(v.manifest for v in state.versions)
    young: dict[BlobKey, int] = {}  # what would go but for the grace period (the plan says so): size
    delete_blobs: MutableSet[BlobKey] = set()
    freed = sum(size for path, size, _ in state.junk if path in delete_junk)

    def take(keys: MutableSet) -> None:
        """The blobs among ``keys`` (a set of the caller's, changed here) that may go, by their
        size and mtime: those the fresh marks show old without a stat, the rest stat'ed here in
        one tight loop, each blob once. In place: at 1M blobs a set is 32 MiB (a report's mask, 1 MB)."""
        nonlocal freed, delete_blobs
        keys -= state.leased
        old, size = blobs_older_than(state.blobs, keys, old_enough)  # what fresh marks show old needs no stat
        keys -= old
        if delete_blobs:
            delete_blobs |= old
        else:  # the first (often the only) take: its set is the plan's, not copied (1M blobs: 0.1 s)
            delete_blobs = old
        freed += size
        for b, size, mtime in blob_stats(state.blobs, keys):
            if mtime >= old_enough:
                young[b] = size
            else:
                delete_blobs.add(b)
                freed += size

    delete_manifests = {m for m, mtime in state.manifests.items() if m not in live_manifests and mtime < old_enough}
    kept = []
    roots = []
    candidates = []
    for v in state.versions:
        reasons = root_reasons(v, policy, state.now, state.leased)
        if reasons:
            kept.append((f"{v.model}@{v.version}", reasons))
            roots.append(v)
        else:
            candidates.append(v)
    delete_versions = []
    expire_all = policy.retention_days is not None  # no root means: not used within the retention period
    lru = sorted(candidates, key=lambda v: (v.last_used, v.model, v.version))

    def drop(v: VersionState) -> None:
        delete_versions.append((v.model, v.version, v.manifest))
        if v.manifest not in state.extra and state.manifests.get(v.manifest, 0) < old_enough:
            delete_manifests.add(v.manifest)

    # Set operations and Counters: the per-blob work runs in C (GC and `cas du` on 1M blobs).
    # When every candidate goes, a blob is freed unless a root or a manifest kept otherwise holds
    # it, whether a candidate named it or nothing did: one pass over the store, with no union of
    # every version's blobs (docs/benchmarks.md, "GC's plan in one pass"). Else what no version
    # holds goes first, then the least recently used versions while over the limit.
    expire_now = bool(lru) and expire_all
    holders = roots if expire_now else state.versions
    take(state.blobs.keys() - blobs_union(state.blobs, [*state.extra.values(), *(v.blobs for v in holders)]))
    if expire_now:
        for v in lru:
            drop(v)
    elif lru and policy.max_size is not None:
        refcount = Counter(chain.from_iterable(v.blobs for v in state.versions))
        refcount.update(chain.from_iterable(state.extra.values()))
        for v in lru:
            if total - freed <= policy.max_size:
                break
            drop(v)
            released = set()
            for b in v.blobs:
                refcount[b] -= 1
                if refcount[b] == 0:
                    released.add(b)
            take(released)
    shortfall = max(0, total - freed - policy.max_size) if policy.max_size is not None else 0
    return Plan(tuple(delete_versions), tuple(sorted_by_hex(delete_manifests)),
                blob_digests(state.blobs, delete_blobs), total, freed,
                tuple(sorted(kept)), shortfall, len(young), delete_junk, sum(young.values()), policy.grace)
