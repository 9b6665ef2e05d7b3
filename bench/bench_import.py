"""`cas import` of a Wan-shaped HF hub cache repo against `cas add` of the same snapshot, `b3sum`
and `sha256sum` of the same files: time, and bytes of disk each costs.

    python bench/bench_import.py [--work DIR] [--shard-mib 256] [--shards 4] [--repeat 5]

The repo is laid out as huggingface_hub does (blobs named by SHA-256, a snapshot of relative
symlinks). Every round runs each command once, in a rotated order, into a fresh store on the same
filesystem, with the page cache warm (the files were just written or read): the cost measured is
the hashing and the store's writes, not the disk; `--cold` (root) drops the page cache before
each command instead, so that reading the disk is part of every figure. `import` reads each byte once for BLAKE3 and
SHA-256 together and hard-links the HF blobs; `add` (copy) hashes, copies and hashes the copy;
`add --move` links like import but computes no SHA-256 and checks nothing.

Ratios are per round, peer time / casstore time (above 1: casstore faster), median [min-max].
"""

from __future__ import annotations

import argparse
import hashlib
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
from wanshape import add_shape_arguments, generate_from_args  # noqa: E402

COMMIT = "0" * 40


def hf_repo(src: Path, cache: Path, repo_id: str) -> Path:
    """Move ``src``'s files into an HF cache repo layout; returns the snapshot directory."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snap = repo / "blobs", repo / "snapshots" / COMMIT
    blobs.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for p in sorted(x for x in src.rglob("*") if x.is_file()):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
        blob = blobs / h.hexdigest()
        if not blob.exists():
            os.rename(p, blob)
        link = snap / p.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snap


def du(*paths: Path) -> int:
    out = subprocess.run(["du", "-s", "--block-size=1", *map(str, paths)], capture_output=True, text=True,
                         check=True).stdout
    return sum(int(line.split()[0]) for line in out.splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each command (root only)")
    add_shape_arguments(ap)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-import-", dir=a.work))
    cas = cas_command()
    env = {**os.environ, "CAS_HASH_CACHE": str(work / "hashes.sqlite"), "CAS_CONFIG": str(work / "none.toml")}
    try:
        src = generate_from_args(work / "gen", "t2v-A14B", a)
        cache = work / "hub"
        snap = hf_repo(src, cache, "Wan-AI/Wan2.2-T2V-A14B")
        repo = snap.parent.parent
        files = sorted(str(p) for p in snap.rglob("*") if p.is_symlink() or p.is_file())
        size = sum(os.path.getsize(f) for f in files)
        b3sum, sha256sum = shutil.which("b3sum"), shutil.which("sha256sum")
        b3sum_cmd = [b3sum, "--no-names", *files] if b3sum else None
        sha_cmd = [sha256sum, *files] if sha256sum else None

        def fresh_store(name: str) -> Path:
            store = work / name
            if store.exists():
                subprocess.run(["chmod", "-R", "u+w", str(store)], check=True)
                shutil.rmtree(store)
            # hashes.sqlite off: each round hashes (the stat cache would make re-adds free)
            if os.path.exists(env["CAS_HASH_CACHE"]):
                os.unlink(env["CAS_HASH_CACHE"])
            return store

        commands = {
            "import": lambda s: [*cas, "--store", str(s), "import", str(repo), "--version", "1"],
            "add": lambda s: [*cas, "--store", str(s), "add", str(snap), "--name", "Wan-AI/Wan2.2-T2V-A14B",
                              "--version", "1"],
            "add --move": lambda s: [*cas, "--store", str(s), "add", str(snap), "--name", "Wan-AI/Wan2.2-T2V-A14B",
                                     "--version", "1", "--move"],
        }
        times: dict[str, list[float]] = {k: [] for k in [*commands, "b3sum", "sha256sum"]}
        disk: dict[str, list[int]] = {k: [] for k in commands}
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm
        order = [*commands, "b3sum", "sha256sum"]

        def drop() -> None:
            if a.cold:
                subprocess.run(["sync"], check=True)
                Path("/proc/sys/vm/drop_caches").write_text("3\n")

        for rnd in range(a.repeat):
            rotated = order[rnd % len(order):] + order[:rnd % len(order)]
            for name in rotated:
                if name in ("b3sum", "sha256sum"):
                    drop()
                    cmd = b3sum_cmd if name == "b3sum" else sha_cmd
                    if cmd is None:
                        continue
                    t0 = time.perf_counter()
                    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                    times[name].append(time.perf_counter() - t0)
                    continue
                store = fresh_store("store")
                before = du(cache, work / "gen")
                drop()
                t0 = time.perf_counter()
                subprocess.run(commands[name](store), check=True, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
                times[name].append(time.perf_counter() - t0)
                disk[name].append(du(cache, work / "gen", store) - before)
        med = {k: round(statistics.median(v), 3) for k, v in times.items() if v}
        ratios = {}
        if times["b3sum"]:
            ratios["import vs b3sum"] = speedup(times["b3sum"], times["import"])
            ratios["add --move vs b3sum"] = speedup(times["b3sum"], times["add --move"])
        if times["sha256sum"]:
            ratios["import vs sha256sum"] = speedup(times["sha256sum"], times["import"])
        ratios["import vs add (copy)"] = speedup(times["add"], times["import"])
        out = {
            "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(), "files": len(files), "bytes": size, "repeat": a.repeat,
            "page_cache": "cold" if a.cold else "warm",
            "median_seconds": med, "ratios": ratios,
            "disk_bytes_median": {k: int(statistics.median(v)) for k, v in disk.items()},
            "throughput_gib_s": {k: round(size / v / (1 << 30), 2) for k, v in med.items()},
        }
        print(json.dumps(out, indent=1))
        if a.json:
            a.json.write_text(json.dumps(out, indent=1) + "\n")
        print(f"\n{len(files)} files, {size / (1 << 20):.0f} MiB, {a.repeat} rounds (median s [ratio median, min-max])")
        for k, v in med.items():
            print(f"- {k}: {v} s ({out['throughput_gib_s'][k]} GiB/s)"
                  + (f", disk +{out['disk_bytes_median'][k] / (1 << 20):.1f} MiB" if k in disk else ""))
        for k, r in ratios.items():
            print(f"- {k}: {r['median']}x [{r['min']}-{r['max']}]")
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
