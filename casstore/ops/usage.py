"""Space accounting for `cas list` and `cas du`: a pure function of manifests (``usage``), and
the report both commands print (``report``).

"Unique" bytes of a version are those of blobs no other version in the store uses: what
deleting just that version would free. A blob counts once however many files hold it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import blake3
import msgpack

from casstore.errors import NotFound
from casstore.gc import Plan, Policy, plan, read_state, root_reasons
from casstore.gc.state import BlobTable, blob_bytes, bulk
from casstore.model.digest import Digest
from casstore.model.names import validate_model
from casstore.model.versioning import sort_key
from casstore.store import cachefile
from casstore.store.summaries import Summary, summaries


@dataclass(frozen=True)
class VersionUsage:
    model: str
    version: str
    manifest: Digest
    files: int
    size: int  # bytes of its files, duplicates within the version counted once
    unique: int
    shared: int
    current: bool
    last_used: float | None = None
    roots: tuple[str, ...] = ()  # why GC keeps it (empty: collectable when over the limit)
    partial: bool = False  # a selective fetch's part of the version (its files are the selected ones)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "manifest": str(self.manifest),
            "files": self.files,
            "size": self.size,
            "unique": self.unique,
            "shared": self.shared,
            "current": self.current,
            "last_used": self.last_used,
            "roots": list(self.roots),
            "partial": self.partial,
        }


@dataclass(frozen=True)
class ModelUsage:
    model: str
    versions: tuple[VersionUsage, ...]
    size: int  # distinct bytes across its versions
    unique: int  # bytes no other model uses

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "size": self.size,
            "unique": self.unique,
            "versions": [v.to_json() for v in self.versions],
        }


def usage(
    versions: Mapping[tuple[str, str], tuple[Digest, Summary]],
    current: Mapping[str, str],
    details: Mapping[tuple[str, str], tuple[float, tuple[str, ...]]] | None = None,
    partial: frozenset[tuple[str, str]] = frozenset(),
) -> list[ModelUsage]:
    """``details``: (last used, root reasons) per version, from the GC's view of the store;
    ``partial``: the versions held only in part."""
    return _assemble(figures(versions) if versions else _EMPTY, {k: md for k, (md, _) in versions.items()},
                     current, details or {}, partial)


@dataclass(frozen=True)
class Figures:
    """The sizes `cas list` prints: a pure function of which manifest each version names."""

    versions: Mapping[tuple[str, str], tuple[int, int, int]]  # (model, version) -> files, size, unique
    models: Mapping[str, tuple[int, int]]  # size, unique


_EMPTY = Figures({}, {})


def figures(versions: Mapping[tuple[str, str], tuple[Digest, Summary]]) -> Figures:
    # Blobs as indices into the summaries' one table, counted with set operations, so
    # that the per-blob work runs in C (1,000 versions of 100 files: 100k entries).
    tables = {id(s.table) for _, s in versions.values()}
    assert len(tables) == 1, "summaries from one table"
    sizes = next(iter(versions.values()))[1].table.sizes
    shared = _in_several(s.idx for _, s in versions.values())
    models: dict[str, set[int]] = {}
    for (model, _), (_, s) in versions.items():
        models.setdefault(model, set()).update(s.idx)
    shared_models = _in_several(models.values())

    def total(idx) -> int:
        return sum(map(sizes.__getitem__, idx))

    per_version = {}
    for key, (_, s) in versions.items():
        size = total(s.idx)
        per_version[key] = (s.files, size, size - total(shared.intersection(s.idx)))
    per_model = {}
    for model, idx in models.items():
        size = total(idx)
        per_model[model] = (size, size - total(idx & shared_models))
    return Figures(per_version, per_model)


def _assemble(fig: Figures, manifests: Mapping[tuple[str, str], Digest], current: Mapping[str, str],
              details: Mapping[tuple[str, str], tuple[float, tuple[str, ...]]],
              partial: frozenset[tuple[str, str]]) -> list[ModelUsage]:
    by_model: dict[str, list[str]] = {}
    for model, ver in manifests:
        by_model.setdefault(model, []).append(ver)
    out = []
    for model in sorted(by_model):
        vs = []
        for ver in sorted(by_model[model], key=lambda v: (sort_key(v), v)):  # 1.2.0 before 1.10.0
            files, size, unique = fig.versions[model, ver]
            last, roots = details.get((model, ver), (None, ()))
            vs.append(VersionUsage(model, ver, manifests[model, ver], files, size, unique, size - unique,
                                   current.get(model) == ver, last, roots, (model, ver) in partial))
        out.append(ModelUsage(model, tuple(vs), *fig.models[model]))
    return out


def _in_several(groups: Iterable[Iterable[int]]) -> set[int]:
    """What more than one group holds, each group holding a blob at most once: one set
    intersection per group, 1.5-2x faster than a Counter over 100k blobs and its filter."""
    seen: set[int] = set()
    several: set[int] = set()
    for g in groups:
        several.update(seen.intersection(g))
        seen.update(g)
    return several


@dataclass(frozen=True)
class Totals:
    """`cas du`'s line about the whole store."""

    plan: Plan  # what `cas gc` with the policy would do now
    blob_bytes: int
    unreferenced_bytes: int  # blobs no version lists
    junk_bytes: int  # quarantined blobs and abandoned partial downloads


