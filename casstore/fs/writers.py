"""Who wrote a temp, lock or partial file, and whether that writer is gone (docs/architecture.md,
invariant 6): the one rule GC, the download engine and `cas doctor` apply.

A writer is ``<host>.<pid>.<random>``; it is part of the name of every file it leaves in ``tmp/``
(temp files may carry a prefix before it), and lock files hold ``{"host", "pid", "time"}``.
"""

from __future__ import annotations

import os
from pathlib import Path

HOST = os.uname().nodename.replace("/", "_")[:32]
DAY = 86400.0


def process_alive(host: str, pid: int) -> bool | None:
    """Is that writer alive? None when we cannot tell (another host)."""
    if host != HOST:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_id() -> str:
    return f"{HOST}.{os.getpid()}.{os.urandom(6).hex()}"


def temp_name(prefix: str = "") -> str:
    return f"{prefix}{writer_id()}.tmp"


# What temp names may start with before the writer id (temp_name's callers).
PREFIXES = ("view.", "clock.", "put.", "cas.")


def parse_writer(name: str) -> tuple[str, int] | None:
    """(host, pid) from a writer id, with or without a known prefix and suffix; None if it has none.
    Hosts are compared exactly: another host whose name merely ends like ours is another host."""
    for suffix in (".tmp", ".json", ".part", ".progress", ".lock"):
        name = name.removesuffix(suffix)
    for prefix in PREFIXES:
        if name.startswith(prefix) and name.removeprefix(prefix).startswith(HOST + "."):
            name = name.removeprefix(prefix)
            break
    bits = name.rsplit(".", 2)
    if len(bits) != 3 or not bits[1].isdigit():
        return None
    return bits[0], int(bits[1])


def gone(writer: tuple[str, int] | None, last_seen: float, now: float, silence: float) -> bool:
    """The rule: a writer on this host is gone when its pid is; one elsewhere (or unknown) when it
    has been silent (``now - last_seen``, both by the store's clock) for longer than ``silence``."""
    alive = process_alive(*writer) if writer is not None else None
    if alive is not None:
        return not alive
    return now - last_seen > silence


def read_holder(path: Path) -> dict | None:
    """The host/pid/time record of a lock file, or None if it is unreadable or malformed."""
    from casstore.errors import InvalidInput
    from casstore.model.strictjson import load_file

    try:
        h = load_file(path, what="lock record", max_bytes=4096, follow_symlinks=False, floats=True)
    except (OSError, InvalidInput):
        return None
    if not isinstance(h, dict) or not isinstance(h.get("host"), str) or type(h.get("pid")) is not int:
        return None
    return h


def holder_of(holder: dict | None) -> tuple[str, int] | None:
    return (holder["host"], holder["pid"]) if holder else None


def describe(holder: dict | None) -> str:
    return f"pid {holder['pid']} on {holder['host']}" if holder else "another process"
