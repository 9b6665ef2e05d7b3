"""Version tags and current pointers, updated without locks.

A tag is a file created with link(2), which fails rather than replaces, so two writers of one
tag cannot both win. The current pointer is the newest record in ``history/``; a switch creates
record ``seq + 1`` the same way, so it is a compare-and-swap on the sequence number it read: a
lost race is a ``Conflict``, never a silent overwrite. Records are never rewritten.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from casstore.errors import Conflict, CorruptStore, InvalidInput
from casstore.fs.atomic import fsync_dir, makedirs, read_settled, write_file
from casstore.model.digest import Digest
from casstore.model.history import UNSET, Switch
from casstore.model.keys import tag_data, tag_digest
from casstore.model.names import model_from_part, validate_version
from casstore.store.layout import Layout

_SEQ_DIGITS = 12
HISTORY_KEEP = 100  # records of each model kept by GC (`cas log` shows at most these)


def _user() -> str:
    import getpass  # only when a switch is recorded

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


class Refs:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    # tags -------------------------------------------------------------------------------------

    def models(self) -> list[str]:
        try:
            names = os.listdir(self.layout.refs)
        except FileNotFoundError:
            return []
        out = []
        for n in sorted(names):
            try:
                out.append(model_from_part(n))
            except InvalidInput:
                continue  # foreign file; `cas doctor` reports it
        return out

    def tags(self, model: str, also: Iterable[str] = ()) -> dict[str, Digest]:
        """The model's tags as listed, and ``also`` these versions opened by name whether listed
        or not (a NAS client may list a directory from its cache, but opens a name at the server)."""
        return self._read_dir(self.layout.tags(model), also)

    def _read_dir(self, d: Path, also: Iterable[str] = ()) -> dict[str, Digest]:
        """``version -> digest`` of the ref files in ``d`` (tags, partial versions)."""
        try:
            names = set(os.listdir(d))
        except FileNotFoundError:
            names = set()
        names.update(also)
        out = {}
        for v in sorted(names):
            try:
                validate_version(v)
            except InvalidInput:
                continue  # temp files and foreign names
            if (dg := self._read_tag(os.path.join(d, v))) is not None:
                out[v] = dg
        return out

    def _read_tag(self, path: str | Path) -> Digest | None:
        try:
            return read_settled(path, tag_digest)
        except FileNotFoundError:
            return None
        except InvalidInput as e:
            raise CorruptStore(f"corrupt tag file {path}: {e}") from e

    def get_tag(self, model: str, version: str) -> Digest | None:
        return self._read_tag(self.layout.tag(model, version))

    def set_tag(self, model: str, version: str, digest: Digest, *, force: bool = False) -> Digest | None:
        """Create the tag; returns the digest it replaced (only with ``force``)."""
        p = self.layout.tag(model, version)
        makedirs(p.parent)
        data = tag_data(digest)
        if write_file(p, data, self.layout.tmp):
            return None
        old = self.get_tag(model, version)
        if old == digest:
            return None
        if not force:
            raise Conflict(
                f"{model}@{version} is already published as {old}; refusing to move it to {digest} "
                "(tags never move silently; use --force to move it)"
            )
        write_file(p, data, self.layout.tmp, replace=True)
        return old

    # partial versions: what a selective fetch holds of a version (docs/format.md) --------------

    def partials(self, model: str) -> dict[str, Digest]:
        """``version -> manifest`` of the model's partial versions: each names the manifest of the
        part a selective fetch holds. Unlike a tag it may be replaced (another selection)."""
        return self._read_dir(self.layout.partials(model))

    def get_partial(self, model: str, version: str) -> Digest | None:
        return self._read_tag(self.layout.partial(model, version))

    def set_partial(self, model: str, version: str, digest: Digest) -> None:
        p = self.layout.partial(model, version)
        makedirs(p.parent)
        write_file(p, tag_data(digest), self.layout.tmp, replace=True)

    def delete_partial(self, model: str, version: str, only: Digest | None = None, *, sync: bool = True) -> None:
        """Drop the partial version (only while it names ``only``, if given). ``sync=False``: the
        caller fsyncs the directory (GC, once for many)."""
        p = self.layout.partial(model, version)
        if only is None or self._read_tag(p) == only:
            _unlink_ref(p, sync)

    def delete_tag(self, model: str, version: str, *, sync: bool = True) -> None:
        _unlink_ref(self.layout.tag(model, version), sync)

    # current pointer and history ----------------------------------------------------------------

    def history(self, model: str) -> list[Switch]:
        d = self.layout.history(model)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return []
        out = []
        for n in sorted(names):
            if _is_record(n):
                try:
                    out.append(_record(d / n))
                except FileNotFoundError:
                    continue  # compacted away since the listing
        return out

    def compact_history(self, model: str, keep: int = HISTORY_KEEP) -> int:
        """Drop all but the newest ``keep`` records, as git expires its reflog, so history does
        not grow forever and nothing reads more than ``keep`` records of a model. The current
        pointer and the recent undo stack stay; seq numbers go on from the newest."""
        d = self.layout.history(model)
        try:
            names = sorted(n for n in os.listdir(d) if _is_record(n))
        except FileNotFoundError:
            return 0
        old = names[:-keep] if len(names) > keep else []
        for n in old:
            try:
                os.unlink(d / n)
            except FileNotFoundError:
                pass
        if old:
            fsync_dir(d)
        return len(old)

    def current(self, model: str) -> Switch | None:
        """The current switch, or None: no record, or the newest unset it (model/history.py)."""
        rec = self.last(model)
        return rec if rec is not None and rec.action != UNSET else None

    def last(self, model: str) -> Switch | None:
        """The newest history record, whatever it did."""
        d = self.layout.history(model)
        try:
            names = [n for n in os.listdir(d) if _is_record(n)]
        except FileNotFoundError:
            return None
        seq = int(max(names)[:_SEQ_DIGITS]) if names else 0
        # A NAS client may serve the listing from its cache: records written since are found by
        # opening their names, which it never answers from a cache of the directory.
        while os.path.exists(d / _record_name(seq + 1)):
            seq += 1
        if seq == 0:
            return None
        return _record(d / _record_name(seq))

    def switch(
        self, model: str, version: str, manifest: Digest, *, action: str, expect: Switch | None | Literal[True] = True
    ) -> Switch:
        """Make ``version`` current, if current is still ``expect`` (True: whatever it is now;
        None: only if there is none). ``action`` UNSET: leave the model with no current version.

        Raises ``Conflict`` if another writer switched in between.
        """
        head = self.last(model) if expect is True or expect is None else expect
        if expect is None and head is not None and head.action != UNSET:
            raise Conflict(f"{model} has a current version ({head.version}) since this was planned; nothing was changed")
        seq = (head.seq if head else 0) + 1
        rec = Switch(
            seq=seq,
            version=version,
            manifest=manifest,
            previous=head.version if head and head.action != UNSET else None,
            action=action,
            time=time.time(),
            host=os.uname().nodename,
            pid=os.getpid(),
            user=_user(),
        )
        d = self.layout.history(model)
        makedirs(d)
        if not write_file(d / _record_name(seq), rec.encode(), self.layout.tmp):
            now = self.current(model)
            raise Conflict(
                f"current version of {model} changed while switching to {version} "
                f"(now {now.version if now else 'none'}, by {now.user if now else '?'}@{now.host if now else '?'}); "
                "nothing was changed, try again"
            )
        return rec


def _unlink_ref(p: Path, sync: bool) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        return
    if sync:
        fsync_dir(p.parent)


def _record_name(seq: int) -> str:
    return f"{seq:0{_SEQ_DIGITS}d}.json"


def _is_record(name: str) -> bool:
    return len(name) == _SEQ_DIGITS + 5 and name.endswith(".json") and name[:_SEQ_DIGITS].isdigit()


def _record(p: Path) -> Switch:
    """A history record of this store; one that does not parse is damage to the store (exit 4),
    not bad input."""
    try:
        return read_settled(p, lambda data: Switch.decode(data, str(p)))
    except InvalidInput as e:
        raise CorruptStore(str(e)) from e