@dataclass(frozen=True)
class StoreUsage:
    """`cas list` and `cas du`: per-version usage with the GC's view, and for du the store's totals."""

    models: list[ModelUsage]
    policy: Policy
    now: float  # the store's clock
    broken: tuple[str, ...]  # tags left out because their manifest is missing or unreadable
    totals: Totals | None = None


def report(store, model: str | None = None, policy: Policy | None = None, *, totals: bool = True) -> StoreUsage:
    """One read of the store (the GC's ``read_state``, from manifest summaries) serves both the
    usage and the plan. Without ``totals`` (`cas list`) no blob is listed or stat'ed."""
    with bulk():
        return _report(store, model, policy or Policy.from_config(), totals)


def _report(store, model: str | None, policy: Policy, totals: bool) -> StoreUsage:
    # `cas list` reads no summary when its figures are cached: 0.35 s of 36 MB at 1M blobs.
    state = read_state(store, report=True, blobs=totals, summarize=totals)
    fig = _figures(store, state, state.summaries if totals else None)
    if fig is None:  # a manifest is unreadable: the read with summaries says which versions it leaves out
        state = read_state(store, report=True, blobs=False)
        fig = _figures(store, state, state.summaries)
    assert fig is not None
    # Sharing is counted over the whole store even for one model: a blob another model uses is
    # not that model's to free (`cas list M` and `cas list` give M the same figures).
    manifests = {(v.model, v.version): v.manifest for v in state.versions}
    if model is not None and not any(m == model for m, _ in manifests):
        raise NotFound(f"model {validate_model(model)} is not in the store {store.root}")
    details = {(v.model, v.version): (v.last_used, root_reasons(v, policy, state.now)) for v in state.versions}
    current = {v.model: v.version for v in state.versions if "current" in v.marks}
    partial = frozenset((v.model, v.version) for v in state.versions if v.partial)
    models = [u for u in _assemble(fig, manifests, current, details, partial) if model is None or u.model == model]
    out = StoreUsage(models, policy, state.now, state.broken)
    if not totals:
        return out
    blobs = state.blobs
    assert isinstance(blobs, BlobTable)
    unreferenced = blobs.keys() - blobs.union(v.blobs for v in state.versions)
    return replace(out, totals=Totals(
        plan=plan(state, policy),
        blob_bytes=blob_bytes(blobs),
        unreferenced_bytes=blobs.bytes_of(unreferenced),
        junk_bytes=sum(size for _, size, _ in state.junk),
    ))


# The figures of the last report, under a hash of which manifest each version named: `cas list`
# on an unchanged store then reads no summary and counts no blob (1M blobs: 0.9 s of 1.9 s). Like
# the summaries it only feeds reports, and a damaged or foreign file costs the work it saves.
MEMO = "cache/usage"
_MEMO_FORMAT = 1


def _figures(store, state, known: Mapping[Digest, Summary] | None) -> Figures | None:
    """The figures of ``state``'s versions: the memo's while they are the versions it counted,
    else counted from ``known`` (or from the summaries, read now) and kept. None: one of their
    manifests is unreadable, and ``known`` was not given."""
    manifests = {(v.model, v.version): v.manifest for v in state.versions}
    key = _memo_key(manifests)
    if all(md in state.manifests for md in manifests.values()) and (fig := _load_memo(store, key)) is not None:
        return fig
    if known is None:
        known, errors = summaries(store, set(manifests.values()))
        if errors:
            return None
    fig = figures({k: (md, known[md]) for k, md in manifests.items()}) if manifests else _EMPTY
    _save_memo(store, key, fig)
    return fig


def _memo_key(manifests: Mapping[tuple[str, str], Digest]) -> bytes:
    return blake3.blake3(msgpack.packb(sorted((m, v, md.hex) for (m, v), md in manifests.items()))).digest()


def _load_memo(store, key: bytes) -> Figures | None:
    return cachefile.load(store, MEMO, _MEMO_FORMAT, "usage figures", lambda obj, _: _parse_memo(obj, key))


def _parse_memo(obj: dict, key: bytes) -> Figures | None:
    if obj["key"] != key:  # another set of versions: not damage, so no warning
        return None
    versions, models = obj["versions"], obj["models"]
    if not isinstance(versions, list) or not isinstance(models, list):
        raise ValueError("malformed usage figures")
    out_v, out_m = {}, {}
    for m, v, files, size, unique in versions:
        out_v[_name(m), _name(v)] = _naturals(files, size, unique)
    for m, size, unique in models:
        out_m[_name(m)] = _naturals(size, unique)
    if {m for m, _ in out_v} != out_m.keys():
        raise ValueError("usage figures without their models'")
    return Figures(out_v, out_m)


def _name(x) -> str:
    if type(x) is not str:
        raise ValueError(f"usage figures name {x!r}: not a string")
    return x


def _naturals(*xs) -> tuple:
    if any(type(x) is not int or x < 0 for x in xs):
        raise ValueError(f"usage figures {xs!r}: not counts")
    return xs


def _save_memo(store, key: bytes, fig: Figures) -> None:
    cachefile.save(store, MEMO, _MEMO_FORMAT, "usage figures", {
        "key": key,
        "versions": [[m, v, *f] for (m, v), f in fig.versions.items()],
        "models": [[m, *f] for m, f in fig.models.items()],
    })
