"""Where a large file is cut into chunks, and its chunk map (model/chunkmap.py).

Cuts follow the file's own structure where it has one, so an unchanged tensor is an unchanged
chunk however far it moved:
- safetensors: the header is one chunk, each tensor one chunk;
- GGUF: the header and tensor table one chunk, each tensor one chunk;
- zip (PyTorch checkpoints): each member, with its local header, one chunk; then the directory;
- anything else: content-defined cuts (FastCDC, ~96 KiB average: an insertion costs about itself,
  1.15x of it over 16 random 1 MiB insertions, against 2.9x at the ~1 MiB average used before).
Any chunk over ``MAX_CHUNK`` is split every ``MAX_CHUNK`` bytes from its own start. A file that
claims a format but does not parse as one is chunked as "anything else": cutting is never an error.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

import blake3

from casstore.model.chunkmap import ChunkMap
from casstore.model.digest import Digest

MiB = 1 << 20
MAX_CHUNK = 16 * MiB
MAP_MIN_SIZE = 64 * MiB  # smaller blobs get no map by default: fetched whole, they cost about what a lookup saves
CDC_MIN, CDC_AVG, CDC_MAX = 32 << 10, 64 << 10, 512 << 10  # pyfastcdc's average is CDC_AVG + CDC_MIN
MAX_HEADER = 100 * MiB  # safetensors' own limit on its JSON header
_READ = 8 * MiB


class _NotThisFormat(Exception):
    pass


def _read_exact(fd: int, n: int, pos: int) -> bytes:
    data = os.pread(fd, n, pos)
    if len(data) != n:
        raise _NotThisFormat(f"short read at {pos}")
    return data


def safetensors_cuts(fd: int, size: int) -> list[int]:
    if size < 10:
        raise _NotThisFormat("too small")
    (n,) = struct.unpack("<Q", _read_exact(fd, 8, 0))
    if not 2 <= n <= min(MAX_HEADER, size - 8):
        raise _NotThisFormat("header length")
    raw = _read_exact(fd, n, 8)
    if raw[:1] != b"{":
        raise _NotThisFormat("header is not a JSON object")
    try:
        header = json.loads(raw)
    except ValueError as e:
        raise _NotThisFormat(str(e)) from None
    base, cuts = 8 + n, [0, 8 + n]
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offs = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(x) is int for x in offs)
                and 0 <= offs[0] <= offs[1] <= size - base):
            raise _NotThisFormat(f"tensor {name!r}")
        cuts += [base + offs[0], base + offs[1]]
    return cuts


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_MAX_COUNT = 1 << 24


class _Reader:
    """Sequential little-endian reads over a file descriptor, buffered."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size, self.pos, self.buf, self.buf_at = fd, size, 0, b"", 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise _NotThisFormat("truncated")
        rel = self.pos - self.buf_at
        if rel + n > len(self.buf):
            self.buf, self.buf_at, rel = os.pread(self.fd, max(n, 1 * MiB), self.pos), self.pos, 0
        self.pos += n
        return self.buf[rel : rel + n]

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> bytes:
        n = self.unpack("Q")
        if n > MiB:
            raise _NotThisFormat("string too long")
        return self.take(n)

    def value(self, kind: int, depth: int = 0):
        if kind in _GGUF_SCALARS:
            return self.unpack(_GGUF_SCALARS[kind])
        if kind == 8:
            return self.string()
        if kind == 9 and depth == 0:
            item, count = self.unpack("I"), self.unpack("Q")
            if count > GGUF_MAX_COUNT:
                raise _NotThisFormat("array too long")
            if item in _GGUF_SCALARS:  # skip without decoding: a vocabulary is ~150k entries
                self.take(count * struct.calcsize(_GGUF_SCALARS[item]))
                return None
            for _ in range(count):
                self.value(item, depth + 1)
            return None
        raise _NotThisFormat(f"value type {kind}")


