"""The remote contract: a handful of async methods every backend implements.

Keys are built only from a parsed ``Digest`` or a validated model name, so a backend never sees
a path it did not get from here. Retries, rate limits and mirrors wrap a remote (see
``download.py``, which tries mirrors in order); backends stay plain.

The layout, the same on disk, over HTTP and in a bucket:

    casstore-remote.json                  {"casstore_remote": 1}
    blobs/<hh>/<hex>                      (model/keys.py, shared with the local store)
    chunks/<hh>/<hex>                     the blob's chunk map, for delta updates (optional)
    manifests/<hh>/<hex>.json
    index/<model>.json                    the model's versions (model/index.py)
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from casstore.errors import CasError, IntegrityError, RemoteProtocolError, RemoteRefused
from casstore.model.chunkmap import ChunkMap
from casstore.model.digest import Digest
from casstore.model.keys import blob_key, chunks_key, index_key, manifest_key

FORMAT_FILE = "casstore-remote.json"
FORMAT_VERSION = 1
log = logging.getLogger("casstore")
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Key:
    kind: str  # "blob", "manifest" or "chunks" (a blob's chunk map: ``digest`` is the blob's)
    digest: Digest
    size: int | None = field(default=None, compare=False)  # when known: lets a backend check the server's word

    @property
    def path(self) -> str:
        if self.kind == "blob":
            return blob_key(self.digest)
        if self.kind == "manifest":
            return manifest_key(self.digest)
        if self.kind == "chunks":
            return chunks_key(self.digest)
        raise ValueError(f"unknown object kind {self.kind!r}")


def check_bytes(key: Key, got: Digest, size: int, where: str) -> None:
    """Refuse to publish bytes that are not the object's (docs/architecture.md, invariant 4)."""
    if got != key.digest or (key.size is not None and size != key.size):
        raise IntegrityError(f"refusing to write {where}: the bytes hash to {got} ({size} bytes), not {key.digest}")


def check_object(key: Key, data: bytes, where: str) -> None:
    """``check_bytes`` for an object given as bytes; a chunk map, named by its blob's digest
    rather than its own, must instead parse as a map of that blob."""
    if key.kind == "chunks":
        ChunkMap.decode(data, blob=key.digest, size=None, source=where)
    else:
        check_bytes(key, Digest.of_bytes(data), len(data), where)


async def read_small(remote: Remote, key: Key, max_bytes: int) -> bytes:
    """A small object whole (a manifest, a chunk map): more than ``max_bytes`` is refused as it
    arrives, never held."""
    buf = bytearray()
    async for piece in remote.read(key):
        buf += piece
        if len(buf) > max_bytes:
            url = remote.describe(key)
            raise RemoteProtocolError(f"{url} is larger than {max_bytes} bytes", url=url, digest=key.digest)
    return bytes(buf)


def is_loopback(host: str | None) -> bool:
    """Whether plain HTTP to ``host`` stays on this machine (invariant 10)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_range_answer(url: str, key: Key, start: int, want: int | None, declared: int | None,
                       content_range: str) -> None:
    """A ranged answer (206, or S3's) must be for ``start``, of the object's size, and declare the
    length asked for; else the server is misbehaving (retryable: the next answer may be right)."""
    def wrong(why: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"{url} {why}", url=url, digest=key.digest, retryable=True)

    if not content_range.startswith(f"bytes {start}-"):
        raise wrong(f"answered range {start}- with {content_range!r}")
    total = content_range.rpartition("/")[2]
    if key.size is not None and total.isdigit() and int(total) != key.size:
        raise wrong(f"says the object has {total} bytes, not {key.size}")
    if declared is not None and want is not None and declared != want:
        raise wrong(f"declared {declared} bytes for a request of {want}")


def blob(d: Digest, size: int | None = None) -> Key:
    return Key("blob", d, size)


def manifest(d: Digest) -> Key:
    return Key("manifest", d)


def chunks(d: Digest) -> Key:
    return Key("chunks", d)


def index_path(model: str) -> str:
    return index_key(model)


class Listed(NamedTuple):
    """One object of a listing. A tuple: a frozen dataclass took 3.6 s to make 1M of them."""

    key: str  # relative to the remote's root
    size: int
    modified: float  # by the remote's own clock


Skip = Callable[[str], bool]  # a listing's filter on keys (``Remote.listing``)


class SkipNames:
    """A listing's filter by an object's last name: the ``names`` to pass, counted in ``passed``.
    A backend that lists a directory at a time takes them out in one set operation (remote GC
    passes 900k of 1M blobs: a Python call per key was 0.4-1 s of its plan); any other asks per key."""

    __slots__ = ("names", "passed")

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.passed = 0

    def __call__(self, key: str) -> bool:
        if key[key.rfind("/") + 1:] in self.names:
            self.passed += 1
            return True
        return False


class Pacer(Protocol):
    """What a ``Paced`` upload books its bytes with (transfer/ratelimit.RateLimiter)."""

    async def take(self, n: int) -> None: ...

    def take_blocking(self, n: int) -> None: ...


@dataclass(frozen=True)
class Paced:
    """A file to upload at most at ``limiter``'s rate: a backend reads it through ``open()``
    (or, where it sends in parts, books each part with the limiter), so the pacing lives in one
    limiter shared by every upload of the run."""

    path: Path
    limiter: Pacer

    def open(self) -> io.BufferedReader:
        return io.BufferedReader(_PacedReader(self.path, self.limiter), buffer_size=1 << 20)


class _PacedReader(io.RawIOBase):
    def __init__(self, path: Path, limiter: Pacer) -> None:
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 (closed with this reader)
        self._limiter = limiter

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:  # an HTTP client sizes the body from it (Content-Length)
        return self._f.fileno()

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, b) -> int:
        n = self._f.readinto(b) or 0
        if n:
            self._limiter.take_blocking(n)  # on the reader's thread, never the event loop
        return n

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def source_path(source: Path | Paced) -> Path:
    return source.path if isinstance(source, Paced) else Path(source)


class Remote(ABC):
    """One place objects are published to and fetched from.

    Beyond reading and publishing, a remote that can be listed (``listable``: a directory, a
    bucket) also supports housekeeping: ``listing``, ``delete``, small ``put_small`` objects for
    the remote lock protocol (remotes/locks.py) and ``now``, its own clock."""

    url: str
    #: Whether ranged reads are served as such (True), answered with the whole object (False),
    #: or not known yet (None). The engine splits a blob into parallel parts only when True.
    ranges: bool | None = True
    #: Whether abandoning a read midway wastes bytes already sent (a network remote): the engine
    #: then asks for bounded ranges, so it never has to abandon one (transfer/download.py).
    bounded_reads: bool = True
    #: Whether ``stale_uploads`` and ``abort_upload`` exist (multipart uploads: S3).
    uploads: bool = False

    def backend(self) -> Remote:
        """The backend under any layers (remotes/layers.py): itself."""
        return self

    def hurry(self, on: bool) -> None:  # noqa: B027 - a backend has nothing to hurry
        """Told by ``layers.Mirrors`` whether other mirrors are left (a backend ignores it)."""

    async def probe_ranges(self, key: Key) -> None:
        """Learn whether ranges are served (``ranges``), if not known yet, from one byte of ``key``."""
        if self.ranges is not None:
            return
        try:
            async for _ in self.read(key, 0, 1):
                pass
        except CasError as e:
            log.debug("range probe of %s failed: %s", self.describe(key), e)

    async def stale_uploads(self, older_than: float) -> list[tuple[str, str, float]]:
        """Uploads begun before ``older_than`` nobody finished: (key, upload id, started)."""
        raise RemoteRefused(f"{self.url} has no multipart uploads", url=self.url)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        raise RemoteRefused(f"{self.url} has no multipart uploads", url=self.url)

    def sources(self, key: Key) -> list[str]:
        """The URLs this run's bytes of ``key`` came from (layers.Mirrors knows which mirrors)."""
        return [self.describe(key)]

    def distrust(self, key: Key) -> bool:
        """Told that the bytes of ``key`` read so far did not verify: whether another source is
        left to read them from (a backend has none)."""
        return False

    def local_file(self, key: Key) -> Path | None:
        """The object as a file on this machine (a directory remote, a store read as one), which
        the engine may reflink or copy in the kernel instead of streaming; None elsewhere."""
        return None

    def describe(self, key: Key | str) -> str:
        """The URL of an object, for error messages."""
        rel = key.path if isinstance(key, Key) else key
        return f"{self.url.rstrip('/')}/{rel}"

    @abstractmethod
    async def stat(self, key: Key) -> int | None:
        """The object's size, or None if the remote does not have it."""

    @abstractmethod
    def read(self, key: Key, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        """Stream bytes [start, end) of an object. Raises NotFound or RemoteError."""

    #: Whether ``read_into`` serves ranges: the engine then fetches a large blob's parts with
    #: it on threads of its own, writing each buffer straight into the partial file.
    threaded_reads: bool = False

    def read_into(self, key: Key, start: int, end: int, sink: Callable[[memoryview], bool]) -> None:
        """Blocking: bytes [start, end) of an object, handed to ``sink`` in order as they arrive
        (``sink`` returns False to stop; an empty piece asks only whether to go on, as a retry
        does first). Raises like ``read``. Called on a thread, never the event loop."""
        raise NotImplementedError

    @abstractmethod
    async def write(self, key: Key, source: Path | bytes | Paced) -> None:
        """Publish an object whose bytes match its digest (the caller has verified them). A
        ``Paced`` file is read no faster than its limiter allows (`cas push --limit-rate`)."""

    @abstractmethod
    async def read_index(self, model: str) -> tuple[bytes, str] | None:
        """The model's index bytes and a tag for compare-and-swap, or None if unpublished."""

    @abstractmethod
    async def write_index(self, model: str, data: bytes, expect: str | None) -> None:
        """Replace the index if its tag is still ``expect`` (None: must not exist); else Conflict."""

    listable = False

    async def missing(self, keys: list[Key], jobs: int = 8) -> set[Key]:
        """Which of ``keys`` (with sizes) the remote lacks or holds with another size."""
        sem = asyncio.Semaphore(jobs)

        async def lacks(k: Key) -> bool:
            async with sem:
                return await self.stat(k) != k.size

        flags = await asyncio.gather(*(lacks(k) for k in keys))
        return {k for k, f in zip(keys, flags) if f}

    async def listing(self, under: str, skip: Skip | None = None) -> AsyncGenerator[Listed, None]:
        """The objects under ``under``, in ascending order of key (as S3 lists), but those whose
        key ``skip`` answers true for: a backend may pass them before it learns their size and
        time (a directory's stat, 5 s of listing 1M files)."""
        raise RemoteRefused(f"{self.url} cannot be listed (a static HTTP server or `cas serve`): collect garbage "
                            "or take locks on the directory or bucket behind it", url=self.url)
        yield  # pragma: no cover - makes this an async generator

    async def delete(self, rel: str) -> None:
        raise RemoteRefused(f"{self.url} does not support deleting objects", url=self.url)

    async def put_small(self, rel: str, data: bytes) -> bool:
        """Create a small object if absent (lock files); False if it exists."""
        raise RemoteRefused(f"{self.url} does not support housekeeping objects", url=self.url)

    async def now(self) -> float:
        """The remote's clock (object mtimes are judged by it, not by ours)."""
        return time.time()

    async def looks_like_remote(self) -> bool:
        """Whether a casstore remote is there at all (its format file): tells a wrong URL or a
        missing directory apart from a model that is not published."""
        return True

    async def close(self) -> None:  # noqa: B027 - most backends hold nothing to close
        pass

    async def __aenter__(self) -> Remote:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
