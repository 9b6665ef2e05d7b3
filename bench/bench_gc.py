"""GC planning and execution on synthetic stores: 10,000 to 100,000 small blobs, 100 to 1,000
versions, and `cas du` on the same store.

    python bench/bench_gc.py [--sizes 10000,30000,100000] [--work DIR]

Each store: blobs of 64-512 random bytes, 10 models, versions of 100 files each drawn so that
consecutive versions share most blobs, plus 10 % unreferenced blobs. The generator writes
files directly (no fsync: it builds test data, not a store casstore wrote). Timed: reading the
store's state (I/O), planning (pure), executing a plan that must bring the store to half its
size, and `cas du` as a process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from casstore.gc import Policy, execute, plan, read_state
from casstore.gc.state import blob_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import cas_command  # noqa: E402

from casstore.testing.synthetic import many_blobs as build  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,30000,100000")
    ap.add_argument("--work", type=Path)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="cas-bench-gc-"))
    rows = []
    cas = cas_command()
    for n in (int(x) for x in a.sizes.split(",")):
        root = work / f"store-{n}"
        shutil.rmtree(root, ignore_errors=True)
        store = build(root, n)
        t0 = time.perf_counter()
        state = read_state(store)
        t1 = time.perf_counter()
        total = blob_bytes(state.blobs)  # not each value: GC's read sizes blobs without a stat each
        policy = Policy(max_size=total // 2, retention_days=None, keep_last=1, grace=3600)
        p = plan(state, policy)
        t2 = time.perf_counter()
        env = {**os.environ, "CAS_CONFIG": str(work / "none.toml")}
        t3 = time.perf_counter()
        subprocess.run([*cas, "--store", str(root), "du"], env=env, check=True,
                       capture_output=True)
        t4 = time.perf_counter()
        r = execute(store, p, policy)
        t5 = time.perf_counter()
        rows.append({"blobs": n, "versions": len(state.versions), "read_state_s": t1 - t0, "plan_s": t2 - t1,
                     "du_s": t4 - t3, "execute_s": t5 - t4, "deleted_blobs": r.blobs, "deleted_versions": r.versions,
                     "bytes_before": total, "bytes_freed": r.bytes_freed})
        print(json.dumps(rows[-1]), file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}, indent=2))
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
