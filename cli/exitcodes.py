"""Exit status for each error class: the one place the CLI decides them (docs/cli.md lists them)."""

from __future__ import annotations

import errno

OK = 0
ERROR = 1
USAGE = 2  # bad command line or invalid input (name, digest, path, manifest)
NOT_FOUND = 3
INTEGRITY = 4
CONFLICT = 5
LOCK_TIMEOUT = 6
REMOTE = 7
NO_SPACE = 8
STORE_FORMAT = 9


def exit_code(exc: BaseException) -> int:
    from casstore import errors as E

    table = (
        (E.InvalidInput, USAGE),
        (E.NotFound, NOT_FOUND),
        (E.IntegrityError, INTEGRITY),
        (E.Conflict, CONFLICT),
        (E.LockTimeout, LOCK_TIMEOUT),
        (E.RemoteError, REMOTE),
        (E.OutOfSpace, NO_SPACE),
        (E.StoreFormatError, STORE_FORMAT),
    )
    for cls, code in table:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return NO_SPACE
    return ERROR
