"""What lies under a remote, reached without it: the contract suite seeds and inspects a backend
through these (zarr v3's ``StoreTests`` does the same with ``get``/``set`` hooks), so a backend
that writes and reads the same wrong key does not pass by agreeing with itself.

Paths are the remote layout's (remotes/base.py): ``blobs/<hh>/<hex>``, ``index/<model>.json``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol


class Storage(Protocol):
    def put(self, rel: str, data: bytes) -> None: ...

    def get(self, rel: str) -> bytes | None: ...

    def names(self) -> set[str]: ...


class DirectoryStorage:
    """The files under a directory remote (also what `cas serve` and nginx serve)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, rel: str, data: bytes) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def get(self, rel: str) -> bytes | None:
        try:
            return (self.root / rel).read_bytes()
        except FileNotFoundError:
            return None

    def names(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {os.path.relpath(os.path.join(d, n), self.root) for d, _, ns in os.walk(self.root) for n in ns}


class MemoryStorage:
    """The dictionary inside a ``MemoryRemote``."""

    def __init__(self, remote: Any) -> None:
        self.remote = remote

    def put(self, rel: str, data: bytes) -> None:
        self.remote.objects[rel] = data
        self.remote.modified[rel] = time.time()

    def get(self, rel: str) -> bytes | None:
        return self.remote.objects.get(rel)

    def names(self) -> set[str]:
        return set(self.remote.objects)


class BucketStorage:
    """Objects under a prefix of an S3 bucket, through a plain botocore client."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client, self.bucket = client, bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def put(self, rel: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + rel, Body=data)

    def get(self, rel: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + rel)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def names(self) -> set[str]:
        out = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            out |= {o["Key"][len(self.prefix):] for o in page.get("Contents", [])}
        return out


__all__ = ["BucketStorage", "DirectoryStorage", "MemoryStorage", "Storage"]
