import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casstore.errors import InvalidPath
from casstore.model.paths import check_tree, validate_path

HOSTILE = [
    "../x", "/etc/passwd", "a/../../b", "C:\\x", "C:x", "\\\\host\\x", "a\\..\\b", "a\x00b", "a\nb", "a\tb",
    "\x7f", "\u0085x", "", ".", "..", "a//b", "a/./b", "a/", "/", "./a", "a/..", "x" * 256, "a/" * 2100 + "b",
    "cafe\u0301.txt",  # NFD: not normalised
    "a:b", "con?", " leading", "trailing ", "dot.",
]


@pytest.mark.parametrize("p", HOSTILE)
def test_hostile_paths_rejected(p):
    with pytest.raises(InvalidPath) as e:
        validate_path(p)
    assert "invalid manifest path" in str(e.value)


@pytest.mark.parametrize("p", ["a", "model.safetensors", "tokenizer/vocab.json", "x/y/z/w.bin", "café.txt", ".gitattributes", "a..b"])
def test_ordinary_paths_accepted(p):
    assert validate_path(p) == p


@pytest.mark.parametrize(
    "paths",
    [
        ["a", "a"],
        ["Model.bin", "model.bin"],
        ["caf\u00e9", "CAF\u00c9"],
        ["a", "a/b"],  # a file that is also a directory
        ["x/A/f", "x/a"],
    ],
)
def test_tree_clashes_rejected(paths):
    with pytest.raises(InvalidPath):
        check_tree(paths)


def test_tree_ok():
    check_tree(["a/b", "a/c", "b", "ab/c"])


@given(st.text(max_size=60))
def test_any_text_is_valid_or_rejected_cleanly(p):
    try:
        validate_path(p)
    except InvalidPath:
        return
    # Whatever passes cannot leave the destination or alias another name.
    parts = p.split("/")
    assert not p.startswith("/") and ".." not in parts and "." not in parts and "" not in parts
    assert "\\" not in p and ":" not in p and all(ord(c) >= 0x20 for c in p)
    assert unicodedata.normalize("NFC", p) == p


@given(st.lists(st.sampled_from(["..", ".", "", "a", "b", "C:", "\\", "x\x00", "/"]), min_size=1, max_size=6))
def test_generated_traversals_never_pass(parts):
    p = "/".join(parts)
    if all(x in ("a", "b") for x in parts):
        assert validate_path(p) == p
    else:
        with pytest.raises(InvalidPath):
            validate_path(p)
