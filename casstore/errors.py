"""Every error casstore raises, in one tree.

    CasError
    ├── InvalidInput (ValueError)          bad name, digest, path, size, option
    │   ├── InvalidDigest
    │   ├── InvalidPath
    │   │   └── UnsafeDestination          a symlink, file or .git on the way to where files are written
    │   ├── InvalidName
    │   └── InvalidManifest
    ├── NotFound (LookupError)             model, version, blob, manifest, source file
    ├── IntegrityError                     bytes do not match their digest; corrupt store
    ├── Conflict                           a tag or current pointer moved under us; a refusal needing --force
    │   └── RequirementsUnmet              the environment lacks what a version requires to run
    ├── LockTimeout (TimeoutError)
    ├── RemoteError                        (used by remotes)
    ├── OutOfSpace (OSError)               the store's filesystem is full
    └── StoreFormatError                   a store layout this version does not know

The CLI maps these classes to exit codes in one place (``cli/exitcodes.py``).
Foreign exceptions are translated with ``raise ... from``.
"""

from __future__ import annotations


class CasError(Exception):
    """Base of every casstore error."""


class InvalidInput(CasError, ValueError):
    pass


class InvalidDigest(InvalidInput):
    pass


class InvalidPath(InvalidInput):
    pass


class UnsafeDestination(InvalidPath):
    pass


class InvalidName(InvalidInput):
    pass


class InvalidManifest(InvalidInput):
    pass


class NotFound(CasError, LookupError):
    pass


class IntegrityError(CasError):
    pass


class Conflict(CasError):
    pass


class RequirementsUnmet(Conflict):
    pass


class LockTimeout(CasError, TimeoutError):
    pass


class RemoteError(CasError):
    """A remote failed or misbehaved. ``retryable``: worth another attempt (resets, 5xx, 429)."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class OutOfSpace(CasError, OSError):
    pass


class StoreFormatError(CasError):
    pass
