"""Remotes: where versions are published and fetched. ``open_remote`` picks the backend by URL."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from casstore.errors import InvalidInput
from casstore.remotes.base import Key, Remote, blob, index_path, manifest
from casstore.remotes.layers import Mirrors, Tuning, stack

__all__ = ["Key", "Mirrors", "Remote", "Tuning", "blob", "index_path", "manifest", "open_remote", "stack"]


def open_remote(url: str, *, token: str | None = None, insecure: bool = False, endpoint_url: str | None = None,
                region: str | None = None, tuning=None, **http_options) -> Remote:
    """The backend for ``url``, its sockets given the stack's time limits (``tuning``, a
    ``layers.Tuning``; from the environment if None)."""
    from casstore.remotes.layers import Tuning

    t = tuning or Tuning.from_env()
    scheme = urlsplit(url).scheme
    if scheme == "s3":
        from casstore.remotes.s3 import S3Remote

        return S3Remote(url, endpoint_url=endpoint_url, region=region, insecure=insecure,
                        timeout=t.connect_timeout + t.stall_timeout)
    if scheme in ("http", "https"):
        from casstore.remotes.http import HttpRemote

        options = {"stall_timeout": t.stall_timeout, "connect_timeout": t.connect_timeout, **http_options}
        return HttpRemote(url, token=token, insecure=insecure, **options)
    if scheme == "file" or scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        from casstore.remotes.directory import DirectoryRemote
        from casstore.remotes.store_source import StoreSource, is_store

        path = Path(unquote(urlsplit(url).path) if scheme == "file" else os.path.abspath(os.path.expanduser(url)))
        return StoreSource(path) if is_store(path) else DirectoryRemote(path)  # a store: read-only
    if scheme == "memory":
        from casstore.remotes.memory import MemoryRemote

        return MemoryRemote()
    raise InvalidInput(f"unsupported remote URL {url!r}: use a directory path, file://, http://, https:// or s3://")
