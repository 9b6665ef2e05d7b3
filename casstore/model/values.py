"""Typed values from text a person wrote (environment variables, config files, arguments): each
parser returns the value or raises ``InvalidInput`` saying what was expected. ``casstore.config``
adds which variable or key the text came from."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from casstore.errors import InvalidInput
from casstore.model.sizes import parse_size

_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?", re.IGNORECASE)
_UNIT = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_INT = (1 << 63) - 1


def seconds(value: Any) -> float:
    """A duration: ``30``, ``2.5``, ``500ms``, ``5m``, ``1h``, ``7d`` (seconds when bare)."""
    if isinstance(value, bool):
        raise InvalidInput(f"expected a duration such as 30, 5m or 1h, not {value!r}")
    if isinstance(value, int | float):
        n = float(value)
    else:
        m = _SECONDS.fullmatch(str(value).strip())
        if m is None:
            raise InvalidInput(f"expected a duration such as 30, 5m or 1h, not {value!r}")
        n = float(m.group(1)) * _UNIT[m.group(2).lower() if m.group(2) else None]
    if not math.isfinite(n) or n < 0 or n > 1e12:
        raise InvalidInput(f"expected a duration of 0 or more seconds, not {value!r}")
    return n


def days(value: Any) -> float:
    """A number of days, fractions allowed (``30``, ``0.5``)."""
    return number(value, minimum=0.0, maximum=1e6)


def number(value: Any, *, minimum: float | None = None, maximum: float | None = None) -> float:
    if isinstance(value, bool):
        raise InvalidInput(f"expected a number, not {value!r}")
    try:
        n = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"expected a number, not {value!r}") from None
    if not math.isfinite(n) or (minimum is not None and n < minimum) or (maximum is not None and n > maximum):
        bounds = f" from {minimum:g}" if minimum is not None else ""
        bounds += f" to {maximum:g}" if maximum is not None else ""
        raise InvalidInput(f"expected a number{bounds}, not {value!r}")
    return n


def count(value: Any, *, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """A whole number (``2``; not ``2.5``, ``"two"`` or ``true``)."""
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise InvalidInput(f"expected a whole number, not {value!r}")
    try:
        n = int(value) if not isinstance(value, str) else int(value.strip())
    except (TypeError, ValueError):
        raise InvalidInput(f"expected a whole number, not {value!r}") from None
    if not minimum <= n <= maximum:
        raise InvalidInput(f"expected a whole number from {minimum} to {maximum}, not {value!r}")
    return n


def size(value: Any) -> int:
    """A size in bytes: ``500M``, ``20G``, ``1.5T``, or a plain number of bytes."""
    if isinstance(value, bool):
        raise InvalidInput(f"expected a size such as 500M or 20G, not {value!r}")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str | float):
        raise InvalidInput(f"expected a size such as 500M or 20G, not {value!r}")
    return parse_size(str(value))


def positive_size(value: Any) -> int:
    n = size(value)
    if n <= 0:
        raise InvalidInput(f"expected a size above 0, not {value!r}")
    return n


def flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise InvalidInput(f"expected true or false (1/0, yes/no, on/off), not {value!r}")


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"expected a string, not {type(value).__name__} {value!r}")
    return value


def choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            raise InvalidInput(f"expected one of {', '.join(options)}, not {value!r}")
        return value

    return parse
