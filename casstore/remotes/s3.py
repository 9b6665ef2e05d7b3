"""A remote in an S3-compatible object store: ``s3://BUCKET/PREFIX`` (AWS S3, MinIO, Ceph RGW, R2,
GCS's S3 API), through aiobotocore (docs/guides/object-storage.md).

- The object keys under PREFIX are exactly a directory remote's (model/keys.py), so any static
  HTTP front of the bucket (a CDN, nginx, S3 website endpoints) serves the same remote to readers
  through the HTTP remote.
- Credentials come only from the standard AWS chain (environment, ``AWS_PROFILE`` and the shared
  files, instance roles; ``AWS_ENDPOINT_URL``); casstore never stores or prints them.
- Retries belong to the download engine: the client itself never retries, and failures come
  back as typed ``RemoteError``s (``SlowDown``/503 retryable, with ``Retry-After``).
- Writes never overwrite: blobs and manifests are created with ``If-None-Match: *`` (on the
  single PUT, or on completing a multipart upload, whose parts carry a CRC32 the server
  checks); a failed multipart upload is aborted. The version index is a compare-and-swap on the
  ETag (``If-Match``). A server that ignores these headers is detected once, before the first
  write, and refused (``ConditionalWritesUnsupported``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import secrets
from collections.abc import AsyncGenerator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from casstore.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RemoteError,
    RemoteProtocolError,
    RemoteRefused,
    RemoteStatusError,
    RemoteTooSlow,
    RemoteUnreachable,
)
from casstore.model.digest import Digest, hash_file
from casstore.remotes.base import (
    CHUNK,
    FORMAT_FILE,
    FORMAT_VERSION,
    Key,
    Listed,
    Paced,
    Pacer,
    Remote,
    Skip,
    check_bytes,
    check_object,
    check_range_answer,
    index_path,
    is_loopback,
    source_path,
)

log = logging.getLogger("casstore")

MiB = 1 << 20
MAX_PARTS = 10_000  # S3's limit per multipart upload
RETRYABLE_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                   "Throttling", "ThrottlingException", "TooManyRequests"}


class ConditionalWritesUnsupported(RemoteRefused):
    """The server accepted a write that ``If-None-Match: *`` should have refused."""


def parse_url(url: str) -> tuple[str, str]:
    u = urlsplit(url)
    if u.scheme != "s3" or not u.netloc:
        raise InvalidInput(f"not an S3 URL: {url!r} (expected s3://BUCKET/PREFIX)")
    prefix = u.path.strip("/")
    return u.netloc, (prefix + "/" if prefix else "")


class S3Remote(Remote):
    ranges = True

    def __init__(self, url: str, *, endpoint_url: str | None = None, region: str | None = None,
                 insecure: bool = False, part_size: int = 16 * MiB, jobs: int = 8, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout  # connect and read, per call (open_remote passes the stack's limits)
        self.bucket, self.prefix = parse_url(url)
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if self.endpoint_url:
            e = urlsplit(self.endpoint_url)
            if e.scheme not in ("http", "https") or not e.netloc:
                raise InvalidInput(f"endpoint URL {self.endpoint_url!r} is not http(s)://HOST[:PORT]")
            if e.scheme == "http" and not insecure and not is_loopback(e.hostname):
                raise InvalidInput(f"refusing plain HTTP to {self.endpoint_url}: credentials would be signed over an "
                                   "unencrypted connection; use https:// or --insecure")
        self.region = region  # else the AWS chain's (AWS_REGION, the profile), else us-east-1
        self.part_size = part_size
        self._uploads = asyncio.Semaphore(max(1, jobs))  # uploads in flight at once, across all blobs
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._conditional_ok = False
        self._if_match_quoted = True  # decided by the probe
        self._probing = asyncio.Lock()  # one probe, however many writes start at once

    # plumbing ----------------------------------------------------------------------------------

    async def _c(self):
        if self._client is None:
            try:
                import aiobotocore.session
                from botocore.config import Config
            except ImportError as e:
                raise InvalidInput("s3:// remotes need the S3 client: pip install 'casstore[s3]'") from e
            stall = self.timeout
            cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=stall, read_timeout=stall,
                         max_pool_connections=64, signature_version="s3v4",
                         s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                         request_checksum_calculation="when_required", response_checksum_validation="when_required")
            self._stack = contextlib.AsyncExitStack()
            session = aiobotocore.session.get_session()
            region = self.region or session.get_config_variable("region") or "us-east-1"
            self._client = await self._stack.enter_async_context(
                session.create_client("s3", endpoint_url=self.endpoint_url, region_name=region, config=cfg))
        return self._client

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack, self._client = None, None

    def _key(self, rel: str) -> str:
        return self.prefix + rel

    def _error(self, e: BaseException, what: str, rel: str, digest: Digest | None = None) -> Exception:
        """A botocore or network failure as casstore's error (credentials never appear in it)."""
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            ConnectTimeoutError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        url = self.describe(rel)
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            meta = e.response.get("ResponseMetadata", {})
            status = int(meta.get("HTTPStatusCode") or 0) or None
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"{url} does not exist")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict") or status in (409, 412):
                return Conflict(f"{url} changed while publishing ({code or status}); try again")
            if code == "NoSuchBucket":
                return RemoteRefused(f"{what} {url}: bucket {self.bucket} does not exist", url=url, status=status)
            if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                                                "ExpiredToken", "InvalidToken"):
                return RemoteRefused(f"{what} {url} refused ({code or status}): check the AWS credentials "
                                     "(AWS_PROFILE, AWS_ACCESS_KEY_ID, ...) and the bucket policy",
                                     url=url, status=status, digest=digest)
            if code in ("BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"):
                return RemoteProtocolError(f"{what} {url}: the server received other bytes than were sent ({code})",
                                           url=url, status=status, digest=digest, retryable=True)
            retry_after = meta.get("HTTPHeaders", {}).get("retry-after")
            return RemoteStatusError(
                f"{what} {url} failed: {code or 'HTTP'} {status or ''} {err.get('Message', '')}".rstrip(),
                url=url, status=status, digest=digest,
                retryable=code in RETRYABLE_CODES or (status or 0) >= 500 or status == 429,
                retry_after=float(retry_after) if retry_after and str(retry_after).isdigit() else None)
        if isinstance(e, NoCredentialsError):
            return RemoteRefused(f"{what} {url}: no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                                 "AWS_SECRET_ACCESS_KEY; readers can use an HTTP front of the bucket instead)", url=url)
        if isinstance(e, (ReadTimeoutError, asyncio.TimeoutError)):
            return RemoteTooSlow(f"{what} {url}: no answer within the stall timeout (CAS_STALL_TIMEOUT)", url=url,
                                 digest=digest)
        if isinstance(e, (ConnectionError, ConnectTimeoutError, OSError)):
            return RemoteUnreachable(f"{what} {url} failed: {type(e).__name__}: {e}", url=url, digest=digest)
        return RemoteProtocolError(f"{what} {url} failed: {type(e).__name__}: {e}", url=url, digest=digest,
                                   retryable=True)

    async def _call(self, what: str, rel: str, fn: str, digest: Digest | None = None, **kw: Any) -> Any:
        import aiohttp
        from botocore.exceptions import BotoCoreError, ClientError

        client = await self._c()
        try:
            return await getattr(client, fn)(Bucket=self.bucket, Key=self._key(rel), **kw)
        except (TimeoutError, ClientError, BotoCoreError, aiohttp.ClientError, OSError) as e:
            raise self._error(e, what, rel, digest) from e

    # reading -----------------------------------------------------------------------------------

    async def stat(self, key: Key) -> int | None:
        return await self.stat_rel(key.path, key.digest)

    async def read(self, key: Key, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        import aiohttp
        from botocore.exceptions import BotoCoreError

        kw = {}
        if start or end is not None:
            kw["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        if start and key.size is not None and start >= key.size:
            return
        r = await self._call("GET", key.path, "get_object", key.digest, **kw)
        url = self.describe(key)
        want = None if end is None else end - start
        if "Range" in kw:
            check_range_answer(url, key, start, want, r.get("ContentLength"), str(r.get("ContentRange", "")))
        got = 0
        async with r["Body"] as body:
            try:
                while chunk := await body.read(CHUNK):
                    got += len(chunk)
                    if want is not None and got > want:
                        raise RemoteProtocolError(f"{url} sent more than the {want} bytes asked for", url=url,
                                                  digest=key.digest)
                    yield chunk
            except TimeoutError as e:
                raise RemoteTooSlow(f"GET {url} went silent after {got} bytes (CAS_STALL_TIMEOUT)", url=url,
                                    digest=key.digest) from e
            except (BotoCoreError, aiohttp.ClientError, OSError) as e:
                raise RemoteProtocolError(f"GET {url} broke after {got} bytes: {type(e).__name__}: {e}", url=url,
                                          digest=key.digest, retryable=True) from e
        if want is not None and got < want:
            raise RemoteProtocolError(f"{url} ended after {got} of {want} bytes", url=url, digest=key.digest,
                                      retryable=True)

    async def read_index(self, model: str) -> tuple[bytes, str] | None:
        from casstore.model.index import MAX_INDEX_BYTES

        rel = index_path(model)
        try:
            r = await self._call("GET", rel, "get_object")
        except NotFound:
            return None
        if int(r.get("ContentLength", 0)) > MAX_INDEX_BYTES:
            raise RemoteProtocolError(f"{self.describe(rel)} is larger than {MAX_INDEX_BYTES} bytes",
                                      url=self.describe(rel))
        async with r["Body"] as body:
            data = await body.read()
        return data, str(r["ETag"]).strip('"')

    async def looks_like_remote(self) -> bool:
        try:
            await self._call("HEAD", FORMAT_FILE, "head_object")
            return True
        except (NotFound, RemoteError):
            return False

    # writing -----------------------------------------------------------------------------------

    async def _probe_conditional_writes(self) -> None:
        """Once per remote, before the first write, on a scratch key: a create-only PUT must fail
        the second time (``If-None-Match: *``), a PUT with a wrong ``If-Match`` must fail (412) and
        one with the current ETag must succeed. Some S3-compatible servers ignore one or the other;
        on them two publishers could overwrite each other's index, so nothing is published. The
        probe also learns whether the server wants the ETag in ``If-Match`` quoted (as RFC 9110
        and AWS) or bare."""
        async with self._probing:
            if not self._conditional_ok:
                await self._probe()

    async def _probe(self) -> None:
        rel = f"tmp/probe-{secrets.token_hex(8)}"
        url = self.describe(rel)

        def refuse(what: str) -> ConditionalWritesUnsupported:
            return ConditionalWritesUnsupported(
                f"{self.url} ignores conditional writes ({what}): two publishers could overwrite each other's index "
                "there, so casstore will not publish to it. Use a server that honours If-None-Match and If-Match "
                "(AWS S3, MinIO, SeaweedFS) or a directory remote", url=url)

        async def accepted(**condition: Any) -> bool:
            """Whether a conditional PUT of the scratch key went through (False: 412/409)."""
            try:
                await self._call("PUT", rel, "put_object", Body=b"probe 2", **condition)
                return True
            except Conflict:
                return False

        first = await self._call("PUT", rel, "put_object", Body=b"probe", IfNoneMatch="*")
        try:
            if await accepted(IfNoneMatch="*"):
                raise refuse("If-None-Match: * did not refuse an existing key")
            if await self._completes_over(rel):
                raise refuse("a multipart upload completed over an existing key despite If-None-Match: *")
            if await accepted(IfMatch='"0123456789abcdef0123456789abcdef"'):
                raise refuse("a PUT with a wrong If-Match was accepted")
            etag = str(first.get("ETag", "")).strip('"')
            for quoted in (True, False):
                if await accepted(IfMatch=f'"{etag}"' if quoted else etag):
                    self._if_match_quoted = quoted
                    break
            else:
                raise refuse(f"a PUT with the current ETag {etag!r} in If-Match was refused, quoted or not")
            self._conditional_ok = True
        finally:
            with contextlib.suppress(RemoteError, NotFound):
                await self._call("DELETE", rel, "delete_object")
        if await self.stat_rel(FORMAT_FILE) is None:
            with contextlib.suppress(Conflict):
                await self._call("PUT", FORMAT_FILE, "put_object", Body=f'{{"casstore_remote": {FORMAT_VERSION}}}\n'
                                 .encode(), IfNoneMatch="*")

    async def _completes_over(self, rel: str) -> bool:
        """Whether CompleteMultipartUpload with ``If-None-Match: *`` replaces the existing ``rel``
        (Ceph RGW before Squid does): large blobs go up that way."""
        up = await self._call("POST", rel, "create_multipart_upload")
        try:
            part = await self._call("PUT", rel, "upload_part", UploadId=up["UploadId"], PartNumber=1, Body=b"probe 3")
            await self._call("POST", rel, "complete_multipart_upload", UploadId=up["UploadId"], IfNoneMatch="*",
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
            return True
        except Conflict:
            return False
        finally:
            with contextlib.suppress(RemoteError, NotFound):
                await self._call("DELETE", rel, "abort_multipart_upload", UploadId=up["UploadId"])

    async def missing(self, keys: list[Key], jobs: int = 16) -> set[Key]:
        """A HEAD per key, ``jobs`` at a time: work in proportion to the version. (A listing of
        ``blobs/`` grew with the bucket: 1.97 s at 10k blobs, 11.85 s at 100k.)"""
        return await super().missing(keys, jobs)

    async def stat_rel(self, rel: str, digest: Digest | None = None) -> int | None:
        try:
            return int((await self._call("HEAD", rel, "head_object", digest))["ContentLength"])
        except NotFound:
            return None

    async def write(self, key: Key, source: Path | bytes | Paced) -> None:
        """A ``Paced`` source books each part (or the one PUT) with its limiter before sending
        it: paced at the part size (16 MiB), as botocore reads a body twice (checksum, send)."""
        pacer = source.limiter if isinstance(source, Paced) else None
        source = source_path(source) if isinstance(source, Paced) else source
        await self._probe_conditional_writes()
        if isinstance(source, bytes):
            check_object(key, source, self.describe(key))
            size = len(source)
        else:  # read in pieces, not mapped: many blobs are checked at once
            check_bytes(key, *await asyncio.to_thread(hash_file, Path(source), mapped=False), self.describe(key))
            size = os.path.getsize(source)
        try:
            if size <= self.part_size:
                if pacer is not None:
                    await pacer.take(size)
                async with self._uploads:
                    with _body(source, 0, size) as body:
                        await self._call("PUT", key.path, "put_object", key.digest, Body=body, IfNoneMatch="*",
                                         ChecksumAlgorithm="CRC32")
            else:
                await self._multipart(key, source, size, pacer)
        except Conflict:
            log.debug("%s is already there", self.describe(key))  # write-once: the first writer's copy stays

    async def _multipart(self, key: Key, source: Path | bytes, size: int, pacer: Pacer | None = None) -> None:
        part = max(self.part_size, -(-size // MAX_PARTS))
        up = await self._call("POST", key.path, "create_multipart_upload", key.digest, ChecksumAlgorithm="CRC32")
        upload_id = up["UploadId"]

        async def one(n: int, offset: int) -> dict:
            if pacer is not None:
                await pacer.take(min(part, size - offset))
            async with self._uploads:
                with _body(source, offset, min(part, size - offset)) as body:
                    r = await self._call("PUT", key.path, "upload_part", key.digest, UploadId=upload_id, PartNumber=n,
                                         Body=body, ChecksumAlgorithm="CRC32")
                if "ChecksumCRC32" in r:  # the server checked the part against the CRC32 it was sent
                    return {"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]}
                # A server that keeps no checksums (Ceph RGW): a plain part's ETag is its MD5.
                length = min(part, size - offset)
                md5 = await asyncio.to_thread(_md5, source, offset, length)
                if str(r.get("ETag", "")).strip('"').lower() != md5:
                    url = self.describe(key)
                    raise RemoteProtocolError(f"{url}: part {n} was stored as {r.get('ETag')!r}, not the MD5 {md5} of "
                                              f"the {length} bytes sent", url=url, digest=key.digest, retryable=True)
                return {"PartNumber": n, "ETag": r["ETag"]}

        tasks = [asyncio.ensure_future(one(i + 1, off)) for i, off in enumerate(range(0, size, part))]
        try:
            parts = await asyncio.gather(*tasks)
            await self._call("POST", key.path, "complete_multipart_upload", key.digest, UploadId=upload_id,
                             MultipartUpload={"Parts": list(parts)}, IfNoneMatch="*")
        except BaseException:
            for t in tasks:  # a part still in flight could land after the abort and keep the upload alive
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.shield(self._abort(key, upload_id))
            raise

    async def _abort(self, key: Key, upload_id: str) -> None:
        """Abort a failed upload, a few times if need be: the cancelled parts may have left the
        pool a connection the server is closing, and a single failed abort leaves the parts
        stored (and billed) until `cas doctor --remote` finds the upload a day later."""
        for delay in (0.0, 0.2, 1.0):
            await asyncio.sleep(delay)
            try:
                await self._call("DELETE", key.path, "abort_multipart_upload", UploadId=upload_id)
                return
            except Exception as e:  # noqa: BLE001 (the write's own error is what the caller sees)
                why = e
        log.warning("%s: could not abort multipart upload %s (%s); `cas doctor --remote` aborts it once a day old",
                    self.describe(key), upload_id, why)

    async def write_index(self, model: str, data: bytes, expect: str | None) -> None:
        await self._probe_conditional_writes()
        cond: dict[str, Any] = ({"IfNoneMatch": "*"} if expect is None
                                else {"IfMatch": f'"{expect}"' if self._if_match_quoted else expect})
        await self._call("PUT", index_path(model), "put_object", Body=data, ChecksumAlgorithm="CRC32", **cond)

    # listing and deleting (`cas gc --remote`, `cas doctor --remote`) ------------------------------

    async def listing(self, under: str, skip: Skip | None = None) -> AsyncGenerator[Listed, None]:
        client = await self._c()
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(under)):
                for o in page.get("Contents", []):
                    key = o["Key"][len(self.prefix):]
                    if not (skip and skip(key)):
                        yield Listed(key, int(o["Size"]), _ts(o["LastModified"]))
        except (ClientError, BotoCoreError, OSError) as e:
            raise self._error(e, "LIST", under) from e

    listable = True
    uploads = True

    async def delete(self, rel: str) -> None:
        await self._call("DELETE", rel, "delete_object")

    async def put_small(self, rel: str, data: bytes) -> bool:
        await self._probe_conditional_writes()
        try:
            await self._call("PUT", rel, "put_object", Body=data, IfNoneMatch="*")
            return True
        except Conflict:
            return False

    async def stale_uploads(self, older_than: float) -> list[tuple[str, str, float]]:
        """Multipart uploads under the prefix started before ``older_than`` (the store's clock
        is the bucket's): (key, upload id, started)."""
        client = await self._c()
        out = []
        paginator = client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for u in page.get("Uploads", []):
                started = _ts(u["Initiated"])
                if started <= older_than:  # whole seconds: "older than 0 s" includes this second
                    out.append((u["Key"][len(self.prefix):], u["UploadId"], started))
        return out

    async def abort_upload(self, rel: str, upload_id: str) -> None:
        await self._call("DELETE", rel, "abort_multipart_upload", UploadId=upload_id)

    async def now(self) -> float:
        """The object store's clock: the Date of a response (for grace periods)."""
        from email.utils import parsedate_to_datetime

        client = await self._c()
        try:
            resp = await client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(FORMAT_FILE), MaxKeys=1)
        except Exception as e:  # noqa: BLE001 - translated
            raise self._error(e, "LIST", FORMAT_FILE) from e
        date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if not date:
            raise RemoteProtocolError(f"{self.url} sent no Date header; cannot tell its clock", url=self.url)
        return parsedate_to_datetime(date).timestamp()


def _md5(source: Path | bytes, offset: int, length: int) -> str:
    if isinstance(source, bytes):
        return hashlib.md5(source[offset:offset + length], usedforsecurity=False).hexdigest()
    h = hashlib.md5(usedforsecurity=False)
    with open(source, "rb") as f:
        f.seek(offset)
        while length > 0:
            piece = f.read(min(length, 8 << 20))
            if not piece:
                break
            h.update(piece)
            length -= len(piece)
    return h.hexdigest()


def _ts(t: Any) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


class _FileRange(io.RawIOBase):
    """``length`` bytes of a file from ``offset``, as a seekable stream: botocore reads it twice
    (the checksum, then the request body) without the part ever being held in memory whole."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self.offset, self.length, self.pos = offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else self.length + pos
        return self.pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self.length - self.pos))
        data = os.pread(self._fd, n, self.offset + self.pos) if n else b""
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def __len__(self) -> int:
        return self.length

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def _body(source: Path | bytes, offset: int, length: int):
    if isinstance(source, bytes):
        return contextlib.nullcontext(source[offset : offset + length])
    return _FileRange(Path(source), offset, length)
