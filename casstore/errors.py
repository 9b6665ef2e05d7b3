"""Every error casstore raises, in one tree.

    CasError
    ├── InvalidInput (ValueError)          bad name, digest, path, size, option
    │   ├── InvalidDigest
    │   ├── InvalidPath
    │   │   └── UnsafeDestination          a symlink, file or .git on the way to where files are written
    │   ├── InvalidName
    │   └── InvalidManifest
    ├── NotFound (LookupError)             model, version, blob, manifest, source file
    ├── IntegrityError                     bytes do not match their digest
    │   ├── CorruptStore                   a store file (tag, history record) that cannot be read as one
    │   └── BlobsChanged                   blobs written through a checkout's hard link or a view's symlink
    ├── Conflict                           a tag or current pointer moved under us; a refusal needing --force
    │   └── RequirementsUnmet              the environment lacks what a version requires to run
    ├── LockTimeout (TimeoutError)         another process held a download lock for too long
    ├── RemoteError                        .url .status .digest .retryable .retry_after .hung
    │   ├── MirrorsFailed (remotes/layers)  every mirror failed: .errors, one per mirror
    │   ├── RemoteUnreachable              no connection (refused, DNS, reset before an answer)
    │   ├── RemoteRefused                  401/403/405: a token or a writable server is needed
    │   ├── RemoteStatusError              any other failing HTTP status (5xx and 429 are retryable)
    │   ├── RemoteProtocolError            the server broke the protocol: wrong length or range, a cut body
    │   │   └── RangesIgnored              a ranged request answered with the whole object
    │   ├── RemoteTooSlow                  below the low-speed limit, or silent past the stall timeout
    │   └── Offline                        --offline / CAS_OFFLINE=1 and a remote was needed
    ├── SourceUnreadable                   a file or directory given to `add` cannot be read
    ├── DestinationError                   a checkout target cannot be written as asked
    ├── StoreUnusable                      the store directory cannot be created, written or shared
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


class CorruptStore(IntegrityError):
    pass


class BlobsChanged(IntegrityError):
    """``digests``: the blobs found changed (already moved to quarantine)."""

    def __init__(self, message: str, digests=()) -> None:
        super().__init__(message)
        self.digests = tuple(digests)


class Conflict(CasError):
    pass


class RequirementsUnmet(Conflict):
    pass


class LockTimeout(CasError, TimeoutError):
    pass


class RemoteError(CasError):
    """A remote failed or misbehaved. ``retryable``: worth another attempt (resets, 5xx, 429);
    ``retry_after``: seconds the server asked for; ``url``, ``status`` and ``digest`` when known."""

    retryable_by_default = False

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None,
                 digest: object | None = None, retryable: bool | None = None,
                 retry_after: float | None = None, hung: bool = False) -> None:
        super().__init__(message)
        self.hung = hung  # nothing was answered at all (remotes/layers.py: the mirror is demoted)
        self.url = url
        self.status = status
        self.digest = digest
        self.retryable = self.retryable_by_default if retryable is None else retryable
        self.retry_after = retry_after


class RemoteUnreachable(RemoteError):
    retryable_by_default = True


class RemoteRefused(RemoteError):
    pass


class RemoteStatusError(RemoteError):
    pass


class RemoteProtocolError(RemoteError):
    pass


class RangesIgnored(RemoteProtocolError):
    """Not retried: the engine reads that server's answers on its event loop instead (it skips
    to the offset), and splits none of its blobs."""


class RemoteTooSlow(RemoteError):
    retryable_by_default = True


class Offline(RemoteError):
    pass


class SourceUnreadable(CasError):
    pass


class DestinationError(CasError):
    pass


class StoreUnusable(CasError):
    pass


class OutOfSpace(CasError, OSError):
    pass


class StoreFormatError(CasError):
    pass