def gguf_cuts(fd: int, size: int) -> list[int]:
    r = _Reader(fd, size)
    if r.take(4) != b"GGUF" or r.unpack("I") not in (2, 3):
        raise _NotThisFormat("magic")
    n_tensors, n_kv = r.unpack("Q"), r.unpack("Q")
    if n_tensors > GGUF_MAX_COUNT or n_kv > GGUF_MAX_COUNT:
        raise _NotThisFormat("counts")
    alignment = 32
    for _ in range(n_kv):
        key, kind = r.string(), r.unpack("I")
        value = r.value(kind)
        if key == b"general.alignment" and type(value) is int and value > 0:
            alignment = value
    offsets = []
    for _ in range(n_tensors):
        r.string()
        dims = r.unpack("I")
        if dims > 8:
            raise _NotThisFormat("tensor rank")
        r.take(8 * dims + 4)
        offsets.append(r.unpack("Q"))
    data = -(-r.pos // alignment) * alignment
    if any(data + o > size for o in offsets):
        raise _NotThisFormat("tensor offset beyond the end")
    return [0, data, *(data + o for o in offsets)]


def zip_cuts(path: Path, size: int) -> list[int]:
    try:
        with zipfile.ZipFile(path) as z:
            cuts = [0, *(i.header_offset for i in z.infolist())]
            start_dir = getattr(z, "start_dir", None)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise _NotThisFormat(str(e)) from None
    if isinstance(start_dir, int):
        cuts.append(start_dir)
    if any(not 0 <= c <= size for c in cuts):
        raise _NotThisFormat("offsets")
    return cuts


def _split(cuts: list[int], size: int) -> list[int]:
    """Chunk lengths from cut points: sorted, deduplicated, every chunk at most MAX_CHUNK."""
    points = sorted({c for c in cuts if 0 < c < size} | {0, size})
    out = []
    for a, b in zip(points, points[1:]):
        out += [min(MAX_CHUNK, b - s) for s in range(a, b, MAX_CHUNK)]
    return out


def structured_lengths(path: Path, fd: int, size: int) -> tuple[str, list[int]] | None:
    """The format-aware chunk lengths of a file, or None if it has no structure we know."""
    head = os.pread(fd, 9, 0)
    for scheme, fits, cut in (("gguf", head[:4] == b"GGUF", lambda: gguf_cuts(fd, size)),
                              ("zip", head[:4] == b"PK\x03\x04", lambda: zip_cuts(path, size)),
                              ("safetensors", head[8:9] == b"{", lambda: safetensors_cuts(fd, size))):
        if fits:
            try:
                return scheme, _split(cut(), size)
            except (_NotThisFormat, struct.error, UnicodeDecodeError):
                return None
    return None


def _hasher(n: int):
    return blake3.blake3(max_threads=blake3.blake3.AUTO if n >= 4 * MiB else 1)


def compute(path: str | os.PathLike, digest: Digest) -> ChunkMap:
    """The chunk map of a file whose digest is known (the caller verified it; a map is a hint)."""
    path = Path(path)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        found = structured_lengths(path, fd, size)
        hashes = bytearray()
        if found is not None:
            scheme, lengths = found
            pos = 0
            for n in lengths:
                h, end = _hasher(n), pos + n
                while pos < end:
                    piece = os.pread(fd, min(_READ, end - pos), pos)
                    if not piece:
                        raise OSError(f"{path} shrank while its chunks were hashed")
                    h.update(piece)
                    pos += len(piece)
                hashes += h.digest()
        else:
            from pyfastcdc import FastCDC

            scheme, lengths = "cdc", []
            for c in FastCDC(avg_size=CDC_AVG, min_size=CDC_MIN, max_size=CDC_MAX).cut_stream(f):
                lengths.append(c.length)
                hashes += _hasher(c.length).update(c.data).digest()
    return ChunkMap(digest, size, scheme, tuple(lengths), bytes(hashes))
