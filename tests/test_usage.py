import re

from hypothesis import given, settings
from hypothesis import strategies as st

from casstore.model.digest import Digest
from casstore.model.manifest import Entry, Manifest
from casstore.ops.usage import usage
from casstore.store.summaries import summarize


def D(i):
    return Digest(f"{i:064x}")


def M(name, version, *blobs):
    return Manifest(name, version, tuple(Entry(f"f{i}", size, D(b)) for i, (b, size) in enumerate(blobs)))


def test_unique_and_shared_bytes():
    t1 = M("t2v", "1", (1, 100), (2, 10), (9, 1000))  # 9: the VAE, shared with i2v
    t2 = M("t2v", "2", (1, 100), (3, 20), (9, 1000))
    i1 = M("i2v", "1", (4, 50), (9, 1000), (9, 1000))  # the same blob twice counts once
    s = summarize({D(11): t1, D(12): t2, D(13): i1})
    versions = {("t2v", "1"): (D(11), s[D(11)]), ("t2v", "2"): (D(12), s[D(12)]), ("i2v", "1"): (D(13), s[D(13)])}
    out = {m.model: m for m in usage(versions, {"t2v": "2"})}
    v = {x.version: x for x in out["t2v"].versions}
    assert (v["1"].size, v["1"].unique, v["1"].shared) == (1110, 10, 1100)
    assert (v["2"].size, v["2"].unique, v["2"].current) == (1120, 20, True)
    assert (out["t2v"].size, out["t2v"].unique) == (1130, 130)
    i = out["i2v"].versions[0]
    assert (i.size, i.unique, i.files) == (1050, 50, 3)
    assert (out["i2v"].size, out["i2v"].unique) == (1050, 50)


def test_empty():
    assert usage({}, {}) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.lists(st.integers(1, 12), max_size=6)),
                min_size=1, max_size=8))
def test_figures_are_those_counted_blob_by_blob(spec):
    """Against a plain count over every version: a blob's size is its number; unique bytes are
    those no other version (model) holds."""
    manifests, versions = {}, {}
    for i, (model, blobs) in enumerate(spec):
        m = M(model, f"1.{i}.0", *((b, b) for b in blobs))
        manifests[D(100 + i)] = m
    s = summarize(manifests)
    for md, m in manifests.items():
        versions[m.name, m.version] = (md, s[md])
    holders = {}
    for (model, version), _ in versions.items():
        for e in manifests[versions[model, version][0]].entries:
            holders.setdefault(int(e.digest.hex, 16), set()).add((model, version))
    out = {m.model: m for m in usage(versions, {})}
    for model, mu in out.items():
        mine = {b for b, h in holders.items() if any(m == model for m, _ in h)}
        assert mu.size == sum(mine)
        assert mu.unique == sum(b for b in mine if all(m == model for m, _ in holders[b]))
        for vu in mu.versions:
            blobs = {b for b, h in holders.items() if (model, vu.version) in h}
            assert vu.size == sum(blobs)
            assert vu.unique == sum(b for b in blobs if holders[b] == {(model, vu.version)})
            assert vu.shared == vu.size - vu.unique


def test_one_models_figures_are_the_same_filtered_or_not(tmp_path):
    """`cas list t2v` once counted the VAE it shares with i2v as t2v's own."""
    from conftest import CasRunner, make_model

    cas = CasRunner(tmp_path / "s", tmp_path)
    vae = b"v" * 50_000
    cas("add", make_model(tmp_path / "t", {"vae.pth": vae, "t.bin": 10_000}), "--name", "t2v", "--version", "1")
    cas("add", make_model(tmp_path / "i", {"vae.pth": vae, "i.bin": 20_000}), "--name", "i2v", "--version", "1")
    whole = {m["model"]: m for m in cas.json("list")["models"]}
    [alone] = cas.json("list", "t2v")["models"]
    assert ageless(alone) == ageless(whole["t2v"]) and alone["unique"] == 10_000


def ageless(model: dict) -> dict:
    """A model's figures without the "used Ns ago" of its roots: two runs a second apart differ there."""
    return {**model, "versions": [{**v, "roots": [re.sub(r"used \d+\w ago", "used ... ago", r) for r in v["roots"]]}
                                  for v in model["versions"]]}
