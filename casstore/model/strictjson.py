"""Bounded JSON parsing for every document casstore reads from a remote, a project or a store.

Limits are checked before the parser allocates (byte size, and an upper bound on the number of
objects and arrays counted with one C-speed scan), nesting deep enough to exhaust the parser's
stack is an error rather than a ``RecursionError``, and only integers are accepted as numbers unless asked otherwise (never NaN or Infinity),
so every failure is one ``InvalidInput`` that names the source (docs/security.md).
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from casstore.errors import InvalidInput


class _Reject(ValueError):
    pass


def _no_float(text: str) -> Any:
    raise _Reject(f"non-integer number {text!r}")


def parse(data: bytes, *, source: str, what: str, max_bytes: int, max_containers: int | None = None,
          floats: bool = False, error: type[InvalidInput] = InvalidInput) -> Any:
    """Decode ``data`` as UTF-8 JSON within the given limits; ``what`` names the document kind."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise error(f"{source}: {what} is not bytes")
    if len(data) > max_bytes:
        raise error(f"{source}: {what} is larger than {max_bytes} bytes")
    if max_containers is not None:
        # An upper bound (braces inside strings count too), cheap enough to run on every parse.
        n = data.count(b"{") + data.count(b"[")
        if n > max_containers:
            raise error(f"{source}: {what} has more than {max_containers} objects/arrays")
    try:
        obj = json.loads(bytes(data).decode("utf-8"), parse_float=float if floats else _no_float,
                         parse_constant=_no_float)
    except RecursionError:
        raise error(f"{source}: {what} is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError, _Reject) as e:
        raise error(f"{source}: not a valid {what}: {e}") from e
    return obj


def field(obj: dict, name: str, kind: type | tuple[type, ...], *, where: str, default: Any = ...,
          error: type[InvalidInput] = InvalidInput) -> Any:
    """``obj[name]`` if it has the expected type (a bool is never taken for an int); errors start
    with ``where`` (the source and the part of the document)."""
    if not isinstance(obj, dict):
        raise error(f"{where}: expected an object, not {type(obj).__name__}")
    if name not in obj:
        if default is not ...:
            return default
        raise error(f"{where}: field {name!r} is missing")
    v = obj[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise error(f"{where}: field {name!r} must be {names}, not {type(v).__name__} {_short(v)}")
    return v


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def read_file(path, *, max_bytes: int, follow_symlinks: bool = True) -> bytes:
    """A small file's bytes, read only if it is a regular file of at most ``max_bytes`` (a planted
    FIFO, device or endless file is an error, not a hang). Raises OSError or InvalidInput."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"{path} is not a regular file")
        if st.st_size > max_bytes:
            raise InvalidInput(f"{path} is larger than {max_bytes} bytes")
        # os.read, not a file object: a ref file read this way costs a third (10,000 tags at
        # 1M blobs: 0.1 s against 0.3 s). A first read of all fstat said it holds ends it: no
        # read more to see the end (one system call of five per tag).
        chunks, left = [], max_bytes + 1
        while left > 0 and (b := os.read(fd, min(left, max(st.st_size + 1, 4096)))):  # procfs: size 0
            chunks.append(b)
            left -= len(b)
            if len(chunks) == 1 and len(b) == st.st_size:
                break
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise InvalidInput(f"{path} is larger than {max_bytes} bytes")
    return data


def load_file(path, *, what: str, max_bytes: int, follow_symlinks: bool = True, **limits) -> Any:
    """``parse`` of a file read with ``read_file``."""
    return parse(read_file(path, max_bytes=max_bytes, follow_symlinks=follow_symlinks), source=str(path),
                 what=what, max_bytes=max_bytes, **limits)
