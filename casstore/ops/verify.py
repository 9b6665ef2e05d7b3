"""`cas verify`: re-hash blobs (or check sizes), quarantine corrupt ones, check refs and formats.

A corrupt blob is moved out of ``blobs/`` so the store never serves it again; a later fetch or
add brings a good copy back. The report names every version and path that used it.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from casstore.errors import CasError, UnsafeDestination
from casstore.fs.mounts import is_network
from casstore.model import formats
from casstore.model.digest import ALGORITHM, Digest, hash_file, hash_file_sha256
from casstore.model.manifest import EntryRecords, Manifest, entry_records
from casstore.ops import quickcheck
from casstore.ops.checkout import view_problem
from casstore.progress import Ticker
from casstore.store import stamps
from casstore.store.hashcache import HashCache
from casstore.store.objects import Store

log = logging.getLogger("casstore")


@dataclass
class Problem:
    kind: str  # corrupt | wrong-size | missing | bad-ref | bad-manifest | unsafe | bad-view | format | sha256
    what: str  # digest, ref or path
    detail: str
    used_by: list[str] = field(default_factory=list)  # "model@version:path"
    size: int | None = None  # a blob's size per its manifests, for --repair

    def to_json(self) -> dict:
        return {"kind": self.kind, "what": self.what, "detail": self.detail, "used_by": self.used_by}

    @property
    def repairable(self) -> bool:
        return self.kind in ("corrupt", "wrong-size", "missing") and self.size is not None


@dataclass
class VerifyReport:
    blobs: int = 0
    bytes: int = 0
    manifests: int = 0
    problems: list[Problem] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(p.kind != "format" for p in self.problems)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "manifests": self.manifests,
            "problems": [p.to_json() for p in self.problems],
            "quarantined": self.quarantined,
            "elapsed": round(self.elapsed, 3),
        }


# Blobs of this size or more are hashed first, largest first (no long tail on one core); the
# rest stream through the pool by fan-out directory, a bounded number in flight.
LARGE = 16 << 20
SMALL = 1 << 20  # below this on average, a batch is checked by the one thread of small blobs
_BATCH = 256  # small blobs per task
_IN_FLIGHT = 4  # tasks per worker thread
HELPER_MIN = 20_000  # small blobs: fewer are not worth a helper process's start (~50 ms)
HELPER_MANIFESTS = 200  # manifests: as many are ~0.06 s to read in this process


class _Refs:
    """What the manifests in scope say of each blob (its size, and with ``sha256`` the SHA-256
    each records), as packed records per fan-out directory: 40 bytes per manifest entry (73 with SHA-256s), not
    a Python object per blob, so a store of 1M blobs is checked in bounded memory. Who uses a
    blob is not kept: a problem's users are found by reading the manifests again."""

    def __init__(self, sha256: bool) -> None:
        self.sha256 = sha256
        self._by_dir: dict[str, bytearray] = {}
        self.entries = 0
        self.large: dict[str, tuple[int, frozenset[str]]] = {}  # the blobs of LARGE bytes or more, as of_dir says

    def add(self, records: EntryRecords) -> None:
        """A manifest's entries, a record each in its directory's bytes."""
        self.entries += len(records.hexes)
        if records.sizes and max(records.sizes) >= LARGE:
            for h, size, sha in zip(records.hexes, records.sizes, records.sha256s):
                if size >= LARGE:
                    self.add_large(h, size, sha if self.sha256 else None)
        if not self.sha256:
            quickcheck.pack(records.hexes, records.sizes, self._by_dir)
            return
        for h, size, sha in zip(records.hexes, records.sizes, records.sha256s):
            self._by_dir.setdefault(h[:2], bytearray()).extend(
                bytes.fromhex(h) + size.to_bytes(8, "little") + (b"\1" + bytes.fromhex(sha) if sha is not None else bytes(33)))

    def add_large(self, h: str, size: int, sha: str | None = None) -> None:
        shas = self.large[h][1] if h in self.large else frozenset()
        self.large[h] = (size, shas | {sha} if sha is not None else shas)

    def add_packed(self, sub: str, records: bytes) -> None:
        """Records of ``blobs/<sub>`` as a helper packs them (ops/quickcheck.manifests)."""
        assert not self.sha256, "a helper packs no SHA-256"
        self.entries += len(records) // 40
        self._by_dir.setdefault(sub, bytearray()).extend(records)

    def dirs(self) -> list[str]:
        return sorted(self._by_dir)

    def of_dir(self, sub: str) -> dict[str, tuple[int, frozenset[str]]]:
        """hex -> (size, the SHA-256s manifests record for it), for one ``blobs/XX``."""
        data = self._by_dir.get(sub, b"")
        if not self.sha256:  # the common case, in C-level loops
            none: frozenset[str] = frozenset()
            return {d.hex(): (n, none) for d, n in struct.iter_unpack("<32sQ", data)}
        step = 73
        out: dict[str, tuple[int, frozenset[str]]] = {}
        for i in range(0, len(data), step):
            h = data[i:i + 32].hex()
            size = int.from_bytes(data[i + 32:i + 40], "little")
            shas = out.get(h, (0, frozenset()))[1]
            if self.sha256 and data[i + 40]:
                shas = shas | {data[i + 41:i + 73].hex()}
            out[h] = (size, shas)
        return out


