"""Weight files of the formats chunk maps know (safetensors, GGUF, PyTorch zip) written from a list
of named tensors, and release pairs shaped like real updates, for the tests and bench/bench_delta.py.
Tensor bytes are random (seeded), so nothing deduplicates or compresses by accident."""

from __future__ import annotations

import json
import random
import struct
import zipfile
from pathlib import Path

MiB = 1 << 20

Tensors = list[tuple[str, bytes]]  # (name, raw bytes), in file order for GGUF and zip


def random_bytes(n: int, seed: int | str) -> bytes:
    return random.Random(seed).randbytes(n)


def safetensors(path: Path, tensors: Tensors, metadata: dict | None = None) -> Path:
    """A safetensors file: tensors stored in name order, as the reference writer does (so a new
    tensor moves every later one)."""
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    off = 0
    ordered = sorted(tensors)
    for name, data in ordered:
        header[name] = {"dtype": "U8", "shape": [len(data)], "data_offsets": [off, off + len(data)]}
        off += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _, data in ordered:
            f.write(data)
    return path


def _gguf_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(path: Path, tensors: Tensors, alignment: int = 32) -> Path:
    """A GGUF v3 file: a few metadata values (one an array of strings), the tensor table, then the
    tensors, each at an ``alignment`` boundary."""
    kv = [("general.architecture", 8, _gguf_str("llama")), ("general.alignment", 4, struct.pack("<I", alignment)),
          ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + b"".join(_gguf_str(t) for t in ("a", "b", "c")))]
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)))
    for key, kind, value in kv:
        out += _gguf_str(key) + struct.pack("<I", kind) + value
    off, offsets = 0, []
    for _, data in tensors:
        offsets.append(off)
        off += -(-len(data) // alignment) * alignment
    for (name, data), o in zip(tensors, offsets):
        out += _gguf_str(name) + struct.pack("<I", 1) + struct.pack("<Q", len(data)) + struct.pack("<IQ", 0, o)
    out += b"\0" * (-len(out) % alignment)
    for _, data in tensors:
        out += data + b"\0" * (-len(data) % alignment)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path


def torch_zip(path: Path, tensors: Tensors) -> Path:
    """A PyTorch-style zip checkpoint: a pickle member, then one stored member per tensor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", json.dumps([n for n, _ in tensors]).encode())
        for i, (_, data) in enumerate(tensors):
            z.writestr(f"archive/data/{i}", data)
    return path


def shard_tensors(prefix: str, count: int, size: int, seed: str) -> Tensors:
    return [(f"{prefix}.{i:03d}.weight", random_bytes(size, f"{seed}/{i}")) for i in range(count)]


def release_pair(root: Path, *, tensors: int = 48, tensor_size: int = 2 * MiB, inserted_size: int = 4 * MiB,
                 shards: int = 2) -> tuple[Path, Path, int]:
    """Two releases of a model, like the fixture of the delta study: in 1.1.0 three tensors of the
    first shard are rewritten, one tensor is inserted as the 11th in name order (so every later
    offset moves) and config.json changes. Returns both directories and the bytes that changed
    (rewritten and inserted tensors, and the new config)."""
    old, new = root / "1.0.0", root / "1.1.0"
    changed = 0
    for s in range(shards):
        ts = shard_tensors(f"blocks.s{s}", tensors, tensor_size, f"shard{s}")
        safetensors(old / f"model-{s + 1:05d}-of-{shards:05d}.safetensors", ts)
        if s == 0:
            for i in sorted({tensors // 16, tensors * 3 // 8, tensors * 5 // 8}):
                ts[i] = (ts[i][0], random_bytes(tensor_size, f"rewritten/{i}"))
                changed += tensor_size
            after = min(9, tensors - 1)  # the new tensor sorts right after it: 11th of 49
            ts.append((f"{ts[after][0]}_extra", random_bytes(inserted_size, "inserted")))
            changed += inserted_size
        safetensors(new / f"model-{s + 1:05d}-of-{shards:05d}.safetensors", ts)
    (old / "config.json").write_text(json.dumps({"dim": 5120, "release": "1.0.0"}))
    config = json.dumps({"dim": 5120, "release": "1.1.0", "rope": "3d"})
    (new / "config.json").write_text(config)
    return old, new, changed + len(config)
