"""Every parser of input someone else wrote (manifest, index, history record, cas.lock, cas.toml,
progress and lock records) on random bytes and on random JSON: it succeeds or raises
``InvalidInput``, nothing else (no TypeError, KeyError, RecursionError, MemoryError).

CI runs 100 examples per parser and field strategy; ``CAS_FUZZ_EXAMPLES=100000`` runs longer.
"""

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casstore.errors import InvalidInput
from casstore.model.digest import Digest
from casstore.model.history import Switch
from casstore.model.index import Index
from casstore.model.lockfile import LockFile
from casstore.model.manifest import Entry, Manifest
from casstore.ops.project import Project
from casstore.transfer.partials import read_record

EXAMPLES = int(os.environ.get("CAS_FUZZ_EXAMPLES", "100"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

D = Digest.of_bytes(b"x")
GOOD_MANIFEST = Manifest("m", "1.0.0", (Entry("a/b.bin", 3, D, 0o644),), created=5).to_json()
GOOD_INDEX = json.loads(Index("m").encode())
GOOD_INDEX["versions"] = {"1.0.0": {"manifest": str(D), "created": 1, "breaking": False, "size": 3, "files": 1}}
GOOD_LOCK = {"casstore_lock": 1, "models": {"m": {"requirement": "^1", "version": "1.0.0", "manifest": str(D),
                                                  "files": [{"path": "a", "size": 1, "digest": str(D)}]}}}
GOOD_SWITCH = json.loads(Switch(1, "1.0.0", D, None, "use", 1.5, "h", 1, "u").encode())

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=20),
                    st.sampled_from(["644", "0o644", "blake3:" + "0" * 64, str(D), "", "..", "a/../b", ".git/x"]))
json_values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
                           max_leaves=20)


def mutate(doc):
    """A valid document with one field, anywhere in it, replaced by a random value."""
    @st.composite
    def strat(draw):
        d = json.loads(json.dumps(doc))
        node = d
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            k = draw(st.sampled_from(keys))
            if isinstance(node[k], (dict, list)) and draw(st.booleans()):
                node = node[k]
                continue
            node[k] = draw(json_values)
            break
        return json.dumps(d).encode()

    return strat()


def parses_or_invalid(fn, data):
    try:
        fn(data)
    except InvalidInput:
        pass


PARSERS = {
    "manifest": lambda b: Manifest.decode(b, source="fuzz"),
    "index": lambda b: Index.decode(b, source="fuzz", model="m"),
    "lock": lambda b: LockFile.decode(b, "fuzz"),
    "history": lambda b: Switch.decode(b, "fuzz"),
}
GOOD = {"manifest": GOOD_MANIFEST, "index": GOOD_INDEX, "lock": GOOD_LOCK, "history": GOOD_SWITCH}


def test_the_good_documents_parse():
    for name, fn in PARSERS.items():
        fn(json.dumps(GOOD[name]).encode())


def _fuzz_bytes(name):
    @fuzz
    @given(st.binary(max_size=300) | st.builds(lambda v: json.dumps(v).encode(), json_values))
    def run(data):
        parses_or_invalid(PARSERS[name], data)

    run()


def _fuzz_fields(name):
    @fuzz
    @given(mutate(GOOD[name]))
    def run(data):
        parses_or_invalid(PARSERS[name], data)

    run()


def test_manifest_bytes():
    _fuzz_bytes("manifest")


def test_manifest_fields():
    _fuzz_fields("manifest")


def test_index_bytes():
    _fuzz_bytes("index")


def test_index_fields():
    _fuzz_fields("index")


def test_lock_bytes():
    _fuzz_bytes("lock")


def test_lock_fields():
    _fuzz_fields("lock")


def test_history_bytes():
    _fuzz_bytes("history")


def test_history_fields():
    _fuzz_fields("history")