def verify(
    store: Store, model: str | None = None, version: str | None = None, *, fast: bool = False, jobs: int = 2,
    sha256: bool = False, progress=None,
) -> VerifyReport:
    """Re-hash (or, ``fast``, size) every blob in scope. ``progress(done, total)``: bytes checked.
    ``sha256`` also checks the SHA-256 manifests record (a mismatch with the right BLAKE3 digest
    is the manifest's lie, not a corrupt blob: reported, never quarantined). Memory does not grow
    with the number of blobs beyond 40 bytes per manifest entry (``_Refs``)."""
    t0 = time.monotonic()
    report = VerifyReport()
    scope = _scope(store, model, version)
    refs = _Refs(sha256)
    format_checks: dict[Digest, str] = {}
    # Helper processes read the manifests, then check the small blobs (ops/quickcheck.py); for
    # fewer manifests than HELPER_MANIFESTS they start after the manifests, if there are blobs
    # enough for them.
    helpers = _helpers(store, fast or sha256, len(scope) >= HELPER_MANIFESTS)
    try:
        mine = _read_by_helpers(store, helpers, scope, refs, format_checks, report) if helpers else list(scope)
        for md in mine:
            names = scope[md]
            view_path = store.layout.view(md)
            try:
                data = store.manifest_bytes(md)
                # Its entries without the path and tree checks of a whole decode (a quarter of its
                # cost; the bytes match the digest put_manifest wrote after one), unless a view of
                # it is there to check or the quick parse finds something a decode must name.
                where = str(store.layout.manifest(md))
                records = entry_records(data, source=where)
                m = Manifest.decode(data, source=where) if records is None or os.path.lexists(view_path) else None
            except CasError as e:
                kind = "bad-ref" if names else "bad-manifest"
                report.problems.append(Problem(kind, str(md), str(e), names))
                continue
            report.manifests += 1
            if m is not None:
                why = view_problem(store, view_path, m)
                if why not in (None, "absent"):
                    report.problems.append(Problem("bad-view", str(view_path), f"{view_path} {why}; `cas path "
                                                   f"{m.name}@{m.version}` builds it again", names))
                records = EntryRecords([e.digest.hex for e in m.entries], [e.size for e in m.entries],
                                       [e.path for e in m.entries], [e.sha256 for e in m.entries])
            assert records is not None
            refs.add(records)
            for h, path in zip(records.hexes, records.paths):
                if path.endswith(formats.CHECKED):
                    format_checks.setdefault(Digest(h), path)
    except BaseException:
        _close(helpers)
        raise

    if refs.entries < HELPER_MIN:  # the manifests' entries stand for the small blobs, listed later
        _close(helpers)
    elif not helpers:
        helpers = _helpers(store, fast, True)
    try:
        for link in store.unsafe_links():
            report.problems.append(Problem("unsafe", str(link), f"{link} is a symlink, which casstore never makes in a "
                                           "store: whatever it points to is not the store's; move it away"))
        cache = HashCache()
        blobs = os.path.join(store.layout.blobs, "")

        def check(h: str, size: int | None, shas: frozenset[str]) -> Problem | None:
            path = f"{blobs}{h[:2]}/{h}"
            what = f"{ALGORITHM}:{h}"
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    # a symlink or device under blobs/ never came from casstore: its bytes are not
                    # the store's, whatever they hash to
                    return Problem("corrupt", what, f"{path} is not a regular file")
                if size is not None and st.st_size != size:
                    return Problem("wrong-size", what, f"{path} has {st.st_size} bytes, manifests say {size}")
                # --fast: sizes and stamps (store/stamps.py); only a blob whose stamp says it may have
                # changed (written through a link, or from a store before stamps) is hashed
                if shas:
                    got, got_size, sha = hash_file_sha256(path)
                    if got.hex == h and shas - {sha}:
                        return Problem("sha256", what, sha)  # the detail is written once its users are known
                elif fast and (stamps.is_stamped(st) or (cached := cache.get(st)) is not None and cached.hex == h):
                    return None
                else:
                    got, got_size = hash_file(path)
            except OSError as e:
                return Problem("corrupt", what, f"cannot read {path}: {e.strerror}")
            if got.hex != h:
                why = "" if stamps.is_stamped(st) else " (its mtime says it was written after it was stored)"
                return Problem("corrupt", what, f"{path} hashes to {got}{why}")
            if size is not None and got_size != size:
                return Problem("wrong-size", what, f"{path} has {got_size} bytes, manifests say {size}")
            _restamp(path, st, h)
            return None

        def _restamp(path: str, st: os.stat_result, h: str) -> None:
            if not stamps.is_stamped(st):
                try:
                    # right bytes: the mark again, at the second it already had (a check is no use:
                    # stamped now, every blob would look fresh to GC for its grace period)
                    stamps.stamp(path, st.st_mtime, st.st_atime_ns)
                except OSError:
                    cache.put(st, _digest(h))  # a store this process may not change: remembered on this machine

        def check_small(h: str, size: int | None, shas: frozenset[str]) -> Problem | None:
            """``check`` of a small blob in one open, fstat and read (ops/quickcheck.py); anything
            but right bytes goes through ``check``, which says what is wrong."""
            if shas or fast:
                return check(h, size, shas)
            path = f"{blobs}{h[:2]}/{h}"
            status, st = quickcheck.quick(path, h, size, LARGE)
            if status == quickcheck.ODD:
                return check(h, size, shas)
            if status == quickcheck.RESTAMP and st is not None:
                _restamp(path, st, h)
            return None

        def by_helper(items: list, fut) -> list[Problem | None]:
            """A helper's answer to a batch as ``check_small``'s; the batch checked here if the
            helper is gone (and no more batches go to helpers)."""
            try:
                flags = fut.result()
            except (OSError, EOFError) as e:
                if not broken:
                    log.warning("verify: checking the small blobs in this process: %s", e)
                broken.append(e)
                return run(check_small, items)
            if not flags:  # every blob right: the common case, without a loop over the batch
                return [None] * len(items)
            out: list[Problem | None] = []
            for h, size, shas in items:
                flag = flags.get(h)
                if flag is not None and flag[0] == "R":  # right bytes, unstamped: stamped if still as it was seen
                    path = f"{blobs}{h[:2]}/{h}"
                    try:
                        st = os.stat(path, follow_symlinks=False)
                    except OSError:
                        st = None
                    if st is not None and (st.st_ino, st.st_size, st.st_mtime_ns) == tuple(map(int, flag[1:])):
                        _restamp(path, st, h)
                        flag = None
                out.append(None if flag is None else check(h, size, shas))
            return out

        # One pass, by fan-out directory: what is there, what is missing, and the small blobs in
        # batches as each directory is listed, so that the helpers check one while the next is
        # listed (two passes left them idle for the first: 0.19 s of 1.3 s at 100k blobs). The
        # large blobs the manifests name go first, largest first; one no manifest names, when
        # its directory is listed.
        dirs = sorted(set(store.blob_dirs())) if model is None else refs.dirs()
        unlisted = set(refs.dirs()) - set(dirs)  # behind a symlinked blobs/XX: reported unsafe, never read
        listed = set(dirs)
        large = sorted(((size, h) for h, (size, _) in refs.large.items() if h[:2] in listed), reverse=True)
        big = {h for _, h in large}
        none: frozenset[str] = frozenset()
        for sub in sorted(unlisted):
            for h, (size, _) in refs.of_dir(sub).items():
                report.problems.append(Problem("missing", f"{ALGORITHM}:{h}", "blob is not in the store", size=size))
        broken: list[Exception] = []
        tick = Ticker(progress)
        bad: list[str] = []
        verbose = log.isEnabledFor(logging.INFO)

        def batches():
            """(check, items, bytes) tasks: each large blob alone, small ones by the hundred (a
            Future per blob cost more than hashing it). The bytes to check grow as they are
            listed (``tick``'s total)."""
            for size, h in large:
                if os.path.lexists(f"{blobs}{h[:2]}/{h}"):  # a missing one: its directory's pass says so
                    tick(0, size)
                    yield check, [(h, *refs.large[h])], size
            for sub in dirs:
                wanted = refs.of_dir(sub)
                here = _names(store, sub, wanted, listed=model is None)
                for h in sorted(wanted.keys() - here):
                    report.problems.append(Problem("missing", f"{ALGORITHM}:{h}", "blob is not in the store",
                                                   size=wanted[h][0]))
                report.blobs += len(here)
                part: list = []
                weight = 0
                for h in sorted(here):
                    named = wanted.get(h)
                    size, shas = named if named is not None else (_lstat_size(f"{blobs}{sub}/{h}"), none)
                    report.bytes += size
                    if h in big:
                        continue
                    if size >= LARGE:  # no manifest names it
                        tick(0, size)
                        yield check, [(h, None, none)], size
                        continue
                    part.append((h, size if named is not None else None, shas))
                    weight += size
                    if len(part) >= _BATCH or weight >= LARGE:
                        tick(0, weight)
                        yield check_small, part, weight
                        part, weight = [], 0
                if part:
                    tick(0, weight)
                    yield check_small, part, weight

        def run(fn, items: list) -> list[Problem | None]:
            return [fn(h, size, shas) for h, size, shas in items]

        def done(items: list, weight: int, fut) -> None:
            tick(weight)
            problems = fut.result()
            if not verbose and not any(problems):
                return
            for (h, size, _), problem in zip(items, problems):
                if verbose:
                    log.info("%s %s: %s", "sized" if fast else "hashed", h, "ok" if problem is None else problem.kind)
                if problem is None:
                    continue
                problem.size = size
                report.problems.append(problem)
                if problem.kind != "sha256":  # the bytes are right: nothing to quarantine
                    bad.append(h)

        # Small blobs on a local disk are checked by one thread: there the GIL, not the disk, is the
        # limit, and two threads took twice as long as one (200k blobs: 5.1 s against 2.4 s). On a
        # network filesystem each open is a round trip, which ``jobs`` threads overlap.
        threads = max(1, jobs) if is_network(store.root) else 1
        with ThreadPoolExecutor(max(1, jobs)) as pool, ThreadPoolExecutor(threads) as small:
            window: deque = deque()
            for fn, items, weight in batches():
                # a batch of tiny blobs is the GIL's work (the helper process's, if there is one);
                # one of a few MiB each is blake3's (off the GIL)
                tiny = fn is check_small and weight < len(items) * SMALL
                if tiny and helpers and not broken and not (sha256 and any(shas for *_, shas in items)):
                    helpers.rotate()  # the batches dealt in turn
                    try:
                        window.append((items, weight, _Answer(by_helper, items,
                                                              helpers[0].submit([(h, n) for h, n, _ in items]))))
                    except OSError as e:
                        broken.append(e)
                        window.append((items, weight, small.submit(run, fn, items)))
                else:
                    window.append((items, weight, (small if tiny else pool).submit(run, fn, items)))
                if len(window) >= _IN_FLIGHT * max(1, jobs):
                    done(*window.popleft())
            while window:
                done(*window.popleft())
    finally:
        _close(helpers)
    tick(max(0, report.bytes - tick.done), max(0, report.bytes - tick.total))
    _name_users(store, scope, report.problems)
    # Every corrupt blob is in the report before any is moved: a failure below cannot hide one.
    for h in bad:
        d = _digest(h)
        try:
            report.quarantined.append(str(_quarantine(store, d, store.blob_path(d))))
        except OSError as e:
            p = next(x for x in report.problems if x.what == str(d))
            report.problems.append(Problem("corrupt", str(d), f"could not move {store.blob_path(d)} to quarantine: "
                                           f"{e.strerror}", p.used_by, p.size))

    if not fast:
        for d, rel in format_checks.items():
            if d.hex[:2] not in unlisted and store.has_blob(d):
                for finding in formats.check_file(store.blob_path(d), rel):
                    report.problems.append(Problem("format", str(d), f"{rel}: {finding}",
                                                   _users(store, scope, {str(d)})[0].get(str(d), [])))
    report.elapsed = time.monotonic() - t0
    return report


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the OS says)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class _Answer:
    """A batch's result as ``done`` takes it: ``fn(items, future)`` when asked."""

    def __init__(self, fn, items, fut) -> None:
        self._fn, self._items, self._fut = fn, items, fut

    def result(self):
        return self._fn(self._items, self._fut)


