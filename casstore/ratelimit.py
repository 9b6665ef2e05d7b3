"""One bandwidth limit shared by every connection of a transfer (`--limit-rate 50M`)."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """Virtual scheduling: each byte has a slot ``1/rate`` seconds after the previous one.

    A short burst (``burst`` seconds' worth) is allowed, so chunked reads do not stutter.
    """

    def __init__(self, rate: float, burst: float = 0.25) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = burst
        self._next = time.monotonic()

    async def take(self, n: int) -> None:
        now = time.monotonic()
        start = max(self._next, now - self.burst)
        self._next = start + n / self.rate
        delay = self._next - now - self.burst
        if delay > 0:
            await asyncio.sleep(delay)
