"""Who wrote a temp, lock, lease or partial file, and whether that writer is gone
(docs/architecture.md, invariant 6): the one rule GC, the download engine, remote locks and
`cas doctor` apply.

A writer is a process: its host name, pid, and where the kernel can say so, its *instance* (the
boot and pid namespace its pid belongs to: a pid means nothing outside them) and its start time
(so a reused pid is not taken for the writer). Its id, ``<host>.<pid>.<instance>-<start>-<random>``,
is part of the name of every file it leaves in ``tmp/`` (temp files may carry a prefix before
it); lock and lease records hold the same fields as JSON (``Writer.record``).

The rule: a writer whose instance is this process's is gone exactly when its pid is not running
with its start time; any other writer (another host, another container, another boot, or a
record that does not say) is gone after a silence longer than the stale period, measured on the
store's own clock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOST = os.uname().nodename.replace("/", "_")[:32]
DAY = 86400.0


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("ascii", "replace")
    except OSError:
        return None


def _instance() -> str | None:
    """The boot and pid namespace pids of this process are comparable within (Linux); None elsewhere."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    if not boot:
        return None
    from hashlib import blake2b

    return blake2b(f"{boot.strip()}:{ns}".encode(), digest_size=4).hexdigest()


def start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), or None."""
    text = _read(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    fields = text.rpartition(")")[2].split()
    try:
        return int(fields[19])  # fields after the command name start at field 3
    except (IndexError, ValueError):
        return None


INSTANCE = _instance()
_ME: Writer | None = None


@dataclass(frozen=True)
class Writer:
    host: str
    pid: int
    instance: str | None = None
    start: int | None = None

    @classmethod
    def me(cls) -> Writer:
        """This process (read from /proc once per process, not per record written)."""
        global _ME
        if _ME is None or _ME.pid != os.getpid():  # a forked child is another writer
            _ME = cls(HOST, os.getpid(), INSTANCE, start_time(os.getpid()))
        return _ME

    def record(self) -> dict:
        """The fields a lock or lease file holds (with its own ``time`` and payload)."""
        out: dict = {"host": self.host, "pid": self.pid}
        if self.instance is not None:
            out["instance"] = self.instance
        if self.start is not None:
            out["start"] = self.start
        return out

    @classmethod
    def from_record(cls, rec: object) -> Writer | None:
        if not isinstance(rec, dict) or not isinstance(rec.get("host"), str) or type(rec.get("pid")) is not int:
            return None
        inst, start = rec.get("instance"), rec.get("start")
        return cls(rec["host"], rec["pid"], inst if isinstance(inst, str) else None,
                   start if type(start) is int else None)

    def alive(self) -> bool | None:
        """Is this writer running? None when this process cannot tell (see the module docstring)."""
        if self.host != HOST or (self.instance is not None and self.instance != INSTANCE):
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: alive, unless its start time says the pid was reused
        except OverflowError:
            return False
        if self.start is not None:
            now = start_time(self.pid)
            if now is not None and now != self.start:
                return False
        return True

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


def writer_id() -> str:
    me = Writer.me()
    tail = f"{me.instance}-{me.start:x}-" if me.instance is not None and me.start is not None else ""
    return f"{me.host}.{me.pid}.{tail}{os.urandom(6).hex()}"


def temp_name(prefix: str = "") -> str:
    return f"{prefix}{writer_id()}.tmp"


# What temp names may start with before the writer id (temp_name's callers).
PREFIXES = ("view.", "clock.", "put.", "cas.")


def parse_writer(name: str) -> Writer | None:
    """The writer of a name holding a writer id, with or without a known prefix and suffix; None
    if it has none. Hosts are compared exactly: another host whose name merely ends like ours is
    another host."""
    for suffix in (".tmp", ".json", ".part", ".progress", ".lock"):
        name = name.removesuffix(suffix)
    for prefix in PREFIXES:
        if name.startswith(prefix) and name.removeprefix(prefix).startswith(HOST + "."):
            name = name.removeprefix(prefix)
            break
    bits = name.rsplit(".", 2)
    if len(bits) != 3 or not bits[1].isdigit():
        return None
    tail = bits[2].split("-")
    instance, start = None, None
    if len(tail) == 3:
        try:
            instance, start = tail[0], int(tail[1], 16)
        except ValueError:
            instance, start = None, None
    return Writer(bits[0], int(bits[1]), instance, start)


def gone(writer: Writer | None, last_seen: float, now: float, silence: float) -> bool:
    """The rule: a writer this process can judge (same host, boot and pid namespace) is gone when
    its process is; any other (or unknown) when it has been silent (``now - last_seen``, both by
    the store's clock) for longer than ``silence``."""
    alive = writer.alive() if writer is not None else None
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
    return h if Writer.from_record(h) is not None else None


def holder_of(holder: dict | None) -> Writer | None:
    return Writer.from_record(holder) if holder else None


def describe(holder: dict | None) -> str:
    return f"pid {holder['pid']} on {holder['host']}" if holder else "another process"
