"""Which S3 client moves bytes faster from Python on this machine: obstore (Rust object_store) or
aiobotocore? One moto server; interleaved rounds; wall time, this process's CPU time (the
client's cost: the server is another process) and the server's CPU time.

    pip install -e '.[bench]' && python bench/bench_s3_clients.py [--size 256] [--rounds 3]
"""

import argparse
import asyncio
import os
import resource
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_s3 import Moto  # noqa: E402


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

async def read_obstore(st, key, size, part, jobs):
    import obstore as obs
    sem = asyncio.Semaphore(jobs)
    async def one(a):
        async with sem:
            r = await obs.get_async(st, key, options={"range": (a, min(size, a + part))})
            n = 0
            async for c in r.stream(min_chunk_size=1 << 20):
                n += len(c)
            return n
    return sum(await asyncio.gather(*(one(a) for a in range(0, size, part))))

async def read_boto(client, bucket, key, size, part, jobs):
    sem = asyncio.Semaphore(jobs)
    async def one(a):
        async with sem:
            r = await client.get_object(Bucket=bucket, Key=key, Range=f"bytes={a}-{min(size, a + part) - 1}")
            n = 0
            async with r["Body"] as body:
                while c := await body.read(1 << 20):
                    n += len(c)
            return n
    return sum(await asyncio.gather(*(one(a) for a in range(0, size, part))))

async def write_obstore(st, key, path, part, jobs):
    import obstore as obs
    await obs.put_async(st, key, path, chunk_size=part, max_concurrency=jobs)

async def write_boto(client, bucket, key, path, size, part, jobs):
    up = await client.create_multipart_upload(Bucket=bucket, Key=key)
    sem = asyncio.Semaphore(jobs)
    async def one(i, a):
        async with sem:
            with open(path, "rb") as f:
                data = os.pread(f.fileno(), min(part, size - a), a)
            r = await client.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=i, Body=data)
            return {"PartNumber": i, "ETag": r["ETag"]}
    parts = await asyncio.gather(*(one(i + 1, a) for i, a in enumerate(range(0, size, part))))
    await client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                           MultipartUpload={"Parts": list(parts)}, IfNoneMatch="*")

async def main(a):
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    srv = Moto()
    url = srv.url
    try:
        import aiobotocore.session
        from obstore.store import S3Store
        bucket = "bench-" + secrets.token_hex(4)
        size = a.size << 20
        path = f"/tmp/bench-s3-{os.getpid()}.bin"
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        sess = aiobotocore.session.get_session()
        async with sess.create_client("s3", endpoint_url=url, region_name="us-east-1") as client:
            await client.create_bucket(Bucket=bucket)
            st = S3Store(bucket, endpoint=url, region="us-east-1", allow_http=True)
            await write_boto(client, bucket, "obj", path, size, a.part << 20, a.jobs)
            res = {k: [] for k in ("read obstore", "read aiobotocore", "write obstore", "write aiobotocore")}
            server = {k: [] for k in res}
            for r in range(a.rounds):
                order = ["obstore", "aiobotocore"] if r % 2 == 0 else ["aiobotocore", "obstore"]
                for who in order:
                    t0, c0, s0 = time.perf_counter(), cpu(), srv.cpu()
                    if who == "obstore":
                        n = await read_obstore(st, "obj", size, a.part << 20, a.jobs)
                    else:
                        n = await read_boto(client, bucket, "obj", size, a.part << 20, a.jobs)
                    assert n == size
                    res[f"read {who}"].append((time.perf_counter() - t0, cpu() - c0))
                    server[f"read {who}"].append(srv.cpu() - s0)
                for who in order:
                    key = f"w-{who}-{r}"
                    t0, c0, s0 = time.perf_counter(), cpu(), srv.cpu()
                    if who == "obstore":
                        await write_obstore(st, key, path, a.part << 20, a.jobs)
                    else:
                        await write_boto(client, bucket, key, path, size, a.part << 20, a.jobs)
                    res[f"write {who}"].append((time.perf_counter() - t0, cpu() - c0))
                    server[f"write {who}"].append(srv.cpu() - s0)
                    await client.delete_object(Bucket=bucket, Key=key)
        os.unlink(path)
        print(f"{a.size} MiB object, {a.part} MiB parts, {a.jobs} at once, {a.rounds} interleaved rounds (median [min-max])")
        for k, v in res.items():
            w, c = [x[0] for x in v], [x[1] for x in v]
            print(f"{k:<20} wall {statistics.median(w):6.2f}s [{min(w):.2f}-{max(w):.2f}]  "
                  f"client cpu {statistics.median(c):6.2f}s [{min(c):.2f}-{max(c):.2f}]  "
                  f"server cpu {statistics.median(server[k]):6.2f}s  {a.size / statistics.median(w):7.1f} MiB/s")
        print(f"{'read':<6} client cpu, obstore/aiobotocore: "
              f"{statistics.median(x[1] for x in res['read obstore']) / statistics.median(x[1] for x in res['read aiobotocore']):.2f}")
    finally:
        srv.stop()

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="MiB")
    p.add_argument("--part", type=int, default=16, help="MiB per ranged GET and per uploaded part")
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(p.parse_args()))
