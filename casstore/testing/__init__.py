"""Test suites a new backend imports to prove it keeps casstore's contracts (needs pytest)."""

from casstore.testing.remote_contract import ReadContract, WriteContract

__all__ = ["ReadContract", "WriteContract"]