def _helpers(store: Store, fast: bool, wanted: bool) -> deque[quickcheck.Helper]:
    """A helper process per core (ops/quickcheck.py), where they pay: many manifests or small
    blobs (``wanted``), more than one core, a local disk (on a network filesystem ``jobs``
    threads overlap the round trips instead)."""
    out: deque[quickcheck.Helper] = deque()
    cores = usable_cores()
    if fast or not wanted or cores < 2 or is_network(store.root):
        return out
    blobs, manifests = (os.path.join(p, "") for p in (store.layout.blobs, store.layout.root / "manifests"))
    try:
        for _ in range(min(cores, 4)):
            out.append(quickcheck.Helper(blobs, LARGE, manifests))
    except OSError as e:
        log.info("verify: fewer helper processes (%s)", e)
    return out


def _close(helpers: deque[quickcheck.Helper]) -> None:
    while helpers:
        helpers.pop().close()


def _read_by_helpers(store: Store, helpers: deque[quickcheck.Helper], scope: dict[Digest, list[str]],
                     refs: _Refs, format_checks: dict[Digest, str], report: VerifyReport) -> list[Digest]:
    """The entries of the manifests in scope, read by the helpers 32 manifests at a time; what
    is left to read here: a manifest with a view to check, one a helper did not read (anything
    wrong with it, which a decode here names) and the batches of a helper that stopped."""
    mine = [md for md in scope if os.path.lexists(store.layout.view(md))]
    skip = set(mine)
    theirs = [md for md in scope if md not in skip]
    asked: deque = deque()  # a few batches ahead per helper, so that only those answers are held

    def take(batch: list[Digest], fut) -> None:
        try:
            lines = fut.result().get("", [])
        except (OSError, EOFError):
            mine.extend(batch)
            return
        not_read = {h for kind, h, *_ in lines if kind == "X"}
        for kind, a, *rest in lines:
            if kind == "D":
                refs.add_packed(a, bytes.fromhex(rest[0]))
            elif kind == "L":
                refs.add_large(a, int(rest[0]))
            elif kind == "F":
                format_checks.setdefault(Digest(rest[0]), bytes.fromhex(rest[1]).decode())
        for md in batch:
            if md.hex in not_read:
                mine.append(md)
            else:
                report.manifests += 1

    for i in range(0, len(theirs), 32):
        batch = theirs[i:i + 32]
        helpers.rotate()
        try:
            asked.append((batch, helpers[0].submit_manifests([d.hex for d in batch])))
        except OSError:
            mine += batch
        if len(asked) >= _IN_FLIGHT * len(helpers):
            take(*asked.popleft())
    while asked:
        take(*asked.popleft())
    return mine


