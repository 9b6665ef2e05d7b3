"""Human sizes and rates: ``500M``, ``20G``, ``1.5T`` (powers of 1024), and back."""

from __future__ import annotations

import re

from casstore.errors import InvalidInput

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    m = _SIZE.fullmatch(str(text))
    if m is None:
        raise InvalidInput(f"invalid size {text!r}: expected a number with an optional K, M, G, T or P suffix")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def format_size(n: int | float) -> str:
    if n < 0:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError
