"""What a push spends finding the blobs a bucket lacks, as the bucket grows.

    python bench/bench_s3_missing.py [--server moto|seaweedfs] [--sizes 1000 10000 100000] [--version-blobs 209] [--repeat 3]

A bucket prefix is filled with ``size`` small blob objects (through botocore directly); then a
version of ``--version-blobs`` blobs, half of them present, is checked against it with
``S3Remote.missing`` (a HEAD per key, 16 at a time) and with one listing of ``blobs/`` (what
`cas push` did before), alternately. Reported per size: the median time of each (min–max).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from casstore.model.digest import Digest  # noqa: E402
from casstore.remotes.base import blob  # noqa: E402
from casstore.remotes.s3 import S3Remote  # noqa: E402

from servers import Moto, SeaweedFS  # noqa: E402


async def by_listing(r: S3Remote, keys) -> set:
    present = {x.key: x.size async for x in r.listing("blobs/")}
    return {k for k in keys if present.get(k.path) != k.size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", choices=["moto", "seaweedfs"], default="moto")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--version-blobs", type=int, default=209)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    srv = Moto() if a.server == "moto" else SeaweedFS(Path(tempfile.mkdtemp(prefix="bench-seaweed.")))
    os.environ.update(srv.env(), AWS_ENDPOINT_URL=srv.url)
    os.environ.pop("AWS_PROFILE", None)
    bucket, client = srv.bucket(), srv.client()
    rows = {}
    filled = 0
    try:
        version = [os.urandom(64) + i.to_bytes(4, "big") for i in range(a.version_blobs)]
        keys = [blob(Digest.of_bytes(d), len(d)) for d in version]
        for d, k in zip(version[::2], keys[::2]):
            client.put_object(Bucket=bucket, Key="m/" + k.path, Body=d)
        for size in sorted(a.sizes):
            def put(i: int) -> None:
                d = i.to_bytes(8, "big")
                client.put_object(Bucket=bucket, Key="m/" + blob(Digest.of_bytes(d)).path, Body=d)

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(put, range(filled, size)))
            filled = size
            times: dict[str, list[float]] = {"head_per_key": [], "listing": []}

            async def go(times: dict[str, list[float]] = times) -> None:
                async with S3Remote(f"s3://{bucket}/m") as r:
                    for rnd in range(a.repeat):
                        for name in (["head_per_key", "listing"] if rnd % 2 == 0 else ["listing", "head_per_key"]):
                            t0 = time.perf_counter()
                            got = await (r.missing(keys) if name == "head_per_key" else by_listing(r, keys))
                            times[name].append(time.perf_counter() - t0)
                            assert got == set(keys[1::2]), name

            asyncio.run(go())
            rows[size] = {n: {"median": round(statistics.median(t), 3), "min": round(min(t), 3), "max": round(max(t), 3)}
                          for n, t in times.items()}
            print(f"{size} blobs in the bucket: {rows[size]}", file=sys.stderr)
    finally:
        srv.stop()
    result = {"server": a.server, "version_blobs": a.version_blobs, "repeat": a.repeat, "seconds": rows}
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
