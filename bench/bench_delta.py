"""Delta updates: bytes on the wire and time of `cas update` with and without delta, against the
ideal (the bytes of the tensors and small files that changed), and `dvc pull` of the same update
when dvc is installed; all from one nginx on loopback, read from its access log.

    pip install -e '.[bench]'            # dvc is optional: 'dvc[http]' in any venv (--dvc PATH)
    python bench/bench_delta.py --repeat 3

Pairs (each a 1.0.0 -> 1.1.0 release of safetensors shards):
- wan: three tensors rewritten, one inserted as the 11th (every later offset moves), config changed;
- finetune-5pct: 5% of the tensors of every shard rewritten;
- insert-first: one tensor inserted first in name order;
- lora-all: every tensor rewritten (nothing to gain: the cost is the maps);
- fp8: every tensor halved in size (a dtype change; same);
- pth-insert: 1 MiB inserted at 40 % of each of two `.pth` files of random bytes (256 and 96 MiB:
  no tensor structure, so content-defined chunks), config changed.
Runs are interleaved (auto, never, dvc, auto, never, dvc, ...) on fresh stores.
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from rounds import cas_command, speedup  # noqa: E402

CAS = cas_command()

from casstore.testing import modelfiles  # noqa: E402

from servers import Nginx  # noqa: E402  (a plain module: no pytest needed)

MiB = 1 << 20


def cas(store: Path, *args, env=None) -> dict:
    p = subprocess.run([*CAS, "--store", str(store), "--json", *map(str, args)],
                       capture_output=True, text=True, env=env, check=False)
    if p.returncode:
        raise SystemExit(f"cas {' '.join(map(str, args))} failed:\n{p.stderr}")
    return json.loads(p.stdout) if p.stdout.strip() else {}


def write_pair(root: Path, kind: str, tensors: int, tensor_mib: int, shards: int) -> tuple[Path, Path, int]:
    """1.0.0 and 1.1.0 of one pair, and the ideal: bytes of what changed."""
    size = tensor_mib * MiB
    if kind == "wan":
        return modelfiles.release_pair(root, tensors=tensors, tensor_size=size, inserted_size=4 * MiB, shards=shards)
    if kind == "pth-insert":  # files without tensor structure: content-defined chunks
        old, new = root / "1.0.0", root / "1.1.0"
        for name, mib in (("models_t5_umt5-xxl-enc-bf16.pth", 256), ("Wan2.1_VAE.pth", 96)):
            data = b"".join(modelfiles.random_bytes(16 * MiB, f"{name}/{i}") for i in range(mib // 16))
            at = len(data) * 2 // 5
            for d, body in ((old, data), (new, data[:at] + modelfiles.random_bytes(MiB, f"{name}/ins") + data[at:])):
                d.mkdir(parents=True, exist_ok=True)
                (d / name).write_bytes(body)
        for d, v in ((old, "1.0.0"), (new, "1.1.0")):
            (d / "config.json").write_text(json.dumps({"release": v}))
        return old, new, 2 * MiB + len((new / "config.json").read_bytes())
    old, new, ideal = root / "1.0.0", root / "1.1.0", 0
    for s in range(shards):
        ts = modelfiles.shard_tensors(f"blocks.s{s}", tensors, size, f"{kind}{s}")
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        modelfiles.safetensors(old / name, ts)
        if kind == "finetune-5pct":
            for i in range(0, tensors, 20):
                ts[i] = (ts[i][0], modelfiles.random_bytes(size, f"ft{s}/{i}"))
                ideal += size
        elif kind == "insert-first" and s == 0:
            ts.insert(0, ("aaa.first.weight", modelfiles.random_bytes(size, "first")))
            ideal += size
        elif kind == "lora-all":
            ts = [(n, modelfiles.random_bytes(size, f"lora{s}/{n}")) for n, _ in ts]
            ideal += tensors * size
        elif kind == "fp8":
            ts = [(n, modelfiles.random_bytes(size // 2, f"fp8{s}/{n}")) for n, _ in ts]
            ideal += tensors * size // 2
        modelfiles.safetensors(new / name, ts)
    for d, v in ((old, "1.0.0"), (new, "1.1.0")):
        (d / "config.json").write_text(json.dumps({"release": v}))
    return old, new, ideal + len((new / "config.json").read_bytes())


def wire(server: Nginx, since: int) -> int:
    return sum(sent for *_, sent, _ in server.requests()[since:])


def run_cas(work: Path, server: Nginx, url: str, mode: str, limit: str | None = None) -> dict:
    store = work / f"user-{mode}-{time.monotonic_ns()}"
    cas(store, "fetch", "m@1.0.0", "--remote", url)
    os.sync()
    since = len(server.requests())
    t0 = time.perf_counter()
    out = cas(store, "update", "m", "--remote", url, "--delta", mode, *(["--limit-rate", limit] if limit else []))
    os.sync()
    elapsed = time.perf_counter() - t0
    shutil.rmtree(store, ignore_errors=True)
    return {"seconds": elapsed, "wire": wire(server, since), "from_local": out["bytes_from_local"]}


class Dvc:
    """The same two releases as a dvc-tracked directory pushed to a dvc remote under nginx's root."""

    def __init__(self, exe: str, work: Path, old: Path, new: Path, remote_dir: Path) -> None:
        self.exe, self.work = exe, work
        pub = work / "dvc-pub"
        pub.mkdir()
        self.run(pub, "init", "--no-scm", "-q")
        self.run(pub, "remote", "add", "-d", "nas", str(remote_dir))
        self.dvcfiles = {}
        for v, src in (("1.0.0", old), ("1.1.0", new)):
            shutil.rmtree(pub / "model", ignore_errors=True)
            shutil.copytree(src, pub / "model")
            self.run(pub, "add", "-q", "model")
            self.run(pub, "push", "-q")
            self.dvcfiles[v] = (pub / "model.dvc").read_text()

    def run(self, cwd: Path, *args) -> None:
        p = subprocess.run([self.exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
        if p.returncode:
            raise SystemExit(f"dvc {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")

    def update(self, server: Nginx, url: str) -> dict:
        repo = self.work / f"dvc-user-{time.monotonic_ns()}"
        repo.mkdir()
        self.run(repo, "init", "--no-scm", "-q")
        self.run(repo, "remote", "add", "-d", "web", url)
        (repo / "model.dvc").write_text(self.dvcfiles["1.0.0"])
        self.run(repo, "pull", "-q")
        os.sync()
        since = len(server.requests())
        (repo / "model.dvc").write_text(self.dvcfiles["1.1.0"])
        t0 = time.perf_counter()
        self.run(repo, "pull", "-q")
        os.sync()
        elapsed = time.perf_counter() - t0
        shutil.rmtree(repo, ignore_errors=True)
        return {"seconds": elapsed, "wire": wire(server, since), "from_local": 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="wan,finetune-5pct,insert-first,lora-all,fp8")
    ap.add_argument("--tensors", type=int, default=48)
    ap.add_argument("--tensor-mib", type=int, default=4)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    venv_dvc = "/opt/dvcvenv/bin/dvc"  # where docs/benchmarks.md installs the peers
    ap.add_argument("--dvc", default=shutil.which("dvc") or (venv_dvc if os.path.exists(venv_dvc) else None),
                    help="dvc executable (with dvc-http); left out if absent")
    ap.add_argument("--limit-rate", help="pass --limit-rate to `cas update` (a WAN link's bandwidth); dvc has no such "
                                         "option, so it is left out then")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    report = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus", "date": time.strftime("%Y-%m-%d"),
              "command": " ".join(sys.argv), "pairs": {}}
    for kind in a.pairs.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-delta-") as tmp:
            work = Path(tmp)
            old, new, ideal = write_pair(work / "src", kind, a.tensors, a.tensor_mib, a.shards)
            nas = work / "www" / "cas"
            pub = work / "pub"
            pushes = []
            for v, src in (("1.0.0", old), ("1.1.0", new)):
                cas(pub, "add", src, "--name", "m", "--version", v)
                pushes.append(cas(pub, "push", f"m@{v}", "--remote", nas))
            maps = sum(p.stat().st_size for p in (nas / "chunks").rglob("*") if p.is_file())
            new_bytes = sum(p.stat().st_size for p in new.rglob("*") if p.is_file())
            modes = ["auto", "never"]
            dvc = None
            if a.dvc and not a.limit_rate:
                dvc = Dvc(a.dvc, work, old, new, work / "www" / "dvc")
                modes.append("dvc")
            server = Nginx(work / "www", work / "nginx", access_log=True)
            runs: dict[str, list[dict]] = {m: [] for m in modes}
            try:
                for _ in range(a.repeat):
                    for m in modes:
                        if m == "dvc" and dvc is not None:
                            runs[m].append(dvc.update(server, server.url + "dvc"))
                        else:
                            runs[m].append(run_cas(work, server, server.url + "cas/", m, a.limit_rate))
            finally:
                server.stop()
            row = {"ideal_bytes": ideal, "version_bytes": new_bytes, "map_bytes": maps,
                   "map_seconds_at_push": round(sum(p.get("map_seconds", 0) for p in pushes), 3)}
            for m, rs in runs.items():
                wires = [r["wire"] for r in rs]
                secs = [r["seconds"] for r in rs]
                row[m] = {"wire_bytes": statistics.median(wires), "wire_vs_ideal": round(statistics.median(wires) / ideal, 3),
                          "seconds_median": round(statistics.median(secs), 3),
                          "seconds_min": round(min(secs), 3), "seconds_max": round(max(secs), 3),
                          "from_local": rs[0]["from_local"]}
            for m in modes[1:]:
                row[f"auto_speedup_vs_{m}"] = speedup([o["seconds"] for o in runs[m]], [r["seconds"] for r in runs["auto"]])
            report["pairs"][kind] = row
            print(json.dumps({kind: row}, indent=1), flush=True)
    if a.out:
        a.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
