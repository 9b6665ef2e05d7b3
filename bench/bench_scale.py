"""How casstore's commands grow with the data: 0.5 to 8 GiB per version, and 1,000 to 1,000,000
blobs per store, with a plot.

    python bench/bench_scale.py [--gib 0.5,1,2,4,8] [--blobs 1000,10000,100000,1000000]
                                [--repeat 3] [--work DIR] [--out JSON] [--plot PNG]

Bytes: one Wan-shaped version of each size (``wanshape.generate``: safetensors shards, a T5 and a
VAE ``.pth``, 200 small files). Timed, each followed by ``sync``, against the simplest tool that
moves the same bytes: ``cas add`` (copy) vs ``cp -r``; ``cas verify`` of the version (hot) vs
``b3sum`` of its blob files (hot); ``cas fetch`` from nginx on loopback vs curl file by file.
Pairs alternate, medians of ``--repeat``.

Blobs: the synthetic stores of ``bench_gc.py`` (blobs of 64-512 bytes, one version per 100 blobs,
100 files each, 10 % unreferenced), each version last used 90 days ago ("expired": the default
GC policy would delete all but the current ones, so `du`'s plan stats every blob it would free)
and again with every version used within the last 20 days ("in use"). Timed as whole `cas`
processes: `list`, `du`, `use`, `rollback`, `gc --dry-run`. `du` twice: without its listing
cache (removed before each run: it lists and matches every blob, and writes the cache) and from
it (nothing changed under ``blobs/`` since the last `du`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_gc import build  # noqa: E402
from rounds import cas_command  # noqa: E402
from wanshape import generate  # noqa: E402

from casstore.store import listing  # noqa: E402

MiB = 1 << 20
CAS = cas_command()
LISTING = listing.FILE


def timed(cmd, env=None, cwd=None, sync=True) -> float:
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {p.stderr.decode(errors='replace')[-2000:]}")
    if sync:
        subprocess.run(["sync"], check=True)
    return time.perf_counter() - t0


def shape(gib: float) -> dict:
    total = int(gib * 1024)
    t5 = min(512, total // 4)
    vae = min(64, total // 8)
    rest = max(1, total - t5 - vae - 2)
    shards = max(1, round(rest / 512))
    return {"shard_mib": rest // shards, "shards": shards, "t5_mib": t5, "vae_mib": vae, "small": 200}


def bench_bytes(work: Path, gib: float, repeat: int, env: dict, nginx_cls) -> dict:
    src = work / "src"
    shutil.rmtree(work, ignore_errors=True)
    generate(src, "m", **shape(gib))
    model = src / "m"
    files = sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file())
    size = sum((model / f).stat().st_size for f in files)
    runs: dict[str, list[float]] = {k: [] for k in ("add", "cp", "verify", "b3sum", "fetch", "curl")}
    b3sum = shutil.which("b3sum")
    def alternate(i: int, pair: list[tuple[str, list[str], dict]]) -> None:
        for name, cmd, kw in pair if i % 2 == 0 else pair[::-1]:
            runs[name].append(timed(cmd, **kw))

    ngx = None
    for i in range(repeat):
        store = work / f"store{i}"
        alternate(i, [("add", [*CAS, "--store", str(store), "-q", "add", str(model), "--name", "m", "--version", "1"],
                       {"env": env}),
                      ("cp", ["cp", "-r", str(model), str(work / f"cp{i}")], {})])
        shutil.rmtree(work / f"cp{i}")
        blobs = [str(p) for p in (store / "blobs").rglob("*") if p.is_file()]
        verify = [*CAS, "--store", str(store), "verify", "m@1"]
        timed(verify, env, sync=False)  # both read from the page cache
        pair = [("verify", verify, {"env": env, "sync": False})]
        if b3sum:
            pair.append(("b3sum", [b3sum, "--num-threads", str(os.cpu_count()), *blobs], {"sync": False}))
        alternate(i, pair)
        if ngx is None:
            srv = work / "srv"
            subprocess.run([*CAS, "--store", str(store), "-q", "push", "m@1", "--remote", str(srv / "cas")], env=env,
                           check=True, capture_output=True)
            shutil.copytree(model, srv / "plain", copy_function=os.link)
            ngx = nginx_cls(srv, work / "nginx")
            cfg = work / "curl.cfg"
            cfg.write_text("".join(f'url = "{ngx.url}plain/{f}"\noutput = "{work}/curl/{f}"\n' for f in files))
        shutil.rmtree(store)
        alternate(i, [("fetch", [*CAS, "--store", str(work / "fetched"), "-q", "fetch", "m@1", "--remote",
                                 ngx.url + "cas/"], {"env": env}),
                      ("curl", ["curl", "-s", "-f", "--create-dirs", "-K", str(cfg)], {})])
        shutil.rmtree(work / "fetched")
        shutil.rmtree(work / "curl")
    if ngx is not None:
        ngx.stop()
    shutil.rmtree(work, ignore_errors=True)
    out: dict = {"gib": gib, "bytes": size, "files": len(files)}
    for k, v in runs.items():
        if v:
            out[f"{k}_s"] = statistics.median(v)
    for ours, peer in (("add", "cp"), ("verify", "b3sum"), ("fetch", "curl")):
        if runs[peer]:
            ratios = sorted(p / c for p, c in zip(runs[peer], runs[ours]))
            out[f"{ours}_vs_{peer}"] = {"median": round(statistics.median(ratios), 3), "min": round(ratios[0], 3),
                                        "max": round(ratios[-1], 3)}
    return out


def mark_in_use(root: Path) -> None:
    rnd = random.Random(1)
    now = time.time()
    for model in (root / "refs").iterdir():
        used = model / "used"
        used.mkdir(exist_ok=True)
        for tag in (model / "tags").iterdir():
            p = used / tag.name
            p.touch()
            t = now - rnd.uniform(0, 20) * 86400
            os.utime(p, (t, t))


def bench_blobs(work: Path, n: int, repeat: int, env: dict) -> dict:
    root = work / f"store-{n}"
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    build(root, n)
    out: dict = {"blobs": n, "versions": max(100, n // 100), "build_s": time.perf_counter() - t0}
    per_model = out["versions"] // 10

    def cmd(*args) -> float:
        return timed([*CAS, "--store", str(root), *args], env, sync=False)

    def du_cold() -> float:
        (root / LISTING).unlink(missing_ok=True)
        return cmd("du")

    cmd("list")  # the first run builds the manifest summaries; it is timed on its own
    time.sleep(listing.SETTLE_NS / 1e9)  # so that du may cache the listing of every blobs/XX directory
    for label in ("expired", "in_use"):
        if label == "in_use":
            mark_in_use(root)
        out[f"list_{label}_s"] = statistics.median(cmd("list") for _ in range(repeat))
        out[f"du_cold_{label}_s"] = statistics.median(du_cold() for _ in range(repeat))  # lists every blob
        cmd("du")
        out[f"du_{label}_s"] = statistics.median(cmd("du") for _ in range(repeat))  # from the listing cache
        out[f"gc_dry_run_{label}_s"] = statistics.median(cmd("gc", "--dry-run") for _ in range(repeat))
    out["use_s"] = statistics.median(cmd("use", f"model3@1.{i % per_model}.0") for i in range(repeat * 2))
    out["rollback_s"] = statistics.median(cmd("rollback", "model3") for _ in range(repeat))
    shutil.rmtree(root, ignore_errors=True)
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    rows = result["bytes"]
    if rows:
        gib = [r["bytes"] / 2**30 for r in rows]
        for key, label, style in (("add_s", "cas add", "o-"), ("cp_s", "cp -r + sync", "o--"),
                                  ("fetch_s", "cas fetch (nginx)", "s-"), ("curl_s", "curl (nginx) + sync", "s--"),
                                  ("verify_s", "cas verify (hot)", "^-"), ("b3sum_s", "b3sum (hot)", "^--")):
            if all(key in r for r in rows):
                a.plot(gib, [r[key] for r in rows], style, label=label)
        a.set_xlabel("version size (GiB)")
        a.set_ylabel("seconds")
        a.set_title(f"Bytes: one version, {min(gib):.2g}-{max(gib):.2g} GiB")
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    rows = result["blobs"]
    if rows:
        n = [r["blobs"] for r in rows]
        for key, label, style in (("list_in_use_s", "cas list", "o-"), ("du_in_use_s", "cas du (in use)", "s-"),
                                  ("du_cold_in_use_s", "cas du (in use, no listing cache)", "s:"),
                                  ("du_expired_s", "cas du (all expired)", "s--"),
                                  ("gc_dry_run_in_use_s", "cas gc --dry-run (in use)", "^-"),
                                  ("use_s", "cas use", "d-"), ("rollback_s", "cas rollback", "x-")):
            if all(key in r for r in rows):
                b.plot(n, [r[key] for r in rows], style, label=label)
        b.set_xscale("log")
        b.set_yscale("log")
        b.set_xlabel("blobs in the store (versions = blobs / 100)")
        b.set_ylabel("seconds (whole process)")
        b.set_title(f"Store size: {min(n):,}-{max(n):,} blobs")
        b.legend(fontsize=8)
        b.grid(alpha=0.3, which="both")
    fig.suptitle(f"casstore scaling, {result['date']}, {result['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", default="0.5,1,2,4,8")
    ap.add_argument("--blobs", default="1000,10000,100000,1000000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--plot", type=Path)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="cas-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CAS_CONFIG": str(work / "none.toml"), "CAS_HASH_CACHE": str(work / "hc.sqlite")}
    from servers import Nginx

    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "machine": f"{os.cpu_count()} CPUs, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') >> 30} GiB",
                    "bytes": [], "blobs": []}
    for g in (float(x) for x in a.gib.split(",") if x):
        result["bytes"].append(bench_bytes(work / "bytes", g, a.repeat, env, Nginx))
        print(json.dumps(result["bytes"][-1]), file=sys.stderr)
    for n in (int(x) for x in a.blobs.split(",") if x):
        result["blobs"].append(bench_blobs(work, n, a.repeat, env))
        print(json.dumps(result["blobs"][-1]), file=sys.stderr)
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    if a.plot:
        plot(result, a.plot)
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
