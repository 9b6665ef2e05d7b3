"""store/indexset.py: a mask-backed set of a report's blob keys behaves as a Python set of them."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casstore.store.indexset import IndexSet

N, M = 40, 12
keys = st.sets(st.integers(-M, N - 1))
runs = st.lists(st.one_of(st.tuples(st.integers(0, N - 1), st.integers(0, 8)).map(
    lambda t: tuple(range(t[0], min(N, t[0] + t[1])))), st.sets(st.integers(0, N - 1)).map(tuple)), max_size=6)


def of(ks) -> IndexSet:
    s = IndexSet.empty(N, M)
    for k in ks:
        s.add(k)
    return s


@given(keys, keys, runs, st.lists(st.integers(-M - 3, N + 3) | st.just("a digest"), max_size=5))
def test_as_a_set(a, b, groups, probes):
    x, y = of(a), of(b)
    assert set(x) == a and len(x) == len(a)
    assert set(x - y) == a - b and set(x & y) == a & b and set(x.intersection(b)) == a & b
    assert set(x - b) == a - b  # against a plain set: key by key
    z = x.copy()
    z.update(y)
    assert set(z) == a | b and set(x) == a  # a copy's change is its own
    z -= y
    assert set(z) == a - b
    u = IndexSet.empty(N, M)
    u.mark(groups)
    assert set(u) == set().union(*groups)
    for p in probes:
        assert (p in x) == (p in a)
        x.discard(p)
        a.discard(p)
    assert set(x) == a
    sizes, other = list(range(100, 100 + N)), list(range(1000, 1000 + M))
    assert x.total(sizes, other) == sum(sizes[k] if k >= 0 else other[-k - 1] for k in a)
    neg = x.negatives()
    assert set(neg) == {k for k in a if k < 0}
    x.drop_negatives()
    assert set(x) == {k for k in a if k >= 0}
    assert set(x.with_others(M)) == {k for k in a if k >= 0} | set(range(-M, 0))
    assert set(x.grown(N + 5)) == set(x) and x.grown(N + 5).dims == (N + 5, M)


def test_full_and_a_negative_index_in_a_manifest():
    assert set(IndexSet.full(3, 2)) == {0, 1, 2, -1, -2}
    with pytest.raises(ValueError, match="negative"):
        IndexSet.empty(4).mark([(2, -1, 3)])