def _scope(store: Store, model: str | None, version: str | None) -> dict[Digest, list[str]]:
    """The manifests to check, each with the refs naming it."""
    scope: dict[Digest, list[str]] = {}
    models = [model] if model else store.refs.models()
    for mdl in models:
        tags = store.refs.tags(mdl)
        if model and not tags and store.refs.current(mdl) is None:
            store.resolve(mdl)  # raises NotFound naming the store
        if version is not None:
            d = store.refs.get_tag(mdl, version)
            if d is None:
                store.resolve(mdl, version)  # raises NotFound with the versions present
            assert d is not None
            tags = {version: d}
        for v, d in tags.items():
            scope.setdefault(d, []).append(f"{mdl}@{v}")
        cur = store.refs.current(mdl) if version is None else None
        if cur is not None:
            scope.setdefault(cur.manifest, []).append(f"{mdl} (current: {cur.version})")
    if model is None:
        for d in store.iter_manifests():
            scope.setdefault(d, [])
    return scope


def _names(store: Store, sub: str, wanted: dict, *, listed: bool) -> set[str]:
    """The blobs of ``blobs/<sub>`` in scope: all of them for a whole-store check, else those of
    ``wanted`` that are there."""
    if listed:
        try:
            return set(store.blob_names(sub))
        except FileNotFoundError:
            return set()
    return {h for h in wanted if _has_blob(store, _digest(h))}


