"""`cas verify` of a store of many small blobs against `b3sum` of the same files, and its memory.

    python bench/bench_verify_store.py [--blobs 100000] [--repeat 5] [--work DIR] [--out JSON]

The store is casstore/testing/synthetic.py's (64-512-byte blobs, one version of 100 files per
100 blobs, 10 % unreferenced). Whole processes, from a warm page cache (one untimed run of each
first), tools rotated each round: `cas verify` (hash every blob), `cas verify --fast` (sizes and
stamps) and `find blobs -type f -print0 | xargs -0 b3sum` (what a user would run to hash the same
files). Reported: median seconds (min-max), the peak RSS of each `cas` run (the child's
``ru_maxrss``), and per round b3sum's time / cas's time, median (min-max).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import cas_command, spread, timed  # noqa: E402

from casstore.testing.synthetic import many_blobs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blobs", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-verify."))
    root = work / f"store-{a.blobs}"
    if not (root / "blobs").is_dir():
        many_blobs(root, a.blobs)
    cas = cas_command()
    tools: dict[str, list[str]] = {
        "cas verify": [*cas, "--store", str(root), "verify"],
        "cas verify --fast": [*cas, "--store", str(root), "verify", "--fast"],
        "b3sum": ["sh", "-c", f"find {root / 'blobs'} -type f -print0 | xargs -0 b3sum"],
    }
    for cmd in tools.values():  # warm the page cache; the first verify also stamps every blob
        timed(cmd)
    runs: dict[str, list[tuple[float, float]]] = {t: [] for t in tools}
    names = list(tools)
    for rnd in range(a.repeat):
        for t in names[rnd % len(names):] + names[:rnd % len(names)]:
            cmd = tools[t]
            runs[t].append(timed(cmd))
            print(f"round {rnd + 1} {t}: {runs[t][-1][0]:.2f} s, {runs[t][-1][1]:.0f} MiB", file=sys.stderr)
    b3 = [s for s, _ in runs["b3sum"]]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "blobs": a.blobs, "repeat": a.repeat,
        "seconds": {t: spread([s for s, _ in r]) for t, r in runs.items()},
        "peak_rss_mib": {t: spread([m for _, m in r]) for t, r in runs.items() if t != "b3sum"},
        "speed_vs_b3sum": {t: spread([b / s for b, (s, _) in zip(b3, r)]) for t, r in runs.items() if t != "b3sum"},
    }
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
