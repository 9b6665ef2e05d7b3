"""A remote that is a directory: a NAS mount or a local path (``file://`` or a plain path).

Writes follow the store's rules: temp file, fsync, link without replacing. The index is
replaced with rename after a compare of its digest; a race between two publishers is narrowed
to that instant and detected by re-reading (see docs/format.md).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from .. import linking
from ..atomic import makedirs, write_file, link_no_replace, fsync_dir, temp_name
from ..digest import Digest
from ..errors import Conflict, NotFound, RemoteError
from .base import CHUNK, FORMAT_FILE, FORMAT_VERSION, Key, Remote, index_path


class DirectoryRemote(Remote):
    def __init__(self, root: str | os.PathLike, url: str | None = None) -> None:
        self.root = Path(root)
        self.url = url or self.root.as_uri()

    def _p(self, rel: str) -> Path:
        return self.root / rel

    def _ensure(self) -> None:
        makedirs(self.root / "tmp")
        fmt = self.root / FORMAT_FILE
        if not fmt.exists():
            write_file(fmt, f'{{"casstore_remote": {FORMAT_VERSION}}}\n'.encode(), self.root / "tmp")

    async def stat(self, key: Key) -> int | None:
        try:
            return os.stat(self._p(key.path)).st_size
        except FileNotFoundError:
            return None

    async def read(self, key: Key, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._p(key.path)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"{self.describe(key)} does not exist") from None
        except OSError as e:
            raise RemoteError(f"cannot read {self.describe(key)}: {e.strerror}") from e
        with f:
            f.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                n = CHUNK if left is None else min(CHUNK, left)
                chunk = await asyncio.to_thread(f.read, n)
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                yield chunk

    async def write(self, key: Key, source: Path | bytes) -> None:
        await asyncio.to_thread(self._write, key, source)

    def _write(self, key: Key, source: Path | bytes) -> None:
        self._ensure()
        final = self._p(key.path)
        if final.exists():
            return
        makedirs(final.parent)
        if isinstance(source, bytes):
            write_file(final, source, self.root / "tmp")
            return
        tmp = self.root / "tmp" / temp_name()
        try:
            linking.reflink_or_copy(Path(source), tmp)
            os.chmod(tmp, 0o444)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if link_no_replace(tmp, final):
                fsync_dir(final.parent)
        finally:
            if tmp.exists():
                os.unlink(tmp)

    async def read_index(self, model: str) -> tuple[bytes, str] | None:
        try:
            data = self._p(index_path(model)).read_bytes()
        except FileNotFoundError:
            return None
        return data, Digest.of_bytes(data).hex

    async def write_index(self, model: str, data: bytes, expect: str | None) -> None:
        await asyncio.to_thread(self._write_index, model, data, expect)

    def _write_index(self, model: str, data: bytes, expect: str | None) -> None:
        self._ensure()
        final = self._p(index_path(model))
        makedirs(final.parent)
        if expect is None:
            if not write_file(final, data, self.root / "tmp", mode=0o644):
                raise Conflict(f"{self.describe(index_path(model))} was created by another publisher; try again")
            return
        cur = final.read_bytes() if final.exists() else None
        if cur is None or Digest.of_bytes(cur).hex != expect:
            raise Conflict(f"{self.describe(index_path(model))} changed while publishing; try again")
        write_file(final, data, self.root / "tmp", mode=0o644, replace=True)
