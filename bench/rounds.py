"""What every benchmark here shares: how it runs `cas`, and how it reports a comparison (per-round
ratios, peer time / our time, so above 1 means casstore is faster, with their median and spread)."""

from __future__ import annotations

import compileall
import importlib.util
import statistics
import sys
from pathlib import Path


def cas_command() -> list[str]:
    """``cas`` as a subprocess, its bytecode compiled first. An installed casstore has it (pip
    compiles at install, and an editable install's first run writes it); an environment with
    PYTHONDONTWRITEBYTECODE would otherwise compile ~35 modules on every run (~40 ms)."""
    for name in ("casstore", "casstore_cli"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            compileall.compile_dir(str(Path(spec.origin).parent), quiet=1)
    return [sys.executable, "-m", "casstore_cli.main"]


def speedup(peer: list[float], ours: list[float]) -> dict[str, float]:
    """``peer`` and ``ours`` are times from the same rounds, in order."""
    r = [p / o for p, o in zip(peer, ours)]
    return {"median": round(statistics.median(r), 3), "min": round(min(r), 3), "max": round(max(r), 3)}
