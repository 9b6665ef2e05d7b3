"""Benchmark the local store against its peers, in one run on one machine: ratios, not absolutes.

    python bench/bench_add.py [--work DIR] [--shard-mib 256] [--shards 4] [--repeat 3]

- hashing: casstore's hash_file vs `b3sum` on the largest file (page cache warm, and cold when
  run as root so caches can be dropped);
- ingest: `cas add` vs `dvc add` vs `git add` with git-lfs tracking, on the same Wan-shaped files:
  a first model, a second model sharing the T5 encoder and VAE, and re-adding unchanged files.
  Each timing is the command alone and the command followed by `sync` (durable: casstore fsyncs
  before it returns, the others leave writeback to the kernel), and each command's peak RSS
  (``ru_maxrss`` of its process tree, read by a small parent: `rounds.timed`);
- operations: `cas use`/`rollback`, `cas path`, `cas checkout --link hardlink`, `cas --help`.

Peers that are not installed are reported as missing. Prints a JSON document and a Markdown
summary (see docs/benchmarks.md for how to install the peers).
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
from rounds import cas_command, speedup, spread  # noqa: E402
from rounds import timed as measured  # noqa: E402
from wanshape import add_shape_arguments, generate_from_args  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("first", "second_shared", "readd_unchanged", "readd_touched")


def run(cmd, cwd=None, env=None) -> tuple[float, float, float]:
    """Wall time of ``cmd`` and of ``cmd; sync``, and the command's peak RSS in MiB (the largest
    of its process tree's: git's includes the git-lfs filter it runs)."""
    subprocess.run(["sync"], check=True)
    seconds, peak = measured(cmd, cwd=cwd, env=env)
    t0 = time.perf_counter()
    subprocess.run(["sync"], check=True)
    return seconds, seconds + time.perf_counter() - t0, peak


def _timed(cmd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def drop_caches() -> bool:
    if os.geteuid() != 0:
        return False
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def find_tool(name: str, *extra: str) -> str | None:
    for cand in (shutil.which(name), *extra):
        if cand and os.path.exists(cand):
            return cand
    return None


def touch_all(path: Path) -> None:
    """A new mtime on every file, as after a copy or a checkout: caches keyed on mtime miss."""
    for p in path.rglob("*"):
        if p.is_file():
            os.utime(p)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def bench_hash(f: Path, repeat: int, b3sum: str | None) -> dict:
    from casstore.model.digest import hash_file

    size = f.stat().st_size
    out = {"file_bytes": size}

    def ours():
        t0 = time.perf_counter()
        hash_file(f)
        return time.perf_counter() - t0

    def theirs():
        t0 = time.perf_counter()
        subprocess.run([b3sum, "--no-names", str(f)], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0

    ours(), b3sum and theirs()  # warm the page cache
    out["warm_cas_s"] = min(ours() for _ in range(repeat))
    if b3sum:
        out["warm_b3sum_s"] = min(theirs() for _ in range(repeat))
        out["warm_speed_ratio"] = out["warm_b3sum_s"] / out["warm_cas_s"]
    if drop_caches():
        cas_cold, b3_cold = [], []
        for _ in range(repeat):
            drop_caches()
            cas_cold.append(ours())
            if b3sum:
                drop_caches()
                b3_cold.append(theirs())
        out["cold_cas_s"] = min(cas_cold)
        if b3sum:
            out["cold_b3sum_s"] = min(b3_cold)
            out["cold_speed_ratio"] = out["cold_b3sum_s"] / out["cold_cas_s"]
    return out


def bench_ingest(work: Path, src: Path, repeat: int, dvc: str | None, git_lfs: bool) -> dict:
    models = ["t2v-A14B", "i2v-A14B"]
    results: dict[str, dict] = {}
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}

    def cas_round(i):
        d = work / f"cas-{i}"
        e = {**env, "CAS_HOME": str(d / "store"), "CAS_HASH_CACHE": str(d / "hashes.sqlite")}
        cas = cas_command()
        r = {"first": run([*cas, "add", str(src / models[0]), "--name", models[0], "--version", "1.0"], env=e)}
        r["second_shared"] = run([*cas, "add", str(src / models[1]), "--name", models[1], "--version", "1.0"], env=e)
        r["readd_unchanged"] = run([*cas, "add", str(src / models[0]), "--name", models[0], "--version", "1.0"], env=e)
        touch_all(src / models[0])
        r["readd_touched"] = run([*cas, "add", str(src / models[0]), "--name", models[0], "--version", "1.0"], env=e)
        r["store_bytes"] = du(d / "store" / "blobs")
        shutil.rmtree(d)
        return r

    def dvc_round(i):
        d = work / f"dvc-{i}"
        d.mkdir()
        for m in models:
            subprocess.run(["cp", "-al", str(src / m), str(d / m)], check=True)
        subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=d, env=env, check=True)
        subprocess.run([dvc, "config", "core.analytics", "false"], cwd=d, env=env, check=True)
        r = {"first": run([dvc, "add", "-q", models[0]], cwd=d, env=env)}
        r["second_shared"] = run([dvc, "add", "-q", models[1]], cwd=d, env=env)
        r["readd_unchanged"] = run([dvc, "add", "-q", models[0]], cwd=d, env=env)
        touch_all(d / models[0])
        r["readd_touched"] = run([dvc, "add", "-q", models[0]], cwd=d, env=env)
        r["store_bytes"] = du(d / ".dvc" / "cache")
        shutil.rmtree(d)
        return r

    def lfs_round(i):
        d = work / f"lfs-{i}"
        d.mkdir()
        for m in models:
            subprocess.run(["cp", "-al", str(src / m), str(d / m)], check=True)
        g = lambda *a: subprocess.run(["git", *a], cwd=d, env=env, check=True, capture_output=True)  # noqa: E731
        g("init", "-q")
        g("config", "user.email", "bench@example.invalid")
        g("config", "user.name", "bench")
        g("lfs", "install", "--local")
        g("lfs", "track", "*.safetensors", "*.pth", "*.bin", "*.model")
        g("add", ".gitattributes")
        g("commit", "-qm", "lfs")
        r = {"first": run(["git", "add", models[0]], cwd=d, env=env)}
        r["second_shared"] = run(["git", "add", models[1]], cwd=d, env=env)
        r["readd_unchanged"] = run(["git", "add", models[0]], cwd=d, env=env)
        touch_all(d / models[0])
        r["readd_touched"] = run(["git", "add", models[0]], cwd=d, env=env)
        r["store_bytes"] = du(d / ".git" / "lfs" / "objects")
        shutil.rmtree(d)
        return r

    tools = {"cas": cas_round}
    if dvc:
        tools["dvc"] = dvc_round
    if git_lfs:
        tools["git-lfs"] = lfs_round
    per_tool: dict[str, list] = {name: [] for name in tools}
    names = list(tools)
    for i in range(repeat):  # interleaved and rotated, so drift in the disk's speed hits every tool alike
        for name in names[i % len(names):] + names[:i % len(names)]:
            per_tool[name].append(tools[name](i))
    for name, rounds in per_tool.items():
        agg = {}
        for phase in PHASES:
            agg[phase] = {
                "cmd_s": statistics.median(r[phase][0] for r in rounds),
                "cmd_sync_s": statistics.median(r[phase][1] for r in rounds),
                "peak_mib": spread([r[phase][2] for r in rounds]),
            }
        agg["store_bytes"] = rounds[0]["store_bytes"]
        results[name] = agg
    for peer in ("dvc", "git-lfs"):
        if peer in results:  # per round: peer time / cas time, median (min-max)
            results[f"speedup_vs_{peer}"] = {
                phase: {k: speedup([r[phase][j] for r in per_tool[peer]], [r[phase][j] for r in per_tool["cas"]])
                        for j, k in enumerate(("cmd_s", "cmd_sync_s"))}
                for phase in PHASES
            }
    results["rounds"] = {name: [{ph: r[ph] for ph in PHASES} for r in rounds] for name, rounds in per_tool.items()}
    return results


def bench_ops(work: Path, src: Path, repeat: int) -> dict:
    d = work / "ops"
    e = {**os.environ, "CAS_HOME": str(d / "store"), "CAS_HASH_CACHE": str(d / "hashes.sqlite")}
    cas = cas_command()
    subprocess.run([*cas, "add", str(src / "t2v-A14B"), "--name", "t2v", "--version", "1.0"], env=e, check=True, capture_output=True)
    subprocess.run([*cas, "add", str(src / "i2v-A14B"), "--name", "t2v", "--version", "1.1"], env=e, check=True, capture_output=True)

    def t(*args):
        t0 = time.perf_counter()
        subprocess.run([*cas, *args], env=e, check=True, capture_output=True)
        return time.perf_counter() - t0

    out = {
        "use_s": statistics.median(t("use", "t2v@1.1" if i % 2 == 0 else "t2v@1.0") for i in range(repeat * 2)),
        "rollback_s": statistics.median(t("rollback", "t2v") for _ in range(repeat)),
        "path_first_s": t("path", "t2v@1.1"),
        "path_again_s": statistics.median(t("path", "t2v@1.1") for _ in range(repeat)),
        "checkout_hardlink_s": statistics.median(
            t("checkout", "t2v@1.0", str(d / f"co{i}"), "--link", "hardlink") for i in range(repeat)
        ),
        "help_s": statistics.median(t("--help") for _ in range(repeat * 2)),
        "files_per_version": sum(1 for p in (src / "t2v-A14B").rglob("*") if p.is_file()),
    }
    # The bare interpreter start, so the figures above can be read net of it.
    out["python_startup_s"] = statistics.median(_timed([sys.executable, "-c", "pass"]) for _ in range(repeat * 2))
    shutil.rmtree(d)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temp dir)")
    add_shape_arguments(ap)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here too")
    a = ap.parse_args()

    work = a.work or Path(tempfile.mkdtemp(prefix="cas-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "src"
    for m in ("t2v-A14B", "i2v-A14B"):
        if not (src / m).exists():
            generate_from_args(src, m, a)
    b3sum = find_tool("b3sum")
    dvc = find_tool("dvc", "/opt/dvcvenv/bin/dvc")
    git_lfs = subprocess.run(["git", "lfs", "version"], capture_output=True).returncode == 0
    largest = max((p for p in (src / "t2v-A14B").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    model_bytes = sum(p.stat().st_size for p in (src / "t2v-A14B").rglob("*") if p.is_file())
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"),
            "filesystem": subprocess.run(["df", "-T", str(work)], capture_output=True, text=True).stdout.split("\n")[1].split()[1],
        },
        "peers": {
            "b3sum": subprocess.run([b3sum, "--version"], capture_output=True, text=True).stdout.strip() if b3sum else None,
            "dvc": subprocess.run([dvc, "--version"], capture_output=True, text=True).stdout.strip() if dvc else None,
            "git-lfs": subprocess.run(["git", "lfs", "version"], capture_output=True, text=True).stdout.strip() if git_lfs else None,
        },
        "model_bytes": model_bytes,
        "hash": bench_hash(largest, a.repeat, b3sum),
        "ingest": bench_ingest(work, src, a.repeat, dvc, git_lfs),
        "ops": bench_ops(work, src, a.repeat),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    print(summary(result), file=sys.stderr)
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


def summary(r: dict) -> str:
    h, ing, ops = r["hash"], r["ingest"], r["ops"]
    lines = [f"model: {r['model_bytes'] / 2**20:.0f} MiB per version; {ops['files_per_version']} files"]
    if "warm_speed_ratio" in h:
        lines.append(f"hash {h['file_bytes'] / 2**20:.0f} MiB: cas/b3sum speed warm {h['warm_speed_ratio']:.2f}x"
                     + (f", cold {h['cold_speed_ratio']:.2f}x" if "cold_speed_ratio" in h else ""))
    for peer in ("dvc", "git-lfs"):
        if f"speedup_vs_{peer}" in ing:
            s = ing[f"speedup_vs_{peer}"]
            lines.append(f"cas add speedup vs {peer}: " + ", ".join(
                f"{ph} {s[ph]['cmd_s']['median']:.2f}x ({s[ph]['cmd_sync_s']['median']:.2f}x with sync)" for ph in s))
    for name in ("cas", "dvc", "git-lfs"):
        if name in ing:
            lines.append(f"{name} peak RSS, MiB (median): " + ", ".join(
                f"{ph} {ing[name][ph]['peak_mib']['median']:.0f}" for ph in PHASES))
    lines.append(f"ops: use {ops['use_s']:.3f}s rollback {ops['rollback_s']:.3f}s path {ops['path_first_s']:.3f}s/"
                 f"{ops['path_again_s']:.3f}s checkout(hardlink) {ops['checkout_hardlink_s']:.3f}s --help {ops['help_s']:.3f}s "
                 f"(python start {ops['python_startup_s']:.3f}s)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
