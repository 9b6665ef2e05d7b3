"""The one place a digest string is parsed and validated, and where bytes are hashed.

Nothing else in casstore builds a path from a digest string: it parses a ``Digest`` first.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from typing import NamedTuple

import blake3

from casstore.errors import InvalidDigest

ALGORITHM = "blake3"
_HEX = re.compile(r"[0-9a-f]{64}")

# Below this size threading costs more than it saves (measured when it was written; bench/bench_add.py times hashing as a whole).
_THREADED_MIN = 4 << 20
_READ_CHUNK = 8 << 20
_MMAP_WINDOW = 16 << 20  # a multiple of the page size, as mmap offsets must be


class _Hex(NamedTuple):
    hex: str


class Digest(_Hex):
    """A BLAKE3 digest. A tuple underneath so that hashing, comparing and sorting 100k of them
    (GC, `cas du`) runs in C rather than in a dataclass's Python methods."""

    __slots__ = ()

    def __new__(cls, hex: str) -> Digest:
        if not isinstance(hex, str) or _HEX.fullmatch(hex) is None:
            raise InvalidDigest(f"invalid digest hex {hex!r}: expected 64 lowercase hex digits")
        return tuple.__new__(cls, (hex,))

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``blake3:<64 lowercase hex>``; anything else is an ``InvalidDigest`` naming it."""
        if not isinstance(text, str):
            raise InvalidDigest(f"invalid digest {text!r}: not a string")
        algo, sep, hexpart = text.partition(":")
        if not sep or algo != ALGORITHM or _HEX.fullmatch(hexpart) is None:
            raise InvalidDigest(
                f"invalid digest {text!r}: expected 'blake3:' followed by 64 lowercase hex digits"
            )
        return tuple.__new__(cls, (hexpart,))  # checked above

    @classmethod
    def unchecked(cls, hexes: Iterable[str]) -> Iterator[Digest]:
        """Digests from hex already known to be valid (``bytes.hex()`` of 32 bytes, or a listing
        checked in bulk), made in a C-level loop: 100k of them are read at once by `cas du`."""
        return map(tuple.__new__, repeat(cls), zip(hexes))

    @classmethod
    def of_bytes(cls, data: bytes | bytearray) -> Digest:
        return cls(blake3.blake3(data).hexdigest())

    @classmethod
    def of_pieces(cls, pieces) -> Digest:
        """The digest of the concatenation of ``pieces`` (bytes), never held together."""
        h = blake3.blake3()
        for piece in pieces:
            h.update(piece)
        return cls(h.hexdigest())

    def __str__(self) -> str:
        return f"{ALGORITHM}:{self.hex}"

    @property
    def short(self) -> str:
        return self.hex[:12]


def hash_file(path: str | os.PathLike, *, threads: bool = True, mapped: bool = True) -> tuple[Digest, int]:
    """Hash a whole file; returns (digest, size).

    Large files are memory-mapped a window at a time and each window is hashed on all cores
    (blake3's tree mode): as fast as mapping the whole file (bench/bench_add.py), but the pages
    a process has mapped stay bounded by the window, so hashing a 10 GB shard does not show up
    as 10 GB of resident memory. ``mapped=False`` reads it in 8 MiB pieces instead (for
    callers that hash many files at once and must keep even the windows out of memory).
    """
    with open(path, "rb") as f:
        return hash_fd(f.fileno(), threads=threads, mapped=mapped)


def hash_fd(fd: int, *, threads: bool = True, mapped: bool = True) -> tuple[Digest, int]:
    """``hash_file`` of an open file, from offset 0 (for a file opened with checks on how)."""
    size = os.fstat(fd).st_size
    if size < _THREADED_MIN or not mapped:
        h = blake3.blake3(max_threads=blake3.blake3.AUTO if threads and size >= _THREADED_MIN else 1)
        n = hash_range(h, fd, 0)
        return Digest(h.hexdigest()), n
    h = blake3.blake3(max_threads=blake3.blake3.AUTO if threads else 1)
    for offset in range(0, size, _MMAP_WINDOW):
        with mmap.mmap(fd, min(_MMAP_WINDOW, size - offset), offset=offset, access=mmap.ACCESS_READ) as mm:
            h.update(mm)
    return Digest(h.hexdigest()), size


def hash_range(h, fd: int, start: int, end: int | None = None) -> int:
    """Feed the hasher ``h`` the bytes of ``fd`` from ``start`` to ``end`` (None: to its end), in
    8 MiB reads; returns how many there were (fewer if the file ends first)."""
    pos = start
    while end is None or pos < end:
        chunk = os.pread(fd, _READ_CHUNK if end is None else min(_READ_CHUNK, end - pos), pos)
        if not chunk:
            break
        h.update(chunk)
        pos += len(chunk)
    return pos - start


def hash_file_sha256(path: str | os.PathLike) -> tuple[Digest, int, str]:
    """``hash_file`` that also gives the SHA-256 (hex) from the same read: the digest Hugging
    Face, Git LFS, Ollama and OCI name files by. SHA-256 is the slower of the two, and cannot be
    split within a file (docs/benchmarks.md, `cas import`), so it runs on its own thread beside BLAKE3."""
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        sha = hashlib.sha256()
        h = blake3.blake3(max_threads=blake3.blake3.AUTO if size >= _THREADED_MIN else 1)
        if size < _THREADED_MIN:
            data = f.read()
            h.update(data)
            sha.update(data)
            return Digest(h.hexdigest()), len(data), sha.hexdigest()
        with ThreadPoolExecutor(1, thread_name_prefix="sha256") as side:
            for offset in range(0, size, _MMAP_WINDOW):
                with mmap.mmap(fd, min(_MMAP_WINDOW, size - offset), offset=offset, access=mmap.ACCESS_READ) as mm:
                    both = side.submit(sha.update, mm)  # hashlib and blake3 both release the GIL
                    h.update(mm)
                    both.result()
        return Digest(h.hexdigest()), size, sha.hexdigest()


_HEX_DIGITS = b"0123456789abcdef"


def all_hex(hexes: list[str]) -> bool:
    """Whether every one of ``hexes`` is 64 lowercase hex digits, checked in bulk: a set of their
    lengths and one ``translate`` over them joined (a tenth of a regex over 1M names)."""
    if set(map(len, hexes)) - {64}:
        return False
    try:
        return not "".join(hexes).encode("ascii").translate(None, _HEX_DIGITS)
    except UnicodeEncodeError:
        return False


def is_sha256_hex(text: object) -> bool:
    return isinstance(text, str) and _HEX.fullmatch(text) is not None


class StreamHasher:
    """Incremental hashing for data arriving in pieces (copies, downloads)."""

    __slots__ = ("_h", "size")

    def __init__(self) -> None:
        self._h = blake3.blake3(max_threads=blake3.blake3.AUTO)
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return Digest(self._h.hexdigest())
