"""How every benchmark here reports a comparison: per-round ratios (peer time / our time, so
above 1 means casstore is faster), with their median and spread."""

from __future__ import annotations

import statistics


def speedup(peer: list[float], ours: list[float]) -> dict[str, float]:
    """``peer`` and ``ours`` are times from the same rounds, in order."""
    r = [p / o for p, o in zip(peer, ours)]
    return {"median": round(statistics.median(r), 3), "min": round(min(r), 3), "max": round(max(r), 3)}
