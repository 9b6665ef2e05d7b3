"""A hung default mirror before a healthy one: how much slower is a cold fetch than from the
healthy mirror alone?

    python bench/bench_mirrors.py [--work DIR] [--repeat 5] [--files 208] [--big-mib 64]

A version of ``--files`` small files and one large one (209 blobs by default, the shape the
issue reported) is pushed to a directory that nginx serves on loopback. The hung mirror is a
server that accepts connections, reads each request and never answers (tests/servers.Hung).
Each round fetches into an empty store twice, in alternating order: once with only the healthy
mirror configured, once with the hung one as the default remote and the healthy one second,
with the shipped defaults (CAS_FIRST_BYTE_TIMEOUT 5 s). Reported: each run's time, the ratio
hung-first / healthy-only per round (median, min, max), and how many requests the hung mirror
received in each hung-first run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from rounds import cas_command  # noqa: E402

from servers import Hung, Nginx  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--files", type=int, default=208)
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-mirrors."))
    work.mkdir(parents=True, exist_ok=True)
    cas = cas_command()
    src = work / "src"
    src.mkdir(exist_ok=True)
    for i in range(a.files):
        (src / f"f{i:03d}.json").write_bytes(os.urandom(2000 + i))
    (src / "w.bin").write_bytes(os.urandom(a.big_mib << 20))
    env = {**os.environ, "CAS_HASH_CACHE": str(work / "hashes.sqlite")}
    subprocess.run([*cas, "--store", str(work / "pub"), "add", str(src), "--name", "m", "--version", "1"],
                   check=True, capture_output=True, env=env)
    subprocess.run([*cas, "--store", str(work / "pub"), "push", "m@1", "--remote", str(work / "nas")],
                   check=True, capture_output=True, env=env)
    ngx = Nginx(work / "nas", work / "nginx")
    hung = Hung()
    configs = {
        "healthy": f'[remotes.good]\nurl = "{ngx.url}"\n',
        "hung_first": f'default_remote = "hung"\n[remotes.hung]\nurl = "{hung.url}"\n[remotes.good]\nurl = "{ngx.url}"\n',
    }
    for name, text in configs.items():
        (work / f"{name}.toml").write_text(text)
    times: dict[str, list[float]] = {k: [] for k in configs}
    hung_requests: list[int] = []
    try:
        for rnd in range(a.repeat):
            order = list(configs) if rnd % 2 == 0 else list(reversed(configs))
            for name in order:
                store = work / f"store-{name}"
                shutil.rmtree(store, ignore_errors=True)
                before = hung.requests
                t0 = time.perf_counter()
                p = subprocess.run([*cas, "--store", str(store), "--json", "fetch", "m@1"], capture_output=True,
                                   text=True, env={**env, "CAS_CONFIG": str(work / f"{name}.toml")}, timeout=1800)
                dt = time.perf_counter() - t0
                if p.returncode != 0:
                    raise RuntimeError(f"{name} fetch failed: {p.stderr[-2000:]}")
                assert json.loads(p.stdout)["blobs"] == a.files + 1
                times[name].append(dt)
                if name == "hung_first":
                    hung_requests.append(hung.requests - before)
                print(f"round {rnd + 1} {name}: {dt:.2f} s", file=sys.stderr)
    finally:
        hung.stop()
        ngx.stop()
    ratios = [h / g for h, g in zip(times["hung_first"], times["healthy"])]
    result = {
        "blobs": a.files + 1, "big_mib": a.big_mib, "repeat": a.repeat,
        "healthy_s": [round(t, 3) for t in times["healthy"]],
        "hung_first_s": [round(t, 3) for t in times["hung_first"]],
        "ratio_hung_over_healthy": {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
                                    "max": round(max(ratios), 3)},
        "extra_seconds_median": round(statistics.median(h - g for h, g in zip(times["hung_first"], times["healthy"])), 3),
        "hung_mirror_requests": hung_requests,
    }
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
