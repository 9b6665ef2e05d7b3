import json
import struct

from casstore.model.formats import check_file, check_safetensors

from conftest import write_safetensors


def st_file(path, header, data_len, raw_len=None):
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if raw_len is None else raw_len) + raw + b"\0" * data_len)
    return path


def test_valid(tmp_path):
    write_safetensors(tmp_path / "m.safetensors")
    assert check_safetensors(tmp_path / "m.safetensors") == []


def test_metadata_allowed(tmp_path):
    h = {"__metadata__": {"format": "pt"}, "w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}}
    assert check_safetensors(st_file(tmp_path / "a.safetensors", h, 12)) == []


def test_problems(tmp_path):
    cases = {
        "huge header": ({}, 0, 1 << 40),
        "past end": ({}, 0, 10_000),
        "dtype": ({"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, 1, None),
        "shape-offsets": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, 16, None),
        "outside": ({"w": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}}, 4, None),
        "overlap": (
            {"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}, "b": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]}},
            12,
            None,
        ),
        "negative shape": ({"w": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}, 0, None),
    }
    for name, (h, n, raw_len) in cases.items():
        p = st_file(tmp_path / f"{name}.safetensors", h, n, raw_len)
        assert check_safetensors(p), name
    (tmp_path / "short.safetensors").write_bytes(b"\1\2")
    assert check_safetensors(tmp_path / "short.safetensors")
    (tmp_path / "nj.safetensors").write_bytes(struct.pack("<Q", 3) + b"{{{")
    assert check_safetensors(tmp_path / "nj.safetensors")


def test_json_and_others(tmp_path):
    (tmp_path / "a.json").write_text('{"a": 1}')
    (tmp_path / "b.json").write_text("{")
    (tmp_path / "c.pth").write_bytes(b"\x80\x02 not unpickled")
    assert check_file(tmp_path / "a.json") == []
    assert check_file(tmp_path / "b.json")
    assert check_file(tmp_path / "c.pth") == []