def test_deep_nesting_and_huge_counts_are_refused_before_they_cost():
    for _name, fn in PARSERS.items():
        for data in (b"[" * 200_000 + b"]" * 200_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
            with pytest.raises(InvalidInput, match="fuzz"):
                fn(data)
    many = json.dumps({**GOOD_MANIFEST, "entries": [{}] * 300_000}).encode()
    try:
        Manifest.decode(many, source="remote/x.json")
        raise AssertionError("a 300,000-entry manifest was accepted")
    except InvalidInput as e:
        assert "remote/x.json" in str(e) and "more than 250" in str(e)


def test_bad_mode_types_name_the_entry():
    for mode in ("644", None, [420], True, 0o600):
        doc = json.loads(json.dumps(GOOD_MANIFEST))
        doc["entries"][0]["mode"] = mode
        try:
            Manifest.decode(json.dumps(doc).encode(), source="https://r/manifests/x.json")
        except InvalidInput as e:
            assert "https://r/manifests/x.json" in str(e) and "a/b.bin" in str(e) and "mode" in str(e)
        else:
            raise AssertionError(f"mode {mode!r} accepted")
    with pytest.raises(InvalidInput, match="non-integer number '420.0'"):
        Manifest.decode(json.dumps(GOOD_MANIFEST).replace("420", "420.0").encode(), source="x")


@fuzz
@given(st.text(max_size=300))
def test_cas_toml(text):
    with tempfile.TemporaryDirectory() as d:
        Path(d, "cas.toml").write_text(text)
        parses_or_invalid(lambda _: Project.load(Path(d)), None)


@fuzz
@given(st.binary(max_size=200) | st.builds(lambda v: json.dumps(v).encode(), json_values))
def test_progress_record(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "x.progress")
        p.write_bytes(data)
        done = read_record(p, D, 100)
        assert done is None or all(0 <= a <= b <= 100 for a, b in done)


# The rest of what someone else writes: chunk maps from a remote, the user's own config and
# CAS_* values, sizes on the command line, cas.toml's remotes, and the format checks of files a
# publisher chose (which `cas add` and every `cas verify` run on).

@fuzz
def _packb(v) -> bytes:
    import msgpack

    try:
        return msgpack.packb(v)
    except OverflowError:  # an integer msgpack cannot hold: not a document anyone can send
        return b"\xc0"


@given(st.binary(max_size=300) | st.builds(_packb, json_values))
def test_chunk_map(data):
    from casstore.model.chunkmap import ChunkMap

    parses_or_invalid(lambda b: ChunkMap.decode(b, blob=D, size=1 << 20, source="fuzz"), data)


@fuzz
@given(st.one_of(st.text(max_size=40), st.integers(-(2**80), 2**80), st.floats(allow_nan=True), st.booleans(),
                 st.lists(st.integers(), max_size=2)))
def test_typed_values(value):
    from casstore.model import values
    from casstore.model.sizes import parse_size

    for parse in (values.seconds, values.days, values.count, values.size, values.flag, values.positive_size):
        parses_or_invalid(parse, value)
    if isinstance(value, str):
        parses_or_invalid(parse_size, value)


@fuzz
@given(st.text(max_size=300) | st.builds(lambda v: f"[gc]\nkeep_last = {json.dumps(v)}\n", json_values)
       | st.builds(lambda v: f"[remotes.x]\nurl = {json.dumps(v)}\n", json_values))
def test_user_config(text):
    from casstore.config import store_path, user_setting
    from casstore.gc.policy import Policy
    from casstore.remotes.config import configured

    with tempfile.TemporaryDirectory() as d:
        Path(d, "config.toml").write_text(text)
        old = os.environ.get("CAS_CONFIG")
        os.environ["CAS_CONFIG"] = str(Path(d, "config.toml"))
        try:
            parses_or_invalid(lambda _: Policy.from_config(), None)
            parses_or_invalid(lambda _: user_setting("gc.max_size", None), None)
            parses_or_invalid(lambda _: store_path(), None)
            parses_or_invalid(lambda _: configured(Path(d)), None)
        finally:
            os.environ["CAS_CONFIG"] = old or ""


@fuzz
@given(st.builds(lambda v: f"remotes = {json.dumps(v)}\n", json_values)
       | st.builds(lambda v: f"[remotes.team]\nurl = {json.dumps(v)}\ninsecure = {json.dumps(v)}\n", json_values)
       | st.builds(lambda n: "a = " + "[" * n + "]" * n + "\n", st.integers(0, 5000)))
def test_cas_toml_remotes(text):
    from casstore.remotes.config import configured

    with tempfile.TemporaryDirectory() as d:
        Path(d, "cas.toml").write_text(text)
        parses_or_invalid(lambda _: configured(Path(d)), None)
        parses_or_invalid(lambda _: Project.load(Path(d)), None)


header_values = st.recursive(
    scalars | st.floats(allow_nan=True),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets",
                                                                                   "__metadata__", "t"]), c, max_size=4)),
    max_leaves=20)


@fuzz
@given(st.one_of(header_values, st.dictionaries(st.text(max_size=5), header_values, max_size=4)),
       st.integers(0, 64), st.integers(0, 3))
def test_format_checks_never_raise(header, extra, nesting):
    import struct

    from casstore.model.formats import check_file

    raw = ("[" * (nesting * 3000) + json.dumps(header) + "]" * (nesting * 3000)).encode()
    with tempfile.TemporaryDirectory() as d:
        st_path, js_path = Path(d, "x.safetensors"), Path(d, "x.json")
        st_path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(extra))
        js_path.write_bytes(raw)
        for p in (st_path, js_path):
            found = check_file(p)
            assert isinstance(found, list) and all(isinstance(x, str) and len(x) < 1000 for x in found)
            assert len(found) <= 21


def test_a_remotes_extreme_numbers_are_refused_by_the_index_parser():
    doc = json.loads(json.dumps(GOOD_INDEX))
    for field, value in (("created", 2**64), ("size", 2**63)):
        bad = json.loads(json.dumps(doc))
        bad["versions"]["1.0.0"][field] = value
        with pytest.raises(InvalidInput, match="out of range"):
            Index.decode(json.dumps(bad).encode(), source="fuzz", model="m")
    m = json.loads(json.dumps(GOOD_MANIFEST))
    m["created"] = 2**63
    with pytest.raises(InvalidInput):
        Manifest.decode(json.dumps(m).encode(), source="fuzz")
