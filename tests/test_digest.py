import os

import blake3
import pytest

from casstore.errors import InvalidDigest
from casstore.model.digest import Digest, StreamHasher, all_hex, hash_file

GOOD = "blake3:" + "ab" * 32


def test_parse_round_trip():
    d = Digest.parse(GOOD)
    assert str(d) == GOOD and d.hex == "ab" * 32 and d.short == "ab" * 6


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ab" * 32,  # no algorithm
        "blake3:" + "ab" * 31,  # short
        "blake3:" + "ab" * 33,  # long
        "blake3:" + "AB" * 32,  # uppercase
        "BLAKE3:" + "ab" * 32,
        "sha256:" + "ab" * 32,
        "blake3:../" + "ab" * 31,
        "blake3:" + "ab" * 31 + "a\x00",
        "blake3:" + "ab" * 32 + "\n",
        "blake3: " + "ab" * 32,
        "blake3:" + "gg" * 32,
    ],
)
def test_parse_rejects_malformed(bad):
    with pytest.raises(InvalidDigest) as e:
        Digest.parse(bad)
    assert repr(bad)[:20] in str(e.value)


def test_hex_constructor_validates():
    with pytest.raises(InvalidDigest):
        Digest("../../etc/passwd")
    with pytest.raises(ValueError):  # InvalidDigest is also a ValueError
        Digest("A" * 64)


def test_bulk_hex_check_agrees_with_the_parse():
    """all_hex (listings of 1M names, manifests' digests) accepts exactly what Digest() does, one
    bad name among good ones included (a check of the join alone would take "ab"*31+"a\x00")."""
    good = ["ab" * 32, "0123456789abcdef" * 4]
    assert all_hex(good) and all_hex([])
    for bad in ("ab" * 31, "ab" * 33, "AB" * 32, "gg" * 32, "ab" * 31 + "a\x00", "ab" * 31 + "aé",
                "ab" * 32 + "\n", " " + "ab" * 31 + "a", "ab" * 16 + "\n" + "ab" * 15 + "a"):
        assert not all_hex([*good, bad]), bad
        with pytest.raises(InvalidDigest):
            Digest(bad)
    assert all_hex(["ab" * 31, "ab" * 33]) is False  # lengths that sum right


@pytest.mark.parametrize("size", [0, 1, 1024, 5 << 20, (64 << 20) + 4097])  # below, above the threshold, two windows
def test_hash_file_matches_reference(tmp_path, size):
    data = os.urandom(size)
    p = tmp_path / "f"
    p.write_bytes(data)
    d, n = hash_file(p)
    assert n == size
    assert d.hex == blake3.blake3(data).hexdigest()
    assert hash_file(p, threads=False) == (d, n)


def test_stream_hasher_equals_whole():
    data = os.urandom(3 << 20)
    h = StreamHasher()
    for i in range(0, len(data), 100_000):
        h.update(data[i : i + 100_000])
    assert h.digest() == Digest.of_bytes(data) and h.size == len(data)
