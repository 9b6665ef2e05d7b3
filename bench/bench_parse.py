"""Memory and time to parse a large manifest (the bound docs/security.md states).

    python bench/bench_parse.py [--entries 50000,200000,250000]

Each size is parsed in a fresh process, which reports the growth of its peak RSS (VmHWM) while
`Manifest.decode` runs and the wall time. Paths are 36-40 characters, as in a sharded model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak (it survives execve).
CHILD = """
import sys, time
from casstore.model.manifest import Manifest

def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))

data = open(sys.argv[1], "rb").read()
before = hwm()
t0 = time.perf_counter()
m = Manifest.decode(data, source="bench")
print(len(m.entries), len(data), hwm() - before, time.perf_counter() - t0)
"""


def build(n: int, path: Path) -> None:
    from casstore.model.digest import Digest
    from casstore.model.manifest import Entry, Manifest

    entries = tuple(Entry(f"dir{i % 100:03d}/shard-{i:07d}.safetensors", i, Digest.of_bytes(str(i).encode()))
                    for i in range(n))
    path.write_bytes(Manifest("bench", "1.0.0", entries).encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", default="50000,200000,250000")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in (int(x) for x in args.entries.split(",")):
            p = Path(d) / f"m{n}.json"
            build(n, p)
            out = subprocess.run([sys.executable, "-c", CHILD, str(p)], capture_output=True, text=True, check=True)
            entries, size, kib, secs = out.stdout.split()
            row = {"entries": int(entries), "bytes": int(size), "peak_rss_growth_mib": round(int(kib) / 1024, 1),
                   "seconds": round(float(secs), 2)}
            row["rss_per_byte"] = round(row["peak_rss_growth_mib"] * (1 << 20) / row["bytes"], 2)
            rows.append(row)
            print(json.dumps(row))


if __name__ == "__main__":
    main()
