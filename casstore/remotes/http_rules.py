"""What both HTTP paths (aiohttp in http.py, the engine's blocking reads in http_blocking.py)
check the same way: redirects, origins, encodings."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from casstore.errors import RemoteProtocolError, RemoteRefused
from casstore.remotes.base import Key

MAX_REDIRECTS = 5

Origin = tuple[str, str, int | None]


def origin(url: str) -> Origin:
    u = urlsplit(url)
    return u.scheme, (u.hostname or "").lower(), u.port or {"http": 80, "https": 443}.get(u.scheme)


def redirect(url: str, status: int, headers) -> str | None:
    """Where a redirect answer points, or None if it is no redirect; never from HTTPS to HTTP."""
    if status not in (301, 302, 303, 307, 308) or "Location" not in headers:
        return None
    nxt = urljoin(url, headers["Location"])
    if urlsplit(nxt).scheme == "http" and urlsplit(url).scheme == "https":
        raise RemoteRefused(f"{url} redirected from HTTPS to plain HTTP ({nxt}); refused", url=url)
    return nxt


def refuse_encoding(headers, url: str, key: Key) -> None:
    """A compressed body is refused, never inflated (a small gzip can inflate to gigabytes)."""
    enc = (headers.get("Content-Encoding") or "identity").lower()
    if enc not in ("identity", ""):
        raise RemoteProtocolError(f"{url} sent a {enc}-encoded body; refusing to inflate it", url=url, digest=key.digest)
