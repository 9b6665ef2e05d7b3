"""The remote stack: cross-cutting behaviour as layers, each itself a ``Remote`` (restic's
``retry.Backend``, httpx's transports), built once by ``stack``:

    Mirrors([Retrying(Guarded(backend)), Retrying(Guarded(backend)), ...])

- ``Guarded``: the one place the time limits apply to every read of any backend: a first byte
  within the connect and stall timeouts, then no silence longer than the stall timeout, and a
  speed floor (``low_speed_limit`` bytes/s over ``low_speed_time``, curl's --speed-limit); every
  other call within connect + stall. Backends get the same limits for their sockets.
- ``Retrying``: every method, again after a retryable failure (a reset, 5xx, 429, a stall), with
  backoff and jitter or what ``Retry-After`` asks (``delay``); a read resumes at the offset it
  reached, a listing skips what it already gave, one set of constants (``Tuning``).
- ``Mirrors``: tries its remotes in order; a read that breaks goes on at its offset from the
  next. A mirror that cannot be reached or answers nothing is demoted for the rest of the run
  after one failure (its retries are skipped while others are left). What the run learns lives
  here and ends with it: the stack is built per command (or per ``casstore.fetch`` call). When
  every mirror fails, ``MirrorsFailed`` keeps each one's error, URL and status.

Backends keep only their protocol (remotes/base.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from casstore.errors import CasError, InvalidInput, NotFound, RemoteError, RemoteTooSlow, RemoteUnreachable
from casstore.remotes.base import Key, Listed, Paced, Remote, Skip

log = logging.getLogger("casstore")
T = TypeVar("T")
S = TypeVar("S")

MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class Tuning:
    """How the stack treats every backend; ``from_env`` reads the ``CAS_*`` variables (typed)."""

    attempts: int = 5
    backoff: float = 0.5
    backoff_cap: float = 30.0
    connect_timeout: float = 30.0
    stall_timeout: float = 30.0
    low_speed_limit: int = 1024
    low_speed_time: float = 30.0
    # While other mirrors are left: how long a request may wait for its first byte before the
    # mirror is taken for hung (one that accepts connections and never answers) and demoted.
    first_byte_timeout: float = 5.0

    @classmethod
    def from_env(cls, **over: Any) -> Tuning:
        from casstore.config import env
        from casstore.model import values

        t = cls(
            attempts=env("CAS_RETRY_ATTEMPTS", lambda v: values.count(v, minimum=1, maximum=100), cls.attempts),
            backoff=env("CAS_RETRY_BACKOFF", values.seconds, cls.backoff),
            connect_timeout=env("CAS_CONNECT_TIMEOUT", values.seconds, cls.connect_timeout),
            stall_timeout=env("CAS_STALL_TIMEOUT", values.seconds, cls.stall_timeout),
            low_speed_time=env("CAS_LOW_SPEED_TIME", values.seconds, cls.low_speed_time),
            first_byte_timeout=env("CAS_FIRST_BYTE_TIMEOUT", values.seconds, cls.first_byte_timeout),
        )
        return replace(t, **over)


def delay(attempt: int, backoff: float, cap: float, retry_after: float | None = None, url: str | None = None) -> float:
    """Backoff with jitter, or what the server asked for (``Retry-After``), capped at a minute
    and said so: a server asking for an hour costs a minute and a warning naming it."""
    d = min(cap, backoff * 2**attempt) * random.uniform(0.5, 1.0)
    if retry_after is not None:
        if retry_after > MAX_RETRY_AFTER:
            log.warning("%s asks to retry after %.0fs; waiting %.0fs instead", url or "the remote", retry_after,
                        MAX_RETRY_AFTER)
        d = min(max(d, retry_after), MAX_RETRY_AFTER)
    return d


class SpeedFloor:
    """Ends a read slower than ``limit`` bytes/s over ``window`` seconds (curl's --speed-limit and
    --speed-time); used on the event loop and on engine threads alike."""

    def __init__(self, limit: int, window: float, url: str, digest) -> None:
        self.limit, self.window, self.url, self.digest = limit, window, url, digest
        self.start, self.bytes = time.monotonic(), 0

    def add(self, n: int) -> None:
        self.bytes += n
        now = time.monotonic()
        if now - self.start >= self.window:
            if self.bytes / (now - self.start) < self.limit:
                raise RemoteTooSlow(f"{self.url} sent {self.bytes} bytes in {now - self.start:.0f}s, below "
                                    f"{self.limit} B/s", url=self.url, digest=self.digest)
            self.start, self.bytes = now, 0


class Layer(Remote):
    """A ``Remote`` that passes every call to ``inner``; a layer overrides what it adds."""

    def __init__(self, inner: Remote) -> None:
        self.inner = inner
        self.url = inner.url
        # the backend's capabilities, frozen (remotes/base.py)
        self.listable, self.threaded_reads = inner.listable, inner.threaded_reads
        self.bounded_reads, self.uploads = inner.bounded_reads, inner.uploads

    @property
    def ranges(self) -> bool | None:
        """What the backend has learned of ranges from its answers (or declared)."""
        return self.inner.ranges

    @ranges.setter
    def ranges(self, value: bool | None) -> None:
        self.inner.ranges = value

    def backend(self) -> Remote:
        return self.inner.backend()

    def hurry(self, on: bool) -> None:
        self.inner.hurry(on)

    async def probe_ranges(self, key: Key) -> None:
        if self.ranges is None:
            await Remote.probe_ranges(self, key)  # through this layer's read (its limits, its retries)

    def describe(self, key: Key | str) -> str:
        return self.inner.describe(key)

    def sources(self, key: Key) -> list[str]:
        return self.inner.sources(key)

    def distrust(self, key: Key) -> bool:
        return self.inner.distrust(key)

    def local_file(self, key: Key) -> Path | None:
        return self.inner.local_file(key)

    async def stat(self, key: Key) -> int | None:
        return await self.inner.stat(key)

    def read(self, key: Key, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        return self.inner.read(key, start, end)

    def read_into(self, key: Key, start: int, end: int, sink: Callable[[memoryview], bool]) -> None:
        self.inner.read_into(key, start, end, sink)

    async def write(self, key: Key, source: Path | bytes | Paced) -> None:
        await self.inner.write(key, source)

    async def read_index(self, model: str) -> tuple[bytes, str] | None:
        return await self.inner.read_index(model)

    async def write_index(self, model: str, data: bytes, expect: str | None) -> None:
        await self.inner.write_index(model, data, expect)

    async def missing(self, keys: list[Key], jobs: int = 8) -> set[Key]:
        return await self.inner.missing(keys, jobs)

    def listing(self, under: str, skip: Skip | None = None) -> AsyncGenerator[Listed, None]:
        return self.inner.listing(under, skip)

    async def delete(self, rel: str) -> None:
        await self.inner.delete(rel)

    async def put_small(self, rel: str, data: bytes) -> bool:
        return await self.inner.put_small(rel, data)

    async def now(self) -> float:
        return await self.inner.now()

    async def looks_like_remote(self) -> bool:
        return await self.inner.looks_like_remote()

    async def stale_uploads(self, older_than: float) -> list[tuple[str, str, float]]:
        return await self.inner.stale_uploads(older_than)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await self.inner.abort_upload(key, upload_id)

    async def close(self) -> None:
        await self.inner.close()


class Guarded(Layer):
    """Time limits for every call (module docstring)."""

    def __init__(self, inner: Remote, tuning: Tuning) -> None:
        super().__init__(inner)
        self.t = tuning
        self.first_byte = tuning.connect_timeout + tuning.stall_timeout

    def hurry(self, on: bool) -> None:
        """With other mirrors left, a request gets ``first_byte_timeout`` for its first byte."""
        self.first_byte = self.t.first_byte_timeout if on else self.t.connect_timeout + self.t.stall_timeout
        super().hurry(on)

    async def _within(self, what: str, url: str, aw: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.first_byte):
                return await aw
        except TimeoutError:
            raise RemoteTooSlow(f"{what} {url}: no answer within {self.first_byte:g}s", url=url, hung=True) from None

    async def read(self, key: Key, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        url = self.describe(key)
        floor = SpeedFloor(self.t.low_speed_limit, self.t.low_speed_time, url, key.digest)
        stream = self.inner.read(key, start, end)
        limit, got = self.first_byte, 0  # the first byte: connect and answer
        try:
            while True:
                try:
                    async with asyncio.timeout(limit):
                        chunk = await anext(stream)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise RemoteTooSlow(f"GET {url} went silent after {got} bytes for {limit:g}s (CAS_STALL_TIMEOUT)",
                                        url=url, digest=key.digest, hung=got == 0) from None
                limit = self.t.stall_timeout
                got += len(chunk)
                yield chunk
                floor.add(len(chunk))
        finally:
            await stream.aclose()

    def read_into(self, key: Key, start: int, end: int, sink: Callable[[memoryview], bool]) -> None:
        floor = SpeedFloor(self.t.low_speed_limit, self.t.low_speed_time, self.describe(key), key.digest)

        def guarded(view: memoryview) -> bool:
            go_on = sink(view)
            floor.add(len(view))
            return go_on

        self.inner.read_into(key, start, end, guarded)

    async def stat(self, key: Key) -> int | None:
        return await self._within("HEAD", self.describe(key), self.inner.stat(key))

    async def read_index(self, model: str) -> tuple[bytes, str] | None:
        return await self._within("GET", self.describe(f"index/{model}.json"), self.inner.read_index(model))

    async def write_index(self, model: str, data: bytes, expect: str | None) -> None:
        await self._within("PUT", self.describe(f"index/{model}.json"), self.inner.write_index(model, data, expect))

    async def put_small(self, rel: str, data: bytes) -> bool:
        return await self._within("PUT", self.describe(rel), self.inner.put_small(rel, data))

    async def delete(self, rel: str) -> None:
        await self._within("DELETE", self.describe(rel), self.inner.delete(rel))

    async def now(self) -> float:
        return await self._within("clock of", self.url, self.inner.now())

    async def looks_like_remote(self) -> bool:
        return await self._within("HEAD", self.url, self.inner.looks_like_remote())


class _Tally:
    """A sink (``Remote.read_into``) that counts what it passed on, so a retry or the next mirror
    resumes where the bytes stopped, and remembers whether the reader asked to stop."""

    def __init__(self, sink: Callable[[memoryview], bool], start: int) -> None:
        self.sink, self.pos, self.stopped = sink, start, False

    def __call__(self, view: memoryview) -> bool:
        go_on = self.sink(view)
        self.pos += len(view)
        self.stopped = not go_on
        return go_on


def _hung(e: BaseException) -> bool:
    """A failure before anything was answered: a refused connection, a server that never speaks."""
    return isinstance(e, RemoteUnreachable) or getattr(e, "hung", False)


class Retrying(Layer):
    """Every method again after a retryable failure (module docstring). ``fail_fast``: a failure
    before any answer is not retried but raised at once, for ``Mirrors`` to try another mirror."""

    def __init__(self, inner: Remote, tuning: Tuning) -> None:
        super().__init__(inner)
        self.t = tuning
        self.retries = 0
        self.fail_fast = False

    def hurry(self, on: bool) -> None:
        self.fail_fast = on
        super().hurry(on)

    def _give_up(self, e: RemoteError, attempt: int) -> bool:
        return not e.retryable or attempt >= self.t.attempts - 1 or (self.fail_fast and _hung(e))

    def _wait(self, e: RemoteError, attempt: int, what: str) -> float:
        self.retries += 1
        wait = delay(attempt, self.t.backoff, self.t.backoff_cap, e.retry_after, e.url or what)
        log.info("retrying %s in %.1fs (attempt %d): %s", what, wait, attempt + 2, e)
        return wait

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(self.t.attempts):
            try:
                return await fn()
            except RemoteError as e:
                if self._give_up(e, attempt):
                    raise
                await asyncio.sleep(self._wait(e, attempt, what))
        raise AssertionError("unreachable")

    async def _stream(self, open_stream: Callable[[], AsyncGenerator[S, None]],
                      what: Callable[[], str]) -> AsyncGenerator[S, None]:
        """``_call`` for a stream: opened again after a retryable failure; the caller's
        ``open_stream`` says where to go on from (a read's offset)."""
        for attempt in range(self.t.attempts):
            stream = open_stream()
            try:
                async for item in stream:
                    yield item
                return
            except RemoteError as e:
                if self._give_up(e, attempt):
                    raise
                wait = self._wait(e, attempt, what())
            finally:
                await stream.aclose()
            await asyncio.sleep(wait)

    async def read(self, key: Key, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        pos = start
        stream = self._stream(lambda: self.inner.read(key, pos, end), lambda: f"{self.describe(key)} from byte {pos}")
        try:
            async for chunk in stream:
                pos += len(chunk)
                yield chunk
        finally:
            await stream.aclose()

    def read_into(self, key: Key, start: int, end: int, sink: Callable[[memoryview], bool]) -> None:
        tally = _Tally(sink, start)
        for attempt in range(self.t.attempts):
            try:
                self.inner.read_into(key, tally.pos, end, tally)
                return
            except RemoteError as e:
                if tally.stopped or tally.pos >= end or self._give_up(e, attempt) or self.inner.ranges is False:
                    raise  # a range answered whole goes back to the event loop's path (transfer/download.py)
                if not sink(memoryview(b"")):  # asked first: the reader may be gone (a cancelled run)
                    raise
                time.sleep(self._wait(e, attempt, f"{self.describe(key)} from byte {tally.pos}"))

    async def stat(self, key: Key) -> int | None:
        return await self._call(f"HEAD {self.describe(key)}", lambda: self.inner.stat(key))

    async def write(self, key: Key, source: Path | bytes | Paced) -> None:
        await self._call(f"PUT {self.describe(key)}", lambda: self.inner.write(key, source))

    async def read_index(self, model: str) -> tuple[bytes, str] | None:
        return await self._call(f"GET index of {model}", lambda: self.inner.read_index(model))

    async def write_index(self, model: str, data: bytes, expect: str | None) -> None:
        # After an ambiguous failure the first attempt may have applied: the retry then sees a
        # Conflict, and the publisher's compare-and-swap re-reads the index (ops/push.py).
        await self._call(f"PUT index of {model}", lambda: self.inner.write_index(model, data, expect))

    async def missing(self, keys: list[Key], jobs: int = 8) -> set[Key]:
        return await self._call(f"missing objects on {self.url}", lambda: self.inner.missing(keys, jobs))

    async def listing(self, under: str, skip: Skip | None = None) -> AsyncGenerator[Listed, None]:
        # A listing started again gives what it gave before: passed by key, since keys ascend
        # (Remote.listing), where a set of those seen held 1M keys on a large remote. Only after
        # a restart: a first listing is passed on whole, in whatever order a server gives it.
        last: str | None = None  # the greatest key given
        given: str | None = None  # what the listing now running gives again: up to here

        def again() -> AsyncGenerator[Listed, None]:
            nonlocal given
            given = last
            return self.inner.listing(under, skip)

        stream = self._stream(again, lambda: f"listing {self.describe(under)}")
        try:
            async for item in stream:
                if given is not None and item.key <= given:
                    continue
                if last is None or item.key > last:
                    last = item.key
                yield item
        finally:
            await stream.aclose()

    async def delete(self, rel: str) -> None:
        await self._call(f"DELETE {self.describe(rel)}", lambda: self.inner.delete(rel))

    async def put_small(self, rel: str, data: bytes) -> bool:
        tried = False

        async def once() -> bool:
            nonlocal tried
            created = await self.inner.put_small(rel, data)
            # a retry after an ambiguous failure finds the object our first attempt created (names
            # of such objects are unique to their writer: remotes/locks.py)
            ok = created or tried
            tried = True
            return ok

        return await self._call(f"PUT {self.describe(rel)}", once)

    async def now(self) -> float:
        return await self._call(f"clock of {self.url}", self.inner.now)

    async def looks_like_remote(self) -> bool:
        return await self._call(f"HEAD {self.url}", self.inner.looks_like_remote)


class MirrorsFailed(RemoteError):
    """Every mirror failed; ``errors`` holds each one's error (with its URL and status)."""

    def __init__(self, message: str, errors: list[RemoteError]) -> None:
        first = errors[0]
        super().__init__(message, url=first.url, status=next((e.status for e in errors if e.status), None),
                         digest=first.digest, retryable=any(e.retryable for e in errors),
                         retry_after=first.retry_after)
        self.errors = errors


class Mirrors(Remote):
    """Remotes tried in order (module docstring). Writes go to the first."""

    def __init__(self, remotes: list[Remote]) -> None:
        if not remotes:
            raise InvalidInput("no remote")
        self.remotes = list(remotes)
        self.url = self.remotes[0].url
        self.demoted: set[int] = set()  # positions of mirrors that failed before answering, this run
        self.distrusted: set[int] = set()  # ... that served bytes which did not verify: tried after all others
        self._served: dict[str, set[int]] = {}  # an object's path: the mirrors its bytes came from, this run
        self.listable, self.uploads = self.remotes[0].listable, self.remotes[0].uploads
        self.threaded_reads = all(r.threaded_reads for r in self.remotes)
        self.bounded_reads = any(r.bounded_reads for r in self.remotes)
        for r in self.remotes:
            r.hurry(len(self.remotes) > 1)

    # what the run knows of its mirrors ---------------------------------------------------------

    def order(self) -> list[Remote]:
        rank = {i: (i in self.distrusted, i in self.demoted) for i in range(len(self.remotes))}
        return [self.remotes[i] for i in sorted(rank, key=lambda i: rank[i])]  # stable: the given order

    def _demote(self, r: Remote, e: BaseException) -> None:
        i = self.remotes.index(r)
        if i not in self.demoted and len(self.remotes) > 1:
            self.demoted.add(i)
            log.warning("%s did not answer (%s); trying it last for the rest of this run", r.url, e)

    @contextlib.contextmanager
    def _turn(self, r: Remote, last: bool) -> Iterator[None]:
        """One call's go at ``r``. The last mirror, when no other has answered this call, gets its
        retries and full time limits back; a mirror tried after another said "not here" does not
        (an absent object costs one short wait on a hung mirror, not its full timeouts)."""
        if last and len(self.remotes) > 1:
            r.hurry(False)
        try:
            yield
        finally:
            if last and len(self.remotes) > 1:
                r.hurry(True)

    @property
    def ranges(self) -> bool | None:
        """True only if every mirror in use serves ranges: a part split for one must be served by
        all (a demoted one, tried last, that does not is met by the engine's RangesIgnored)."""
        got = [r.ranges for i, r in enumerate(self.remotes) if i not in self.demoted] or [r.ranges for r in self.remotes]
        return False if False in got else True if all(g is True for g in got) else None

    @ranges.setter
    def ranges(self, value: bool | None) -> None:
        for r in self.remotes:
            r.ranges = value

    @property
    def retries(self) -> int:
        return sum(getattr(r, "retries", 0) for r in self.remotes)

    def backend(self) -> Remote:
        return self.remotes[0].backend()

    async def probe_ranges(self, key: Key) -> None:
        """One byte of ``key`` from each mirror in use that has not told yet; one that does not
        answer is demoted here, before any part is planned around it (a demoted one is not asked:
        ``ranges`` leaves it out)."""
        for i, r in enumerate(self.remotes):
            if r.ranges is not None or i in self.demoted:
                continue
            try:
                async for _ in r.read(key, 0, 1):
                    pass
            except RemoteError as e:
                if _hung(e):
                    self._demote(r, e)
                log.debug("range probe of %s failed: %s", r.describe(key), e)
            except CasError as e:
                log.debug("range probe of %s failed: %s", r.describe(key), e)

    def describe(self, key: Key | str) -> str:
        return self.remotes[0].describe(key)

    def _took(self, r: Remote, key: Key) -> None:
        self._served.setdefault(key.path, set()).add(self.remotes.index(r))

    def sources(self, key: Key) -> list[str]:
        served = sorted(self._served.get(key.path, ()))
        return [self.remotes[i].describe(key) for i in served] or [self.describe(key)]

    def local_file(self, key: Key) -> Path | None:
        """The first mirror in use, if it holds ``key`` as a local file (then the bytes' source,
        for messages and distrust); never one that served bytes which did not verify."""
        first = self.order()[0]
        if self.remotes.index(first) in self.distrusted:
            return None
        path = first.local_file(key)
        if path is not None:
            self._took(first, key)
        return path

    def distrust(self, key: Key) -> bool:
        """The mirrors that served ``key`` are tried after every other for the rest of the run
        (a stale or corrupt copy is rarely alone); True if a mirror not yet distrusted is left."""
        served = self._served.pop(key.path, set())
        for i in served - self.distrusted:
            log.warning("%s served bytes of %s that did not verify; trying it last for the rest of this run",
                        self.remotes[i].url, key.digest)
        self.distrusted |= served
        return bool(served) and len(self.distrusted) < len(self.remotes)

    # reading: each mirror in turn ---------------------------------------------------------------

    def _failed(self, what: str, errors: list[RemoteError], not_found: list[NotFound]) -> Exception:
        if not errors:
            return NotFound(f"{what}: " + "; ".join(str(e) for e in not_found)) if len(not_found) > 1 else not_found[0]
        if not_found and all(_hung(e) for e in errors):  # every mirror that answered said "not here"
            silent = ", ".join(e.url or "?" for e in errors)
            return NotFound(f"{what}: " + "; ".join(str(e) for e in not_found) + f" ({silent} did not answer)")
        if len(errors) == 1 and not not_found:
            return errors[0]
        parts = [f"{e.url or '?'}: {e}" for e in errors] + [str(e) for e in not_found]
        return MirrorsFailed(f"{what} failed on every mirror: " + "; ".join(parts), errors)

    async def _each(self, what: str, fn: Callable[[Remote], Awaitable[T]], *, none_is_missing: bool = False) -> T:
        errors: list[RemoteError] = []
        not_found: list[NotFound] = []
        absent = False  # a mirror answered that it has no such object
        order = self.order()
        for n, r in enumerate(order):
            with self._turn(r, n == len(order) - 1 and not (absent or not_found)):
                try:
                    got = await fn(r)
                except NotFound as e:
                    not_found.append(e)
                    continue
                except RemoteError as e:
                    errors.append(e)
                    if _hung(e):
                        self._demote(r, e)
                    continue
            if got is None and none_is_missing:
                absent = True
                if n < len(order) - 1:
                    continue
            return got
        if none_is_missing and (not errors or (absent and all(_hung(e) for e in errors))):
            return None  # type: ignore[return-value]
        raise self._failed(what, errors, not_found)

    async def stat(self, key: Key) -> int | None:
        return await self._each(f"HEAD {key.path}", lambda r: r.stat(key), none_is_missing=True)

    async def read_index(self, model: str) -> tuple[bytes, str] | None:
        return await self._each(f"the versions of {model}", lambda r: r.read_index(model), none_is_missing=True)

    async def looks_like_remote(self) -> bool:
        for r in self.order():
            try:
                if await r.looks_like_remote():
                    return True
            except RemoteError:
                continue
        return False

    async def read(self, key: Key, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        pos = start
        errors: list[RemoteError] = []
        not_found: list[NotFound] = []
        order = self.order()
        for n, r in enumerate(order):
            with self._turn(r, n == len(order) - 1 and not not_found):
                stream = r.read(key, pos, end)
                got = pos
                try:
                    async for chunk in stream:
                        if pos == got:
                            self._took(r, key)  # bytes of ``key`` from ``r``: once per stream
                        pos += len(chunk)
                        yield chunk
                    return
                except NotFound as e:
                    not_found.append(e)
                except RemoteError as e:
                    errors.append(e)
                    if _hung(e):
                        self._demote(r, e)
                    if n < len(order) - 1:
                        log.info("%s failed at byte %d (%s); going on from %s", r.describe(key), pos, e,
                                 order[n + 1].url)
                finally:
                    await stream.aclose()
        raise self._failed(f"GET {key.path}", errors, not_found)

    def read_into(self, key: Key, start: int, end: int, sink: Callable[[memoryview], bool]) -> None:
        tally = _Tally(sink, start)
        errors: list[RemoteError] = []
        not_found: list[NotFound] = []
        order = self.order()
        for n, r in enumerate(order):
            with self._turn(r, n == len(order) - 1 and not not_found):
                before = tally.pos
                try:
                    r.read_into(key, tally.pos, end, tally)
                    return
                except NotFound as e:
                    not_found.append(e)
                except RemoteError as e:
                    if tally.stopped or r.ranges is False:
                        raise
                    errors.append(e)
                    if _hung(e):
                        self._demote(r, e)
                finally:
                    if tally.pos > before:
                        self._took(r, key)
        raise self._failed(f"GET {key.path}", errors, not_found)

    # writing and housekeeping: the first remote ------------------------------------------------

    async def write(self, key: Key, source: Path | bytes | Paced) -> None:
        await self.remotes[0].write(key, source)

    async def write_index(self, model: str, data: bytes, expect: str | None) -> None:
        await self.remotes[0].write_index(model, data, expect)

    async def missing(self, keys: list[Key], jobs: int = 8) -> set[Key]:
        return await self.remotes[0].missing(keys, jobs)

    def listing(self, under: str, skip: Skip | None = None) -> AsyncGenerator[Listed, None]:
        return self.remotes[0].listing(under, skip)

    async def delete(self, rel: str) -> None:
        await self.remotes[0].delete(rel)

    async def put_small(self, rel: str, data: bytes) -> bool:
        return await self.remotes[0].put_small(rel, data)

    async def now(self) -> float:
        return await self.remotes[0].now()

    async def stale_uploads(self, older_than: float) -> list[tuple[str, str, float]]:
        return await self.remotes[0].stale_uploads(older_than)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await self.remotes[0].abort_upload(key, upload_id)

    async def close(self) -> None:
        for r in self.remotes:
            await r.close()


def stack(remotes: Remote | list[Remote], tuning: Tuning | None = None) -> Mirrors:
    """The one way a command gets its remote: each backend guarded and retried, all of them as
    mirrors. A ``Mirrors`` passes through unchanged (the layers are built once)."""
    if isinstance(remotes, Mirrors):
        return remotes
    items = [remotes] if isinstance(remotes, Remote) else list(remotes)
    if len(items) == 1 and isinstance(items[0], Mirrors):
        return items[0]
    t = tuning or Tuning.from_env()
    return Mirrors([r if isinstance(r, Layer) else Retrying(Guarded(r, t), t) for r in items])
