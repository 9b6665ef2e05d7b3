"""N nodes fetching one version at once through a cache tier: bytes the origin sends, and time.

    python bench/bench_cache_tier.py [--work DIR] [--readers 4 8 16] [--repeat 2] [--big-mib 256] [--origin-rate 20m]

The origin is nginx serving a directory remote, rate-limited per connection (a far origin);
the tiers: none (straight from the origin), nginx `proxy_cache` with its defaults plus
`proxy_cache_lock on`, and the `slice` block and the varnish VCL of docs/guides/team-server.md
as written; and "shared store": the publisher's store directory itself as the remote (the
node-local tier of docs/guides/team-nas.md), its bytes counted from each fetch's own report (read
from the source: downloaded plus copied). Its wall time is a local disk's, with no origin rate
limit: not comparable with the HTTP tiers'. For each N, N `cas fetch` processes start together
into empty stores; reported per tier and N: origin bytes of blobs / the version's bytes, and the
wall time until the last finished (median of the repeats, with min and max), and how many
fetches failed. Tiers rotate within each round.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

from servers import Nginx, NginxBlock, Varnish  # noqa: E402

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "team-server.md"
DEFAULTS = """proxy_cache_path /var/cache/nginx/cas levels=1:2 keys_zone=cas:64m max_size=500g inactive=30d use_temp_path=off;
server {
    listen 80;
    location /cas/ {
        proxy_cache cas;
        proxy_cache_valid 200 206 30d;
        proxy_cache_lock on;
        proxy_pass http://origin.example.com/cas/;
        location /cas/index/ { proxy_pass http://origin.example.com/cas/index/; }
    }
}
"""


def documented(marker: str, lang: str) -> str:
    m = re.search(rf"<!-- {marker}:[^>]*-->\s*```{lang}\n(.*?)```\s*<!-- /{marker} -->", GUIDE.read_text(), re.S)
    if not m:
        raise SystemExit(f"no {marker} block in {GUIDE}")
    return m.group(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--readers", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--origin-rate", default="20m", help="nginx limit_rate per origin connection")
    ap.add_argument("--tiers", nargs="+", default=None, help="only these (none, proxy_cache, slice, varnish, shared)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-cache."))
    cas = cas_command()
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "w.bin").write_bytes(os.urandom(a.big_mib << 20))
    (src / "v.bin").write_bytes(os.urandom(24 << 20))
    for i in range(40):
        (src / f"t{i}.json").write_bytes(os.urandom(1500 + i))
    size = sum(p.stat().st_size for p in src.iterdir())
    env = {**os.environ, "CAS_HASH_CACHE": str(work / "hashes.sqlite")}
    subprocess.run([*cas, "--store", str(work / "pub"), "add", str(src), "--name", "m", "--version", "1"],
                   check=True, capture_output=True, env=env)
    subprocess.run([*cas, "--store", str(work / "pub"), "push", "m@1", "--remote", str(work / "www" / "cas")],
                   check=True, capture_output=True, env=env)
    tiers = {"none": None, "proxy_cache defaults": DEFAULTS, "slice (guide)": documented("cache-tier", "nginx"),
             "varnish (guide)": documented("cache-tier-varnish", "vcl"), "shared store": None}
    if a.tiers:
        tiers = {t: v for t, v in tiers.items() if t.split()[0] in a.tiers}
    rows: dict[str, dict[int, list[tuple[float, float, int]]]] = {t: {n: [] for n in a.readers} for t in tiers}
    for rnd in range(a.repeat):
        for n in a.readers:
            names = list(tiers)
            names = names[rnd % len(names):] + names[:rnd % len(names)]
            for tier in names:
                run_dir = work / "run"
                shutil.rmtree(run_dir, ignore_errors=True)
                origin = Nginx(work / "www", run_dir / "origin", access_log=True, limit_rate=a.origin_rate)
                cache: NginxBlock | Varnish | None = None
                host, port = origin.url.rstrip("/").removeprefix("http://").split(":")
                if tier == "shared store":
                    pass
                elif tier.startswith("varnish"):
                    cache = Varnish(tiers[tier] or "", run_dir / "cache", {
                        '.host = "origin.example.com";': f'.host = "{host}";', '.port = "80";': f'.port = "{port}";'},
                        storage=f"malloc,{2 * size >> 20}m")
                elif tiers[tier] is not None:
                    cache = NginxBlock(tiers[tier], run_dir / "cache", {
                        "listen 80;": "listen 127.0.0.1:{port};",
                        "/var/cache/nginx/cas": str(run_dir / "cache" / "store"),
                        "http://origin.example.com": origin.url.rstrip("/"),
                    })
                url = str(work / "pub") if tier == "shared store" else (cache.url if cache else origin.url) + "cas/"
                try:
                    t0 = time.perf_counter()
                    procs = [subprocess.Popen([*cas, "--json", "--store", str(run_dir / f"node{i}"), "fetch", "m@1",
                                               "--remote", url],
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
                             for i in range(n)]
                    failed, read = 0, 0
                    for p in procs:
                        out, err = p.communicate(timeout=3600)
                        if p.returncode != 0:  # counted, and said: a tier that makes fetches fail is a finding
                            failed += 1
                            print(f"{tier}, N={n}: a fetch failed: {err.decode(errors='replace')[-300:]}", file=sys.stderr)
                        else:
                            got = json.loads(out)
                            read += got["bytes_downloaded"] + got["bytes_copied"]
                    dt = time.perf_counter() - t0
                    sent = (read if tier == "shared store"
                            else sum(b for _, path, _, b, _ in origin.requests() if "/blobs/" in path))
                finally:
                    if cache:
                        cache.stop()
                    origin.stop()
                rows[tier][n].append((sent / size, dt, failed))
                print(f"round {rnd + 1} N={n} {tier}: origin {sent / size:.2f}x, {dt:.1f} s, {failed} failed",
                      file=sys.stderr)
    result = {"version_bytes": size, "origin_rate": a.origin_rate, "repeat": a.repeat, "tiers": {}}
    for tier, by_n in rows.items():
        result["tiers"][tier] = {}
        for n, got in by_n.items():
            ratios, times = [g[0] for g in got], [g[1] for g in got]
            result["tiers"][tier][n] = {
                "origin_over_version": {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2),
                                        "max": round(max(ratios), 2)},
                "wall_s": {"median": round(statistics.median(times), 1), "min": round(min(times), 1),
                           "max": round(max(times), 1)},
                "failed_fetches": sum(g[2] for g in got)}
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
