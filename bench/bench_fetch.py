"""Cold fetch of a Wan-shaped version from nginx on loopback: cas vs curl, aria2c and dvc pull.

    python bench/bench_fetch.py [--work DIR] [--repeat 3] [--shard-mib 256] ...

One nginx serves three trees of the same files: the casstore remote layout (pushed by `cas
push`), the plain files (for curl and aria2c, which fetch unverified), and a DVC HTTP remote
(filled by `dvc push` to a local remote, then read over HTTP). Each tool fetches into an empty
destination; runs are interleaved; the server's files stay in the page cache, so the figures
are about the clients (``--dest /dev/shm/...`` takes the destination disk out as well).
Reported: the command's time, the time until `sync` finished (casstore fsyncs before it
returns; the others leave writeback to the kernel), peak RSS, the bytes nginx sent (its access
log) against the payload, each round's figures, and each peer's time over cas's per round
(median, min, max). The tools' order rotates every round.
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
from rounds import cas_command, speedup  # noqa: E402
from wanshape import add_shape_arguments, generate_from_args  # noqa: E402

MODEL = "t2v-A14B"


def timed(cmd, cwd=None, env=None) -> dict:
    """Wall time, wall time including a following sync, and the process's peak RSS (GNU time)."""
    subprocess.run(["sync"], check=True)
    rss_file = Path(tempfile.mktemp(prefix="rss."))
    wrap = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] if os.path.exists("/usr/bin/time") else []
    t0 = time.perf_counter()
    p = subprocess.run([*wrap, *cmd], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t1 = time.perf_counter()
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {p.stderr.decode(errors='replace')[-2000:]}")
    subprocess.run(["sync"], check=True)
    out = {"cmd_s": t1 - t0, "cmd_sync_s": time.perf_counter() - t0}
    if wrap:
        out["peak_rss_mib"] = int(rss_file.read_text().split()[-1]) / 1024
        rss_file.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    add_shape_arguments(ap)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--dest", type=Path, help="where the tools write (default: under --work); a tmpfs such as "
                    "/dev/shm takes the disk's writeback out of the comparison")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="cas-bench-fetch-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "src"
    if not (src / MODEL).exists():
        generate_from_args(src, MODEL, a)
    files = sorted(p.relative_to(src / MODEL).as_posix() for p in (src / MODEL).rglob("*") if p.is_file())
    total = sum((src / MODEL / f).stat().st_size for f in files)
    cas = cas_command()
    env = {**os.environ, "CAS_CONFIG": str(work / "cfg.toml"), "CAS_HASH_CACHE": str(work / "hc.sqlite"),
           "DVC_NO_ANALYTICS": "1"}
    srv = work / "srv"
    if not (srv / "cas").exists():
        subprocess.run([*cas, "--store", str(work / "pubstore"), "add", str(src / MODEL), "--name", MODEL, "--version", "1.0.0"],
                       env=env, check=True, capture_output=True)
        subprocess.run([*cas, "--store", str(work / "pubstore"), "push", f"{MODEL}@1.0.0", "--remote", str(srv / "cas")],
                       env=env, check=True, capture_output=True)
        shutil.copytree(src / MODEL, srv / "plain" / MODEL, copy_function=os.link)
    dvc = shutil.which("dvc") or ("/opt/dvcvenv/bin/dvc" if os.path.exists("/opt/dvcvenv/bin/dvc") else None)
    dvcrepo = work / "dvcrepo"
    if dvc and not dvcrepo.exists():
        dvcrepo.mkdir()
        shutil.copytree(src / MODEL, dvcrepo / MODEL, copy_function=os.link)
        run = lambda *c: subprocess.run([dvc, *c], cwd=dvcrepo, env=env, check=True, capture_output=True)  # noqa: E731
        run("init", "--no-scm", "-q")
        run("add", "-q", MODEL)
        run("remote", "add", "local", str(srv / "dvcstore"))
        run("push", "-q", "-r", "local")
    from servers import Nginx

    ngx = Nginx(srv, work / "nginx", access_log=True)
    results: dict[str, list[dict]] = {"cas": [], "aria2c": [], "curl": [], "dvc": []}

    def run_cas(dest: Path) -> dict:
        return timed([*cas, "--store", str(dest / "casstore"), "-q", "fetch", f"{MODEL}@1.0.0",
                      "--remote", ngx.url + "cas/", "--jobs", str(a.jobs)], env=env)

    def run_aria2c(dest: Path) -> dict:
        lst = dest / "aria2.txt"
        lst.write_text("".join(f"{ngx.url}plain/{MODEL}/{f}\n  out={f}\n" for f in files))
        return timed(["aria2c", "-x8", "-j8", "-q", "--allow-overwrite=true", "-d", str(dest / "aria2"), "-i", str(lst)])

    def run_curl(dest: Path) -> dict:
        cfg = dest / "curl.cfg"
        cfg.write_text("".join(f'url = "{ngx.url}plain/{MODEL}/{f}"\noutput = "{dest}/curl/{f}"\n' for f in files))
        return timed(["curl", "-s", "-f", "--create-dirs", "-K", str(cfg)])

    def run_dvc(dest: Path) -> dict:
        clone = dest / "dvc"
        clone.mkdir()
        shutil.copytree(dvcrepo / ".dvc", clone / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
        shutil.copy(dvcrepo / f"{MODEL}.dvc", clone)
        subprocess.run([dvc, "remote", "add", "-d", "web", f"{ngx.url}dvcstore"], cwd=clone, env=env, check=True,
                       capture_output=True)
        return timed([dvc, "pull", "-q", "-r", "web"], cwd=clone, env=env)

    tools = {"cas": run_cas, "aria2c": run_aria2c if shutil.which("aria2c") else None,
             "curl": run_curl if shutil.which("curl") else None, "dvc": run_dvc if dvc else None}
    order = [t for t, fn in tools.items() if fn is not None]
    try:
        for i in range(a.repeat):
            dest = (a.dest or work) / f"run{i}"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            for tool in order[i % len(order):] + order[: i % len(order)]:
                since = len(ngx.requests())
                r = tools[tool](dest)  # type: ignore[misc]
                r["wire_vs_payload"] = sum(n for *_, n, _ in ngx.requests()[since:]) / total
                results[tool].append(r)
            for f in files[:3] + files[-3:]:  # every tool got the same bytes
                want = (src / MODEL / f).read_bytes()
                for tree in ("aria2", "curl", f"dvc/{MODEL}"):
                    if (dest / tree).exists():
                        assert (dest / tree / f).read_bytes() == want, (tree, f)
            shutil.rmtree(dest)
    finally:
        ngx.stop()

    summary = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "bytes": total, "files": len(files),
               "jobs": a.jobs, "dest": str(a.dest or work), "tools": {}, "runs": results}
    for tool, runs in results.items():
        if runs:
            summary["tools"][tool] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    for tool in ("aria2c", "curl", "dvc"):
        if results[tool]:
            summary[f"cas_speedup_vs_{tool}"] = {
                k: speedup([p[k] for p in results[tool]], [c[k] for c in results["cas"]]) for k in ("cmd_s", "cmd_sync_s")}
    text = json.dumps(summary, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
