import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casstore.errors import InvalidManifest
from casstore.model.digest import Digest
from casstore.model.manifest import MAX_TIME, Entry, Manifest

D = Digest("cd" * 32)

names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True).filter(lambda s: ".." not in s)
components = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True).filter(
    lambda s: not s.endswith(".") and ".." not in s
)
paths = st.lists(components, min_size=1, max_size=3).map("/".join)
digests = st.binary(min_size=32, max_size=32).map(lambda b: Digest(b.hex()))
entries = st.builds(Entry, paths, st.integers(0, 2**53), digests, st.sampled_from([0o644, 0o755]))


def _distinct(es):
    out, seen, dirs = [], set(), set()
    for e in es:
        key = e.path.casefold()
        parts = key.split("/")
        prefixes = {"/".join(parts[:i]) for i in range(1, len(parts))}
        if key in seen or key in dirs or prefixes & seen:
            continue
        seen.add(key)
        dirs |= prefixes
        out.append(e)
    return tuple(out)


manifests = st.builds(
    Manifest,
    name=names,
    version=names,
    entries=st.lists(entries, max_size=8).map(_distinct),
    created=st.integers(0, MAX_TIME),
    note=st.text(max_size=30),
    breaking=st.booleans(),
    meta=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)


@given(manifests)
def test_round_trip_and_canonical(m):
    data = m.encode()
    back = Manifest.decode(data)
    assert back == m
    assert back.encode() == data  # same manifest, same bytes
    assert back.digest() == m.digest() == Digest.of_bytes(data)


@given(manifests, st.randoms())
def test_entry_order_does_not_change_bytes(m, rnd):
    shuffled = list(m.entries)
    rnd.shuffle(shuffled)
    again = Manifest(m.name, m.version, tuple(shuffled), m.created, m.note, m.breaking, dict(reversed(list(m.meta.items()))))
    assert again.encode() == m.encode()


def _doc(**over):
    doc = Manifest("m", "1.0", (Entry("a.bin", 3, D),), created=5).to_json()
    doc.update(over)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "C:\\x", "\\\\host\\x", "a\\..\\b", "a\x00", ""])
def test_decode_rejects_hostile_path(path):
    raw = _doc(entries=[{"path": path, "size": 1, "digest": str(D), "mode": 420}])
    with pytest.raises(InvalidManifest) as e:
        Manifest.decode(raw, source="remote/x.json")
    assert "remote/x.json" in str(e.value)


@pytest.mark.parametrize(
    "over",
    [
        {"entries": [{"path": "a", "size": 1.5, "digest": str(D), "mode": 420}]},
        {"entries": [{"path": "a", "size": -1, "digest": str(D), "mode": 420}]},
        {"entries": [{"path": "a", "size": 1, "digest": "blake3:" + "AB" * 32, "mode": 420}]},
        {"entries": [{"path": "a", "size": 1, "digest": "blake3:../" + "a" * 61, "mode": 420}]},
        {"entries": [{"path": "a", "size": 1, "digest": str(D), "mode": 0o4755}]},
        {"entries": [{"path": "a", "size": 1, "digest": str(D), "mode": 420, "x": 1}]},
        {"entries": [{"path": "a", "size": 1, "digest": str(D), "mode": 420}, {"path": "A", "size": 1, "digest": str(D), "mode": 420}]},
        {"entries": [{"path": "a", "size": 1, "digest": str(D), "mode": 420}, {"path": "a/b", "size": 1, "digest": str(D), "mode": 420}]},
        {"name": "../evil"},
        {"version": "1.0/../../x"},
        {"created": 1.5},
        {"casstore_manifest": 99},
        {"surprise": True},
        {"meta": {"k": 1}},
    ],
)
def test_decode_rejects_malformed(over):
    with pytest.raises(InvalidManifest):
        Manifest.decode(_doc(**over))


def test_decode_rejects_non_json():
    for raw in (b"\xff\xfe", b"[]", b"{", b'{"casstore_manifest": NaN}'):
        with pytest.raises(InvalidManifest):
            Manifest.decode(raw)
