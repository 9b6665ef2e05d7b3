"""Test suites a new backend imports to prove it keeps casstore's contracts (needs pytest)."""

from casstore.testing.remote_contract import ReadContract, WriteContract
from casstore.testing.storage import BucketStorage, DirectoryStorage, MemoryStorage, Storage

__all__ = ["BucketStorage", "DirectoryStorage", "MemoryStorage", "ReadContract", "Storage", "WriteContract"]
