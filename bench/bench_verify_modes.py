"""Hash-while-streaming vs hashing the assembled file: which verification the download engine uses.

    python bench/bench_verify_modes.py [--mib 1024]

Both from memory / page cache, so only the hashing differs. Prints GiB/s for: the assembled
file (casstore.model.digest.hash_file: 64 MiB mmap windows, all cores), and streaming 1 MiB chunks as
a download delivers them (multithreaded and single-threaded).
"""

import argparse
import os
import tempfile
import time

import blake3

from casstore.model.digest import StreamHasher, hash_file


def best(fn, n=3):
    out = 9e9
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=1024)
    a = ap.parse_args()
    size = a.mib << 20
    with tempfile.NamedTemporaryFile() as f:
        for _ in range(a.mib // 16):
            f.write(os.urandom(16 << 20))
        f.flush()
        data = memoryview(open(f.name, "rb").read())

        def stream(threads):
            h = StreamHasher() if threads else blake3.blake3()
            for i in range(0, size, 1 << 20):
                h.update(data[i : i + (1 << 20)])

        hash_file(f.name)
        gib = size / (1 << 30)
        print(f"assembled file, mmap windows, all cores: {gib / best(lambda: hash_file(f.name)):.2f} GiB/s")
        print(f"streaming 1 MiB chunks, all cores:      {gib / best(lambda: stream(True)):.2f} GiB/s")
        print(f"streaming 1 MiB chunks, one core:       {gib / best(lambda: stream(False)):.2f} GiB/s")


if __name__ == "__main__":
    main()
