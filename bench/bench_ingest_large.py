"""One large file into the store: `cas add --move` against `b3sum` (all a move has to do is hash
it once), and `cas add` (copy) against `cp` + `sync` and `b3sum` + `cp` + `sync`.

    python bench/bench_ingest_large.py [--gib 4] [--repeat 3] [--work DIR]

Page caches are dropped before every timed command when run as root (cold reads, as for weights
just downloaded or copied in); every timing includes a final `sync`. Tools run interleaved, their
order rotating each round; ratios are per round (median, min, max).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import cas_command, speedup  # noqa: E402
from wanshape import random_file  # noqa: E402


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    if os.geteuid() == 0:
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError:
            pass


def timed(*cmds: list[str], env=None) -> float:
    drop_caches()
    t0 = time.perf_counter()
    for cmd in cmds:
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    b3sum = shutil.which("b3sum")
    if not b3sum:
        raise SystemExit("b3sum is not installed (apt-get install b3sum)")
    work = a.work or Path(tempfile.mkdtemp(prefix="cas-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    big = work / "weights.bin"
    size = int(a.gib * (1 << 30))
    if not big.exists() or big.stat().st_size != size:
        random_file(big, size, seed=1)
    cas = cas_command()
    env = {**os.environ, "CAS_CONFIG": str(work / "cfg.toml"), "CAS_HASH_CACHE": str(work / "hc.sqlite")}

    def fresh(name: str) -> Path:
        d = work / name
        shutil.rmtree(d, ignore_errors=True)
        return d

    def cas_move(i: int) -> float:
        src = fresh("move-src")
        src.mkdir()
        subprocess.run(["cp", "--reflink=never", str(big), str(src / "weights.bin")], check=True)
        return timed([*cas, "--store", str(fresh("store-move")), "-q", "add", str(src), "--move", "--name", "big",
                      "--version", f"1.0.{i}"], env={**env, "CAS_HASH_CACHE": str(fresh("hc-move"))})

    def cas_copy(i: int) -> float:
        src = fresh("copy-src")
        src.mkdir()
        os.link(big, src / "weights.bin")
        return timed([*cas, "--store", str(fresh("store-copy")), "-q", "add", str(src), "--name", "big",
                      "--version", f"1.0.{i}"], env={**env, "CAS_HASH_CACHE": str(fresh("hc-copy"))})

    def cp_sync(i: int) -> float:
        return timed(["cp", "--reflink=never", str(big), str(fresh("cp-dest"))])

    def b3sum_cp_sync(i: int) -> float:
        return timed([b3sum, "--no-names", str(big)], ["cp", "--reflink=never", str(big), str(fresh("cp-dest"))])

    def b3(i: int) -> float:
        return timed([b3sum, "--no-names", str(big)])

    tools = {"cas add --move": cas_move, "b3sum": b3, "cas add": cas_copy, "cp + sync": cp_sync,
             "b3sum + cp + sync": b3sum_cp_sync}
    runs: dict[str, list[float]] = {t: [] for t in tools}
    order = list(tools)
    for i in range(a.repeat):
        for t in order[i % len(order):] + order[: i % len(order)]:
            runs[t].append(tools[t](i))
            print(f"round {i}: {t}: {runs[t][-1]:.2f} s", file=sys.stderr, flush=True)
    for name in ("move-src", "copy-src", "store-move", "store-copy", "cp-dest"):
        fresh(name)

    def ratio(peer: str, ours: str) -> dict:
        return speedup(runs[peer], runs[ours])

    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus", "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv), "file_bytes": size, "caches_dropped": os.geteuid() == 0,
        "seconds_median": {t: round(statistics.median(v), 3) for t, v in runs.items()},
        "move_speed_vs_b3sum": ratio("b3sum", "cas add --move"),
        "copy_speed_vs_cp_sync": ratio("cp + sync", "cas add"),
        "copy_speed_vs_b3sum_cp_sync": ratio("b3sum + cp + sync", "cas add"),
    }
    print(json.dumps(report, indent=1))
    if a.out:
        a.out.write_text(json.dumps(report, indent=1) + "\n")
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
