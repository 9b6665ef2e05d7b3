"""Checks of the file formats we know, with bounded reads (docs/architecture.md, invariant 11).

Model files are bytes: nothing here unpickles or loads tensors. A check returns a list of
problems (empty when the file is well formed); add warns about them, verify reports them.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors library's own limit
MAX_JSON_BYTES = 64 << 20
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


MAX_FINDINGS = 20  # a file with a million bad tensors gets 20 lines and a count, not a million


CHECKED = (".json", ".safetensors")  # the names check_file knows the format of


def check_file(path: Path, name: str | None = None) -> list[str]:
    """What is wrong with a file we know the format of; never raises (a file that cannot be
    read is one finding like any other)."""
    name = name or path.name
    try:
        if name.endswith(".safetensors"):
            found = check_safetensors(path)
        elif name.endswith(".json"):
            found = check_json(path)
        else:
            return []
    except OSError as e:
        return [f"cannot be read: {e.strerror or e}"]
    except (RecursionError, MemoryError, OverflowError, ValueError, TypeError) as e:  # a check that missed a case
        return [f"could not be checked: {type(e).__name__}"]
    if len(found) > MAX_FINDINGS:
        found = found[:MAX_FINDINGS] + [f"and {len(found) - MAX_FINDINGS} more problems"]
    return found


def _loads(raw: bytes):
    """JSON from bytes; nesting deep enough to exhaust the parser is a RecursionError, caught by
    the callers (the C parser checks its depth)."""
    return json.loads(raw.decode("utf-8"))


def check_json(path: Path) -> list[str]:
    size = os.stat(path).st_size
    if size > MAX_JSON_BYTES:
        return [f"JSON file larger than {MAX_JSON_BYTES} bytes, not checked"]
    try:
        with open(path, "rb") as f:
            _loads(f.read())
    except RecursionError:
        return ["not valid JSON: nested too deeply"]
    except (UnicodeDecodeError, ValueError) as e:
        return [f"not valid JSON: {e}"]
    return []


def check_safetensors(path: Path) -> list[str]:
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return [f"safetensors file of {size} bytes is too short for a header"]
        (n,) = struct.unpack("<Q", head)
        if n > MAX_SAFETENSORS_HEADER:
            return [f"safetensors header length {n} exceeds {MAX_SAFETENSORS_HEADER}"]
        if 8 + n > size:
            return [f"safetensors header length {n} runs past the end of the {size}-byte file"]
        raw = f.read(n)
    try:
        header = _loads(raw)
    except RecursionError:
        return ["safetensors header is not valid JSON: nested too deeply"]
    except (UnicodeDecodeError, ValueError) as e:
        return [f"safetensors header is not valid JSON: {e}"]
    if not isinstance(header, dict):
        return ["safetensors header is not a JSON object"]
    data_len = size - 8 - n
    problems: list[str] = []
    spans = []
    for key, t in header.items():
        if key == "__metadata__":
            if not isinstance(t, dict) or not all(isinstance(v, str) for v in t.values()):
                problems.append("__metadata__ is not a map of strings")
            continue
        if not isinstance(t, dict):
            problems.append(f"tensor {_short(key)}: not an object")
            continue
        dtype, shape, offsets = t.get("dtype"), t.get("shape"), t.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _DTYPE_BITS:
            problems.append(f"tensor {_short(key)}: unknown dtype {_short(dtype)}")
            continue
        if not isinstance(shape, list) or len(shape) > 64 or not all(type(x) is int and 0 <= x < 1 << 63 for x in shape):
            problems.append(f"tensor {_short(key)}: bad shape {_short(shape)}")
            continue
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(x) is int for x in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_len
        ):
            problems.append(f"tensor {_short(key)}: data offsets {_short(offsets)} outside the {data_len}-byte data area")
            continue
        nbits = math.prod(shape) * _DTYPE_BITS[dtype]  # exact: Python ints do not overflow
        if nbits % 8 or nbits // 8 != offsets[1] - offsets[0]:
            need = f"{nbits // 8}" if nbits < 1 << 80 else "more than 2^77"
            problems.append(f"tensor {_short(key)}: {dtype}{_short(shape)} needs {need} bytes but offsets span "
                            f"{offsets[1] - offsets[0]}")
            continue
        spans.append((offsets[0], offsets[1], key))
    spans.sort()
    for (_a0, a1, ka), (b0, _b1, kb) in zip(spans, spans[1:]):
        if b0 < a1:
            problems.append(f"tensors {_short(ka)} and {_short(kb)} overlap")
    return problems


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."
