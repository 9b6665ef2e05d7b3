"""What every benchmark here shares: how it runs `cas`, and how it reports a comparison (per-round
ratios, peer time / our time, so above 1 means casstore is faster, with their median and spread)."""

from __future__ import annotations

import compileall
import importlib.util
import statistics
import subprocess
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


# A command runs as the child of a small Python process, which reports the child's peak: the
# kernel carries a high-water mark across exec, so measured from the benchmark it would be its own.
_MEASURE = ("import os, subprocess, sys, time\n"
            "t0 = time.perf_counter()\n"
            "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
            "_, status, usage = os.wait4(p.pid, 0)\n"
            "print(os.waitstatus_to_exitcode(status), time.perf_counter() - t0, usage.ru_maxrss)\n")


def timed(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one process run to its end."""
    p = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True, check=True, cwd=cwd,
                       env=env)
    code, seconds, kib = p.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{argv} exited with {code}: {p.stderr[-2000:]}")
    return float(seconds), int(kib) / 1024


def spread(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3)}
