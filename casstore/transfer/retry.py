"""How long to wait before the next attempt: exponential backoff with jitter, or what the server
asked for (``Retry-After``, capped at five minutes)."""

from __future__ import annotations

import random

MAX_RETRY_AFTER = 300.0


def delay(attempt: int, backoff: float, cap: float, retry_after: float | None = None) -> float:
    d = min(cap, backoff * 2**attempt) * random.uniform(0.5, 1.0)
    if retry_after is not None:
        d = min(max(d, retry_after), MAX_RETRY_AFTER)
    return d
