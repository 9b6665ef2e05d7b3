import pytest
from hypothesis import given
from hypothesis import strategies as st

from casstore.errors import InvalidInput
from casstore.model.requirements import Requirement
from casstore.model.versioning import is_prerelease, latest, sort_key

VERSIONS = ["0.9.0", "0.9.3", "1.0.0", "1.1.0", "1.1.5", "1.2.0-rc.1", "1.2.0", "2.0.0-beta", "2.0.0", "weird"]


@pytest.mark.parametrize(
    "req,want",
    [
        ("latest", "2.0.0"), ("^1.1", "1.2.0"), ("~1.1", "1.1.5"), ("1.1.0", "1.1.0"), (">=1.0, <2", "1.2.0"),
        ("^0.9", "0.9.3"), ("~1", "1.2.0"), ("weird", "weird"), ("<1.1.5", "1.1.0"), ("^2", "2.0.0"),
        ("^3", None), ("1.2.0-rc.1", "1.2.0-rc.1"), ("=1.0.0", "1.0.0"),
    ],
)
def test_resolve(req, want):
    assert Requirement.parse(req).resolve(VERSIONS) == want


def test_prereleases_only_when_asked():
    assert Requirement.parse("^2.0.0-0").resolve(["2.0.0-beta"]) is None
    assert Requirement.parse("^2.0.0-0").resolve(["2.0.0-beta"], prereleases=True) == "2.0.0-beta"
    assert latest(["1.0.0", "2.0.0-rc.1"]) == "1.0.0"


@pytest.mark.parametrize("bad", ["", "   ", "^", "^x.y", ">=", ">= banana", None])
def test_bad_requirements(bad):
    with pytest.raises(InvalidInput):
        Requirement.parse(bad)


semver = st.builds(lambda a, b, c, pre: f"{a}.{b}.{c}" + (f"-rc.{pre}" if pre is not None else ""),
                   st.integers(0, 4), st.integers(0, 4), st.integers(0, 4), st.none() | st.integers(0, 3))
reqs = st.one_of(
    st.just("latest"),
    st.builds(lambda op, a, b: f"{op}{a}.{b}", st.sampled_from(["^", "~"]), st.integers(0, 4), st.integers(0, 4)),
    st.builds(lambda a, b: f">={a}.0, <{b}.0", st.integers(0, 4), st.integers(0, 5)),
    semver,
)


@given(reqs, st.lists(semver, max_size=12), st.booleans())
def test_resolution_is_the_newest_match(text, versions, pre):
    r = Requirement.parse(text)
    got = r.resolve(versions, prereleases=pre)
    matching = [v for v in versions if r.matches(v, prereleases=pre)]
    if got is None:
        assert matching == []
    else:
        assert r.matches(got, prereleases=pre) and got in versions
        assert all(sort_key(v) <= sort_key(got) for v in matching)
        if not pre and r.exact is None:
            assert not is_prerelease(got)


@given(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.lists(semver, max_size=10))
def test_caret_never_crosses_a_major(a, b, c, versions):
    got = Requirement.parse(f"^{a}.{b}.{c}").resolve(versions)
    if got is not None:
        major, minor = (int(x) for x in got.split(".")[:2])
        assert major == a and sort_key(got) >= sort_key(f"{a}.{b}.{c}")
        if a == 0:
            assert minor == b
