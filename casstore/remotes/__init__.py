"""Remotes: where versions are published and fetched. ``open_remote`` picks the backend by URL."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from casstore.errors import InvalidInput
from casstore.remotes.base import Key, Remote, blob, index_path, manifest

__all__ = ["Key", "Remote", "blob", "index_path", "manifest", "open_remote"]


def open_remote(url: str, *, token: str | None = None, insecure: bool = False, endpoint_url: str | None = None,
                region: str | None = None, **http_options) -> Remote:
    scheme = urlsplit(url).scheme
    if scheme == "s3":
        from casstore.remotes.s3 import S3Remote

        return S3Remote(url, endpoint_url=endpoint_url, region=region, insecure=insecure)
    if scheme in ("http", "https"):
        from casstore.remotes.http import HttpRemote

        return HttpRemote(url, token=token, insecure=insecure, **http_options)
    if scheme == "file":
        from casstore.remotes.directory import DirectoryRemote

        return DirectoryRemote(unquote(urlsplit(url).path))
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        from casstore.remotes.directory import DirectoryRemote

        return DirectoryRemote(os.path.abspath(os.path.expanduser(url)))
    if scheme == "memory":
        from casstore.remotes.memory import MemoryRemote

        return MemoryRemote()
    raise InvalidInput(f"unsupported remote URL {url!r}: use a directory path, file://, http://, https:// or s3://")
