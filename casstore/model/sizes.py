"""Human sizes and rates: ``500M``, ``20G``, ``1.5T`` (powers of 1024), and back."""

from __future__ import annotations

import re

from casstore.errors import InvalidInput

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*", re.IGNORECASE)
MAX_SIZE = (1 << 63) - 1  # what a file size, a JSON integer we write and a stat field can hold


def parse_size(text: str) -> int:
    m = _SIZE.fullmatch(str(text))
    if m is None:
        raise InvalidInput(f"invalid size {str(text)[:60]!r}: expected a number with an optional K, M, G, T or P suffix")
    whole, _, frac = m.group(1).partition(".")
    whole, frac = whole.lstrip("0") or "0", frac[:30]
    if len(whole) > 25:
        raise InvalidInput(f"invalid size {str(text)[:60]!r}: larger than {MAX_SIZE} bytes (8 EiB)")
    unit = _UNITS[m.group(2).upper()]
    n = int(whole) * unit + (int(frac) * unit // 10 ** len(frac) if frac else 0)  # exact: no float overflow
    if n > MAX_SIZE:
        raise InvalidInput(f"invalid size {str(text)[:60]!r}: larger than {MAX_SIZE} bytes (8 EiB)")
    return n


def format_size(n: int | float) -> str:
    if n < 0:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError
