"""Fault injection for the store's I/O, in a child process, through one seam: the ``os`` functions
casstore calls (it always calls them as ``os.name``). A rule names an operation, the errno to
raise, which calls it hits and how often, as NAS and SMB clients fail in practice.

    CAS_FAULTS='[{"op": "fsync", "errno": "EIO", "after": 2, "times": 1, "kind": "file"}]'

``op``: fsync | link | rename | replace | open | pwrite | write | copy_file_range | unlink. ``kind`` (fsync only): file | dir.
``path``: a substring the path must contain; ``not_path``: one it must not. ``after``: matching calls let through first.
``times``: failures before calls succeed again (-1: forever). ``after_bytes`` (pwrite/write):
fail once this many bytes were written.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys

BOOT = "import sys, faults; faults.install(); from casstore_cli.main import main; main(sys.argv[1:])"


def argv(store, *args) -> list[str]:
    """A `cas` command line that runs with the faults in ``CAS_FAULTS``."""
    return [sys.executable, "-c", BOOT, "--store", str(store), *map(str, args)]


def env(rules: list[dict]) -> dict[str, str]:
    here = os.path.dirname(os.path.abspath(__file__))
    return {**os.environ, "CAS_FAULTS": json.dumps(rules),
            "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", "")}


class _Rule:
    def __init__(self, spec: dict) -> None:
        self.op = spec["op"]
        self.errno = getattr(errno, spec.get("errno", "EIO"))
        self.after = spec.get("after", 0)
        self.times = spec.get("times", 1)
        self.kind = spec.get("kind")
        self.path = spec.get("path")
        self.not_path = spec.get("not_path")
        self.after_bytes = spec.get("after_bytes")
        self.seen = 0
        self.failed = 0
        self.bytes = 0

    def hit(self, path: str | None = None, fd: int | None = None, nbytes: int = 0) -> bool:
        if self.path is not None and (path is None or self.path not in path):
            return False
        if self.not_path is not None and path is not None and self.not_path in path:
            return False
        if self.kind is not None and fd is not None:
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            if is_dir != (self.kind == "dir"):
                return False
        if self.times != -1 and self.failed >= self.times:
            return False
        if self.after_bytes is not None:
            self.bytes += nbytes
            if self.bytes <= self.after_bytes:
                return False
        else:
            self.seen += 1
            if self.seen <= self.after:
                return False
        self.failed += 1
        return True


def install() -> None:
    rules = [_Rule(r) for r in json.loads(os.environ.get("CAS_FAULTS", "[]"))]

    def check(op: str, path=None, fd=None, nbytes=0) -> None:
        for r in rules:
            if r.op == op and r.hit(None if path is None else os.fsdecode(path), fd, nbytes):
                raise OSError(r.errno, f"{os.strerror(r.errno)} (injected)", None if path is None else os.fsdecode(path))

    # What each patched call tells the rules: the destination path, the descriptor, or a byte count.
    hooks = {
        "fsync": lambda fd: {"fd": fd},
        "link": lambda src, dst, *a, **kw: {"path": dst},
        "rename": lambda src, dst, *a, **kw: {"path": dst},
        "replace": lambda src, dst, *a, **kw: {"path": dst},
        "open": lambda path, flags, *a, **kw: {"path": path},
        "pwrite": lambda fd, data, offset: {"nbytes": len(data)},
        "write": lambda fd, data: {"nbytes": len(data)},
        "copy_file_range": lambda src, dst, count, *a, **kw: {"nbytes": count},
        "unlink": lambda path, *a, **kw: {"path": path},
    }
    for name, hook in hooks.items():
        def patched(*args, _name=name, _hook=hook, _real=getattr(os, name), **kwargs):
            check(_name, **_hook(*args, **kwargs))
            return _real(*args, **kwargs)

        setattr(os, name, patched)
