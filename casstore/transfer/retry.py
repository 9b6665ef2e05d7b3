"""How long to wait before the next attempt: exponential backoff with jitter, or what the server
asked for (``Retry-After``), capped at a minute and said so: a server asking for an hour costs
a minute and a warning naming it, never a silent hour."""

from __future__ import annotations

import logging
import random

MAX_RETRY_AFTER = 60.0
log = logging.getLogger("casstore")


def delay(attempt: int, backoff: float, cap: float, retry_after: float | None = None, url: str | None = None) -> float:
    d = min(cap, backoff * 2**attempt) * random.uniform(0.5, 1.0)
    if retry_after is not None:
        if retry_after > MAX_RETRY_AFTER:
            log.warning("%s asks to retry after %.0fs; waiting %.0fs instead", url or "the remote", retry_after,
                        MAX_RETRY_AFTER)
        d = min(max(d, retry_after), MAX_RETRY_AFTER)
    return d
