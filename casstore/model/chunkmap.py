"""Chunk maps: a large blob cut into chunks, each with its length and BLAKE3 hash (docs/format.md).

A map is named by the blob it describes (``chunks/<hh>/<hex>``, model/keys.py) and is a pure
function of that blob's bytes, so it is immutable like every other object. Offsets are the running
sum of lengths: a valid map covers its blob exactly. A map is only ever a hint for reuse; the
blob's whole-file digest still decides what is published (invariant 4), so a lying map can cost
bandwidth but never install wrong bytes.

Encoding: msgpack ``{"casstore_chunks": 1, "blob": "blake3:<hex>", "size": N, "scheme": S,
"lengths": [..], "hashes": <32 bytes per chunk>}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import msgpack

from casstore.errors import InvalidInput
from casstore.model.digest import Digest

FORMAT = 1
HASH_BYTES = 32
SCHEMES = ("safetensors", "gguf", "zip", "cdc")
MAX_CHUNKS = 1 << 21  # 2 M chunks: ~70 MB of map; a real 1 TB blob at 1 MiB chunks needs half of it
MAX_MAP_BYTES = MAX_CHUNKS * (HASH_BYTES + 9) + 4096

def max_chunks(size: int) -> int:
    """More chunks than this for ``size`` bytes is absurd (tiny tensors exist, 16-byte ones do not abound)."""
    return min(MAX_CHUNKS, size // 16 + 1024)


class InvalidChunkMap(InvalidInput):
    pass


@dataclass(frozen=True)
class ChunkMap:
    blob: Digest
    size: int
    scheme: str
    lengths: tuple[int, ...]
    hashes: bytes  # HASH_BYTES per chunk, in order

    def __len__(self) -> int:
        return len(self.lengths)

    def offsets(self) -> list[int]:
        return [0, *accumulate(self.lengths)][:-1]

    def chunk_hash(self, i: int) -> bytes:
        return self.hashes[i * HASH_BYTES : (i + 1) * HASH_BYTES]

    def chunks(self):
        """(offset, length, hash) of every chunk, in order."""
        for i, (off, n) in enumerate(zip(self.offsets(), self.lengths)):
            yield off, n, self.chunk_hash(i)

    def encode(self) -> bytes:
        return msgpack.packb({"casstore_chunks": FORMAT, "blob": str(self.blob), "size": self.size,
                              "scheme": self.scheme, "lengths": list(self.lengths), "hashes": self.hashes})

    @classmethod
    def decode(cls, data: bytes, *, blob: Digest, size: int | None, source: str) -> ChunkMap:
        """Parse and check a map for ``blob`` (of ``size`` bytes when known); anything that is not a
        well-formed map of exactly that blob is an ``InvalidChunkMap`` naming ``source``."""
        def bad(why: str) -> InvalidChunkMap:
            return InvalidChunkMap(f"{source}: not a valid chunk map of {blob}: {why}")

        if len(data) > MAX_MAP_BYTES:
            raise bad(f"larger than {MAX_MAP_BYTES} bytes")
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_array_len=MAX_CHUNKS, max_map_len=16,
                                  max_str_len=256, max_bin_len=MAX_CHUNKS * HASH_BYTES, max_ext_len=0)
        except Exception as e:  # msgpack raises several unrelated types for malformed input
            raise bad(f"{type(e).__name__}: {e}") from None
        if not isinstance(obj, dict) or obj.get("casstore_chunks") != FORMAT:
            raise bad(f"not a format-{FORMAT} map")
        if obj.get("blob") != str(blob):
            raise bad(f"it describes {obj.get('blob')!r}")
        n, scheme, lengths, hashes = obj.get("size"), obj.get("scheme"), obj.get("lengths"), obj.get("hashes")
        if type(n) is not int or n < 0 or (size is not None and n != size):
            raise bad(f"size {n!r}, expected {size}")
        if scheme not in SCHEMES:
            raise bad(f"unknown scheme {scheme!r}")
        if not isinstance(lengths, list) or not all(type(x) is int and x > 0 for x in lengths):
            raise bad("lengths must be positive integers")
        if len(lengths) > max_chunks(n):
            raise bad(f"{len(lengths)} chunks for {n} bytes")
        if sum(lengths) != n:
            raise bad(f"chunks cover {sum(lengths)} bytes, not {n}")
        if not isinstance(hashes, bytes) or len(hashes) != HASH_BYTES * len(lengths):
            raise bad(f"expected {HASH_BYTES} hash bytes per chunk")
        return cls(blob, n, scheme, tuple(lengths), hashes)
