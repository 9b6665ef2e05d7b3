import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casstore.errors import InvalidManifest
from casstore.model.digest import Digest
from casstore.model.manifest import MAX_TIME, Entry, Manifest, blob_sizes, encode_canonical, entry_records

D = Digest("cd" * 32)

names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True).filter(lambda s: ".." not in s)
model_names = st.one_of(names, st.tuples(names, names).map("/".join))
components = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True).filter(
    lambda s: not s.endswith(".") and ".." not in s
)
paths = st.lists(components, min_size=1, max_size=3).map("/".join)
digests = st.binary(min_size=32, max_size=32).map(lambda b: Digest(b.hex()))
shas = st.one_of(st.none(), st.binary(min_size=32, max_size=32).map(bytes.hex))
entries = st.builds(Entry, paths, st.integers(0, 2**53), digests, st.sampled_from([0o644, 0o755]), shas)


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
    name=model_names,
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
    assert data == encode_canonical(m.to_json())  # the streamed encoding is the canonical one, to the byte
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


@given(manifests)
def test_gcs_read_of_a_manifest_lists_its_blobs_and_their_sizes(m):
    assert blob_sizes(m.encode()) == {e.digest.hex: e.size for e in m.entries}


def test_verifys_read_of_entries_matches_the_decode_and_gives_way_to_it():
    """entry_records (cas verify) gives each entry's digest, size, path and SHA-256 as decode
    does; where a size, a SHA-256 or a digest is wrong it answers None, so verify decodes and
    reports the error that names it."""
    sha = "ab" * 32
    m = Manifest("m", "1.0", (Entry("a.bin", 3, D), Entry("d/b.json", 0, D, sha256=sha)), created=5)
    got = entry_records(m.encode())
    assert list(zip(*got)) == [(e.digest.hex, e.size, e.path, e.sha256) for e in m.entries]
    entry = {"path": "a", "size": 1, "digest": str(D), "mode": 420}
    for wrong in ({"size": -1}, {"size": True}, {"size": 1 << 63}, {"size": "1"}, {"path": 7},
                  {"sha256": "AB" * 32}, {"digest": "blake3:" + "AB" * 32}, {"digest": 7}):
        assert entry_records(_doc(entries=[{**entry, **wrong}])) is None, wrong
    assert entry_records(_doc(entries={})) is None
    with pytest.raises(InvalidManifest):
        entry_records(b"{")


def test_gcs_read_stops_where_a_digest_or_the_structure_is_wrong():
    """blob_sizes skips the path checks only: a digest, a size, a schema or an entries list it
    cannot read is decode's error (GC stops on it, fail closed)."""
    two = f"{D}\n{D}"  # two digests in one text: one match over all of them must not split it
    for over in ({"entries": [{"path": "a", "size": 1, "digest": "blake3:" + "AB" * 32, "mode": 420}]},
                 {"entries": [{"path": "a", "size": 1, "digest": two, "mode": 420},
                              {"path": "b", "size": 1, "digest": str(D), "mode": 420}]},
                 {"entries": [{"path": "a", "size": 1, "digest": 7, "mode": 420}]},
                 {"entries": [{"path": "a", "size": 1, "mode": 420}]}, {"entries": {}}, {"casstore_manifest": 99},
                 *({"entries": [{"path": "a", "size": size, "digest": str(D), "mode": 420}]}
                   for size in (-1, True, 1 << 63, "1", None))):
        with pytest.raises(InvalidManifest):
            blob_sizes(_doc(**over))
    for raw in (b"[]", b"{"):
        with pytest.raises(InvalidManifest):
            blob_sizes(raw)


def test_decode_rejects_non_json():
    for raw in (b"\xff\xfe", b"[]", b"{", b'{"casstore_manifest": NaN}'):
        with pytest.raises(InvalidManifest):
            Manifest.decode(raw)


@pytest.mark.slow  # ~10 s of one core building and parsing 64 MiB: with the other long runs
def test_the_largest_manifest_parses_and_checks_within_the_documented_bound(tmp_path):
    """docs/security.md: a manifest at the limits (64 MiB, 250,000 entries) costs at most 330 MiB
    to parse and check against its digest, as `cas fetch` does. Measured in a fresh process
    (VmHWM growth). Before: 482 MiB on fetch, most of it re-encoding to check the digest."""
    import subprocess
    import sys

    from casstore.model.manifest import MAX_ENTRIES, MAX_MANIFEST_BYTES

    pad = "x" * 100
    entries = tuple(Entry(f"d{i % 997:03d}/{pad}{i:09d}.bin", i, Digest.of_bytes(str(i).encode()))
                    for i in range(MAX_ENTRIES))
    p = tmp_path / "m.json"
    p.write_bytes(Manifest("big", "1.0.0", entries).encode())
    assert MAX_MANIFEST_BYTES * 0.9 < p.stat().st_size <= MAX_MANIFEST_BYTES
    child = (
        "import sys\n"
        "from casstore.model.digest import Digest\n"
        "from casstore.model.manifest import Manifest\n"
        "hwm = lambda: next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = hwm()\n"
        "d = Digest.of_bytes(data)\n"
        "m = Manifest.decode(data, source='test')\n"
        "assert m.digest() == d\n"
        "print((hwm() - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", child, str(p)], capture_output=True, text=True, check=True)
    assert int(out.stdout) < 330, f"{out.stdout.strip()} MiB"


# The bytes of both schemas, pinned: a manifest's digest is its name in every store and remote.
SCHEMA_1 = (b'{\n "breaking": false,\n "casstore_manifest": 1,\n "created": 5,\n "entries": [\n  {\n'
            b'   "digest": "blake3:' + b"cd" * 32 + b'",\n   "mode": 420,\n   "path": "a.bin",\n   "size": 3\n'
            b'  }\n ],\n "meta": {},\n "name": "m",\n "note": "",\n "version": "1.0"\n}\n')
SCHEMA_2 = SCHEMA_1.replace(b'"casstore_manifest": 1', b'"casstore_manifest": 2').replace(
    b'"path": "a.bin",\n', b'"path": "a.bin",\n   "sha256": "' + b"ab" * 32 + b'",\n').replace(
    b'"name": "m"', b'"name": "org/m"')


def test_schema_1_bytes_are_pinned_and_still_read():
    m = Manifest("m", "1.0", (Entry("a.bin", 3, D),), created=5)
    assert m.encode() == SCHEMA_1
    assert m.schema == 1
    assert Manifest.decode(SCHEMA_1) == m


def test_schema_2_carries_sha256_and_an_org_name():
    m = Manifest("org/m", "1.0", (Entry("a.bin", 3, D, sha256="ab" * 32),), created=5)
    assert m.encode() == SCHEMA_2
    back = Manifest.decode(SCHEMA_2)
    assert back == m and back.entries[0].sha256 == "ab" * 32 and back.schema == 2


@pytest.mark.parametrize("bad", [
    SCHEMA_2.replace(b'"casstore_manifest": 2', b'"casstore_manifest": 1'),  # sha256 is not a schema-1 field
    SCHEMA_2.replace(b"ab" * 32, b"AB" * 32),
    SCHEMA_2.replace(b'"' + b"ab" * 32 + b'"', b"null"),
    SCHEMA_2.replace(b"ab" * 32, b"ab" * 31),
])
def test_bad_sha256_fields_are_refused(bad):
    with pytest.raises(InvalidManifest):
        Manifest.decode(bad)
