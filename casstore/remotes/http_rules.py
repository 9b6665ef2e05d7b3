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


# The network a team has (HTTPS_PROXY/HTTP_PROXY/NO_PROXY/ALL_PROXY, netrc, a CA bundle), read the
# same way for both paths, as curl, pip and huggingface_hub read them.

def proxy_for(url: str) -> str | None:
    """The proxy a request for ``url`` goes through (``https_proxy``/``http_proxy``, else
    ``all_proxy``; none for a host ``no_proxy`` names), as urllib reads the environment."""
    import urllib.request

    u = urlsplit(url)
    host = u.hostname or ""
    if urllib.request.proxy_bypass_environment(f"{host}:{u.port}" if u.port else host):  # type: ignore[attr-defined]
        return None
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(u.scheme) or proxies.get("all")
    if not proxy:
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    p = urlsplit(proxy)
    if p.scheme not in ("http", "https") or not p.hostname:
        raise RemoteRefused(f"proxy {proxy!r} for {url} is not http(s)://HOST:PORT", url=url)
    return proxy


def proxy_authorization(proxy: str) -> str | None:
    """``Proxy-Authorization`` for credentials written into the proxy URL, if any."""
    import base64
    from urllib.parse import unquote

    p = urlsplit(proxy)
    if p.username is None:
        return None
    creds = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
    return "Basic " + base64.b64encode(creds).decode()


def netrc_authorization(url: str) -> str | None:
    """``Authorization`` from ``~/.netrc`` (or ``$NETRC``) for the host of ``url``, if it has one."""
    import base64
    import netrc
    import os

    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entry = netrc.netrc(path).authenticators(urlsplit(url).hostname or "")
    except (OSError, netrc.NetrcParseError):
        return None
    if not entry:
        return None
    login, _, password = entry
    return "Basic " + base64.b64encode(f"{login or ''}:{password or ''}".encode()).decode()


_SSL: dict = {}


def ssl_context():
    """One TLS context for both paths: the system's CAs, or the bundle ``SSL_CERT_FILE`` (else
    ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) names."""
    import os
    import ssl

    bundle = next((os.environ[v] for v in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
                   if os.environ.get(v)), None)
    if bundle not in _SSL:
        try:
            _SSL[bundle] = ssl.create_default_context(cafile=bundle)
        except (OSError, ssl.SSLError) as e:
            raise RemoteRefused(f"cannot use the CA bundle {bundle}: {e}") from e
    return _SSL[bundle]


def tls_failure(url: str, e: BaseException) -> RemoteProtocolError:
    """A TLS handshake that failed: a configuration to fix (plain http:// behind https://, an
    untrusted certificate), not a server that is down; so neither retried nor taken for
    "unreachable" (which `cas fetch M` would answer with the newest local version)."""
    reason = getattr(e, "reason", None) or str(e)
    hint = ("the server speaks plain HTTP: use http:// (with --insecure off loopback)" if "WRONG_VERSION_NUMBER" in str(e)
            else "its certificate is not trusted here: SSL_CERT_FILE names a CA bundle" if "CERTIFICATE" in str(e)
            else "check the URL's scheme and the server's TLS setup")
    return RemoteProtocolError(f"TLS with {url} failed ({reason}): {hint}", url=url, retryable=False)
