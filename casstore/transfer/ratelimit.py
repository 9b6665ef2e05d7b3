"""One bandwidth limit shared by every connection of a transfer (`--limit-rate 50M`)."""

from __future__ import annotations

import asyncio
import threading
import time


class RateLimiter:
    """Virtual scheduling: each byte has a slot ``1/rate`` seconds after the previous one.

    A short burst (``burst`` seconds' worth) is allowed, so chunked reads do not stutter. One
    limiter serves coroutines (``take``) and threads (``take_blocking``: an upload's file reads)
    alike.
    """

    def __init__(self, rate: float, burst: float = 0.25, clock=time.monotonic, sleep=asyncio.sleep,
                 sleep_blocking=time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = burst
        self._clock, self._sleep, self._sleep_blocking = clock, sleep, sleep_blocking
        self._next = clock()
        self._lock = threading.Lock()

    def _slot(self, n: int) -> float:
        """Book ``n`` bytes; how long to wait before sending them."""
        with self._lock:
            now = self._clock()
            start = max(self._next, now - self.burst)
            self._next = start + n / self.rate
            return self._next - now - self.burst

    async def take(self, n: int) -> None:
        delay = self._slot(n)
        if delay > 0:
            await self._sleep(delay)

    def take_blocking(self, n: int) -> None:
        delay = self._slot(n)
        if delay > 0:
            self._sleep_blocking(delay)
