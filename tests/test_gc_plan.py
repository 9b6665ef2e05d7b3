"""The GC plan as a pure function of roots, sizes, times and limits."""

from hypothesis import given, settings
from hypothesis import strategies as st

from casstore.gc import DAY, Policy, StoreState, VersionState, plan, root_reasons
from casstore.model.digest import Digest

NOW = 1_000_000_000.0


def D(i):
    return Digest(f"{i:064x}")


def V(model, version, manifest, blobs, last_used=NOW - 100 * DAY, recency=None, marks=()):
    return VersionState(model, version, D(manifest), frozenset(D(b) for b in blobs), last_used, recency, marks)


def state(versions, blobs, manifests=None, leased=(), extra=None, age=10 * DAY):
    return StoreState(
        NOW,
        {D(b): (size, NOW - age) for b, size in blobs.items()},
        manifests if manifests is not None else {v.manifest: NOW - age for v in versions},
        tuple(versions),
        frozenset(D(x) for x in leased),
        extra or {},
    )


def test_unreferenced_goes_after_grace_only():
    s = state([V("m", "1", 100, [1], marks=("current",))], {1: 10, 2: 20, 3: 30})
    s = StoreState(s.now, {**s.blobs, D(3): (30, NOW - 60)}, s.manifests, s.versions)  # blob 3 is a minute old
    p = plan(s, Policy(grace=3600))
    assert p.delete_blobs == (D(2),) and p.bytes_freed == 20 and p.young_spared == 1


def test_lru_versions_until_under_the_limit():
    vs = [
        V("m", "1", 101, [1], last_used=NOW - 50 * DAY),
        V("m", "2", 102, [2], last_used=NOW - 40 * DAY),
        V("m", "3", 103, [3], last_used=NOW - 30 * DAY),
        V("m", "4", 104, [4, 1], recency=0, marks=("current",)),
    ]
    p = plan(state(vs, {1: 100, 2: 100, 3: 100, 4: 100}), Policy(max_size=250, retention_days=7, keep_last=1))
    # Least recently used first: 1 goes first though it frees nothing alone (its blob is shared with 4).
    assert [v for _, v, _ in p.delete_versions] == ["1", "2", "3"]
    assert set(p.delete_blobs) == {D(2), D(3)} and p.shortfall == 0


def test_roots_are_kept_with_reasons_and_shortfall_reported():
    vs = [
        V("m", "1", 101, [1], marks=("pinned",)),
        V("m", "2", 102, [2], recency=1),
        V("m", "3", 103, [3], last_used=NOW - DAY),
        V("m", "4", 104, [4], recency=0, marks=("current",)),
    ]
    p = plan(state(vs, {1: 100, 2: 100, 3: 100, 4: 100}), Policy(max_size=100, retention_days=7, keep_last=2))
    assert p.delete_versions == () and p.shortfall == 300
    kept = dict(p.kept)
    assert kept["m@1"] == ("pinned",) and "among the last 2 used" in kept["m@2"]
    assert "used within 7 days" in kept["m@3"] and "current" in kept["m@4"]


def test_leased_and_extra_roots():
    vs = [V("m", "1", 101, [1]), V("m", "2", 102, [2], marks=("current",))]
    extra = {D(200): frozenset({D(5)})}
    p = plan(state(vs, {1: 10, 2: 10, 5: 10, 6: 10}, leased=[101, 1, 6], extra=extra), Policy(max_size=0, retention_days=None, keep_last=0))
    assert D(1) not in p.delete_blobs and D(6) not in p.delete_blobs and D(5) not in p.delete_blobs
    assert "leased by an operation in flight" in dict(p.kept)["m@1"][0]


versions_st = st.lists(
    st.tuples(st.integers(0, 3), st.lists(st.integers(0, 15), max_size=4), st.integers(0, 60), st.booleans(),
              st.none() | st.integers(0, 3)),
    max_size=8,
)


@settings(max_examples=200)
@given(versions_st, st.dictionaries(st.integers(0, 15), st.integers(1, 1000)),
       st.dictionaries(st.integers(0, 15), st.integers(0, 7200)), st.lists(st.integers(0, 15), max_size=3),
       st.none() | st.integers(0, 5000), st.none() | st.integers(0, 30), st.integers(0, 3), st.sampled_from([0, 3600]))
def test_properties(vspecs, sizes, ages, leased, max_size, retention, keep_last, grace):
    vs = []
    for i, (model, blobs, days, pinned, recency) in enumerate(vspecs):
        vs.append(V(f"m{model}", str(i), 1000 + i, [b for b in blobs if b in sizes], last_used=NOW - days * DAY,
                    recency=recency, marks=("pinned",) if pinned else ()))
    s = StoreState(NOW, {D(b): (size, NOW - ages.get(b, 10 * DAY)) for b, size in sizes.items()},
                   {v.manifest: NOW - 10 * DAY for v in vs}, tuple(vs), frozenset(D(x) for x in leased))
    pol = Policy(max_size=max_size, retention_days=retention, keep_last=keep_last, grace=grace)
    p = plan(s, pol)
    deleted_versions = {(m, v) for m, v, _ in p.delete_versions}
    rooted = [v for v in vs if root_reasons(v, pol, NOW)]
    # Never a root, nor anything a surviving version, a root or a lease needs, nor anything young.
    assert not {(v.model, v.version) for v in rooted} & deleted_versions
    survivors = [v for v in vs if (v.model, v.version) not in deleted_versions]
    needed = set().union(*[v.blobs for v in survivors]) if survivors else set()
    assert not set(p.delete_blobs) & (needed | s.leased)
    assert all(s.blobs[b][1] < NOW - grace for b in p.delete_blobs)
    assert p.bytes_freed == sum(s.blobs[b][0] for b in p.delete_blobs)
    # Nor less: every old blob no survivor and no lease needs goes, whichever rule freed it.
    free = {b for b, (_, mtime) in s.blobs.items() if b not in needed | s.leased}
    assert set(p.delete_blobs) == {b for b in free if s.blobs[b][1] < NOW - grace}
    assert p.young_spared == len(free) - len(p.delete_blobs)
    assert list(p.delete_blobs) == sorted(p.delete_blobs, key=lambda d: d.hex)
    # Frees enough when it can: if still over, every version that could go has gone.
    if p.shortfall > 0:
        for v in vs:
            if not root_reasons(v, pol, NOW) and v.manifest not in s.leased:
                assert (v.model, v.version) in deleted_versions
