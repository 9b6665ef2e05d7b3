"""`cas add` (copy) of a Wan-shaped version in 209 files against `cp -r` + `sync`, and against
the code of an earlier commit when asked.

    python bench/bench_add_copy.py [--gib 0.5,2,8] [--repeat 5] [--before REV] [--work DIR] [--out JSON]

One version per size (``wanshape.generate``: safetensors shards, a T5 and a VAE ``.pth``, 200
small files), its source in the page cache (written just before, then read once), as after a
download or a checkout. Each `cas add` starts with an empty hash cache and an empty store, so
it hashes the source, copies it and hashes the copy: a first add of new files. Every timing
runs until a final `sync` returns (casstore fsyncs each blob; `cp` leaves that to `sync`). The
tools run interleaved, their order rotating each round; ratios are per round (median, min,
max), after one round not kept (the first write after the source's own was 2-4x slower for every
tool). ``--before REV``: a git worktree of REV runs the same `cas add` in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_reports import before_command  # noqa: E402
from bench_scale import shape  # noqa: E402
from rounds import cas_command, speedup, spread  # noqa: E402
from wanshape import generate  # noqa: E402


def timed(cmd: list[str], *, env=None, cwd=None) -> float:
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[:6]} failed: {p.stderr.decode(errors='replace')[-2000:]}")
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - t0


def bench_size(work: Path, gib: float, repeat: int, codes: dict[str, tuple[list[str], Path | None]]) -> dict:
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    generate(src, "m", **shape(gib))
    model = src / "m"
    files = [p for p in model.rglob("*") if p.is_file()]
    for p in files:  # into the page cache, as a source just downloaded or checked out is
        with open(p, "rb") as f:
            while f.read(8 << 20):
                pass
    names = ["cp", *codes]
    runs: dict[str, list[float]] = {n: [] for n in names}
    for i in range(-1, repeat):  # round -1 warms up and is not kept: a first write after the source's was slow
        for name in names[i % len(names):] + names[:i % len(names)]:
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            if name == "cp":
                t = timed(["cp", "-r", str(model), str(out)])
            else:
                cmd, cwd = codes[name]
                env = {**os.environ, "CAS_HASH_CACHE": str(work / "hashes.sqlite"), "CAS_CONFIG": str(work / "none.toml")}
                Path(env["CAS_HASH_CACHE"]).unlink(missing_ok=True)
                t = timed([*cmd, "--store", str(out), "-q", "add", str(model), "--name", "m", "--version", "1"],
                          env=env, cwd=cwd)
            if i >= 0:
                runs[name].append(t)
            shutil.rmtree(out, ignore_errors=True)
    row: dict = {"gib": gib, "bytes": sum(p.stat().st_size for p in files), "files": len(files)}
    for name in names:
        row[f"{name}_s"] = spread(runs[name])
        row[f"{name}_rounds"] = [round(t, 3) for t in runs[name]]
        if name != "cp":
            row[f"{name}_vs_cp"] = speedup(runs["cp"], runs[name])
    if "before" in codes:
        row["now_vs_before"] = speedup(runs["before"], runs["now"])
    shutil.rmtree(src, ignore_errors=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", default="0.5,2,8")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--before", help="a commit to compare with")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="cas-bench-add-copy-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "none.toml").write_text("")
    codes: dict[str, tuple[list[str], Path | None]] = {"now": (cas_command(), None)}
    if a.before:
        codes["before"] = before_command(a.before, work)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "before": a.before,
              "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}",
              "sizes": [bench_size(work, float(g), a.repeat, codes) for g in a.gib.split(",")]}
    text = json.dumps(result, indent=1)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
