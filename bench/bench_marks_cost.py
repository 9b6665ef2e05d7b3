"""What fresh marks (casstore/store/freshmarks.py) cost a writer: `cas use` of a 209-file version
and back, in one process, rounds alternating with marking switched off; a new ``Marker`` each
round, as a new process has.

    python bench/bench_marks_cost.py [--rounds 12] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from casstore.ops.add import add
from casstore.ops.switch import use
from casstore.store import freshmarks
from casstore.store.objects import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--work", type=Path)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-marks.", dir=a.work))
    store = Store.open(base / "store")
    for v in ("1", "2"):
        src = base / f"src{v}"
        src.mkdir()
        for i in range(209):
            (src / f"f{i}.bin").write_bytes(os.urandom(2000))
        add(store, src, "m", v)
    real = freshmarks.Marker.mark
    runs: dict[str, list[float]] = {"marks": [], "none": []}
    try:
        for r in range(a.rounds):
            for mode in ("marks", "none") if r % 2 else ("none", "marks"):
                freshmarks.Marker.mark = real if mode == "marks" else (lambda self, h: None)  # type: ignore[method-assign]
                store.fresh = freshmarks.Marker(store.root)
                t = time.perf_counter()
                use(store, "m", "2")
                use(store, "m", "1")
                runs[mode].append((time.perf_counter() - t) / 2)
    finally:
        freshmarks.Marker.mark = real  # type: ignore[method-assign]
    print(json.dumps({k: {"median_ms": round(statistics.median(v) * 1000, 1), "min_ms": round(min(v) * 1000, 1),
                          "max_ms": round(max(v) * 1000, 1)} for k, v in runs.items()}, indent=1))


if __name__ == "__main__":
    main()
