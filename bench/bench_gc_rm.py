"""`cas gc` emptying a store, against `rm` of as many files (issue 28).

    python bench/bench_gc_rm.py [--blobs 100000] [--rounds 3] [--work DIR]

The store is bench_gc.build's (64-512-byte blobs, 10 models, one version per 100 blobs, 10 %
unreferenced, all 90 days old). Each round copies it twice; on one copy `cas gc --max-size 0
--retention-days 0 --keep-last 0 --grace 0` (a process: plan, tags, set-aside, re-mark,
unlinks) takes every version but each model's current one; on the other `find … | xargs rm -f`
removes every blob and manifest file (slightly more files than the GC deletes). GC unlinks 8
runs of blobs at once (gc/sweep.py), so a third copy is emptied by `xargs -P 8 -n 1024 rm -f`,
as many at once, for context. The order rotates each round; `sync` before each timed run.
Ratios: rm's time / GC's (1.0 = as fast as rm), and the parallel rm's / GC's.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gc import build  # noqa: E402
from rounds import cas_command, speedup  # noqa: E402


def timed(argv, **kw) -> tuple[float, subprocess.CompletedProcess]:
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, check=True, **kw)
    return time.perf_counter() - t0, p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blobs", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="cas-bench-gcrm-"))
    template = work / "template"
    shutil.rmtree(template, ignore_errors=True)
    build(template, a.blobs)
    (work / "none.toml").write_text("")
    env = {**os.environ, "CAS_CONFIG": str(work / "none.toml")}
    cas = cas_command()
    gc_s, rm_s, rm8_s, rows = [], [], [], []
    for i in range(a.rounds):
        for name in ("a", "b", "c"):
            shutil.rmtree(work / name, ignore_errors=True)
            subprocess.run(["cp", "-a", str(template), str(work / name)], check=True)
        files = sum(len(fs) for sub in ("blobs", "manifests") for _, _, fs in os.walk(work / "b" / sub))

        def gc():
            t, p = timed([*cas, "--store", str(work / "a"), "--json", "gc", "--max-size", "0", "--retention-days", "0",
                          "--keep-last", "0", "--grace", "0"], env=env)
            return t, json.loads(p.stdout)["result"]

        def rm(copy="b", xargs="xargs -0"):
            t, _ = timed(["sh", "-c", f"find '{work / copy}/blobs' '{work / copy}/manifests' -type f -print0 | "
                                      f"{xargs} rm -f"])
            return t, None

        runs = {"gc": gc, "rm": rm, "rm8": lambda: rm("c", "xargs -0 -P 8 -n 1024")}
        order = list(runs)[i % 3:] + list(runs)[:i % 3]
        out = {what: runs[what]() for what in order}
        gc_s.append(out["gc"][0])
        rm_s.append(out["rm"][0])
        rm8_s.append(out["rm8"][0])
        r = out["gc"][1]
        rows.append({"round": i, "order": order, "gc_s": round(out["gc"][0], 3), "rm_s": round(out["rm"][0], 3),
                     "rm_p8_s": round(out["rm8"][0], 3),
                     "gc_deleted_blobs": r["blobs"], "gc_deleted_manifests": r["manifests"],
                     "gc_deleted_versions": r["versions"], "rm_files": files})
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "blobs": a.blobs, "rows": rows,
                      "rm_over_gc": speedup(rm_s, gc_s), "rm_p8_over_gc": speedup(rm8_s, gc_s)}, indent=2))
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