def _digest(h: str) -> Digest:
    return next(Digest.unchecked((h,)))  # a listed name (blob_names checks them) or our own hex


def _lstat_size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _users(store: Store, scope: dict[Digest, list[str]], wanted: set[str],
           ) -> tuple[dict[str, list[str]], dict[str, dict[str, list[str]]]]:
    """"model@version:path" for each blob of ``wanted``, and who records which SHA-256 for it,
    read from the manifests again (only when there is something to report)."""
    users: dict[str, list[str]] = {}
    claims: dict[str, dict[str, list[str]]] = {}
    for md in scope:
        try:
            m = store.get_manifest(md)
        except CasError:
            continue
        for e in m.entries:
            if (key := str(e.digest)) in wanted:
                who = f"{m.name}@{m.version}:{e.path}"
                users.setdefault(key, []).append(who)
                if e.sha256 is not None:
                    claims.setdefault(key, {}).setdefault(e.sha256, []).append(who)
    return users, claims


def _name_users(store: Store, scope: dict[Digest, list[str]], problems: list[Problem]) -> None:
    """Fill in who uses each problem blob; a SHA-256 problem's detail names who records what."""
    blob_kinds = ("corrupt", "wrong-size", "missing", "sha256")
    wanted = {p.what for p in problems if p.kind in blob_kinds}
    if not wanted:
        return
    users, claims = _users(store, scope, wanted)
    for p in problems:
        if p.kind not in blob_kinds:
            continue
        p.used_by = users.get(p.what, [])
        if p.kind == "sha256":
            sha, path = p.detail, store.blob_path(Digest.parse(p.what))
            liars = {s: who for s, who in claims.get(p.what, {}).items() if s != sha}
            p.detail = (f"{path} has SHA-256 {sha}, but "
                        + "; ".join(f"{', '.join(who[:3])} record {s}" for s, who in liars.items()))


def _has_blob(store: Store, d: Digest) -> bool:
    try:
        return store.has_blob(d)
    except UnsafeDestination:
        return False  # behind a symlinked directory: reported as "unsafe", never read


def _quarantine(store: Store, d: Digest, path: Path) -> Path:
    return store.quarantine_blob(d)


async def repair(store: Store, remotes, report: VerifyReport, *, settings=None, progress=None):
    """Fetch good copies of the corrupt (now quarantined) and missing blobs ``report`` found;
    returns the download's ``Stats``, or None if nothing was repairable."""
    from casstore.transfer.download import Downloader, Settings

    wants = {Digest.parse(p.what): p.size for p in report.problems if p.repairable and p.size is not None}
    if not wants:
        return None
    return await Downloader(store, remotes, settings or Settings.from_env(), progress).fetch(wants)
