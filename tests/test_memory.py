"""Peak resident memory of a real `cas fetch` process: under 150 MiB in every mode (plain, with
--limit-rate, from S3), whatever the version's size. The process's own high-water mark comes
from the kernel (``wait4``'s rusage of that one child)."""

import os
import platform
import shutil
import subprocess
import sys

import pytest

from casstore.transfer.memory import limit_arenas

from conftest import CasRunner, make_model
from servers import Moto, nginx

MiB = 1 << 20
LIMIT_MIB = 150


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_allocator_takes_the_arena_limit():
    assert limit_arenas()  # mallopt returns 0 for a parameter it does not know


# The command runs as the child of a small Python process, which reports the child's peak. The
# kernel carries a process's high-water mark across exec, and subprocess starts children with
# vfork: measured straight from this test process, the figure would be pytest's own size.
_MEASURE = ("import os, subprocess, sys\n"
            "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
            "_, status, usage = os.wait4(p.pid, 0)\n"
            "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n")


def peak_rss_mib(argv, env=None) -> float:
    p = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, argv)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    code, kib = map(int, p.stdout.split())
    assert code == 0, p.stderr
    return kib / 1024  # ru_maxrss is in KiB on Linux


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A 340 MiB version (six large files, 100 small ones) in a directory remote."""
    root = tmp_path_factory.mktemp("mem")
    files: dict[str, bytes | int] = {f"shard-{i}.safetensors": 48 * MiB for i in range(6)}
    files.update({f"small/{i}.json": 64 << 10 for i in range(100)})
    files.update({f"tok/{i}.bin": MiB for i in range(20)})
    src = make_model(root / "src", files)
    pub = CasRunner(root / "pub", root)
    pub("add", src, "--name", "m", "--version", "1.0.0")
    pub("push", "m@1.0.0", "--remote", root / "srv" / "cas")
    return root, pub


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("--limit-rate", "400M")], ids=["plain", "limit-rate"])
def test_a_fetch_from_nginx_stays_under_150_mib(published, tmp_path, extra):
    root, _ = published
    with nginx(root / "srv", tmp_path / "nginx") as ngx:
        cas = CasRunner(tmp_path / "store", tmp_path)
        peak = peak_rss_mib(cas.argv("fetch", "m@1.0.0", "--remote", ngx.url + "cas/", *extra))
    assert cas("verify", "m@1.0.0").returncode == 0
    assert peak < LIMIT_MIB, f"cas fetch peaked at {peak:.0f} MiB resident"


@pytest.mark.slow
def test_a_fetch_from_s3_stays_under_150_mib(published, tmp_path):
    root, pub = published
    moto = Moto()
    try:
        env = {**os.environ, **moto.env(), "AWS_ENDPOINT_URL": moto.url}
        env.pop("AWS_PROFILE", None)
        url = f"s3://{moto.bucket()}/cas"
        subprocess.run(pub.argv("push", "m@1.0.0", "--remote", url), env=env, check=True, capture_output=True)
        cas = CasRunner(tmp_path / "store", tmp_path)
        peak = peak_rss_mib(cas.argv("fetch", "m@1.0.0", "--remote", url), env=env)
    finally:
        moto.stop()
    assert cas("verify", "m@1.0.0").returncode == 0
    assert peak < LIMIT_MIB, f"cas fetch from S3 peaked at {peak:.0f} MiB resident"


@pytest.fixture(scope="module")
def many_blobs_store(tmp_path_factory):
    """200,000 small blobs in 2,000 versions (casstore/testing/synthetic.py; ~11 s to write)."""
    from casstore.testing.synthetic import many_blobs

    root = tmp_path_factory.mktemp("many") / "store"
    many_blobs(root, 200_000)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("command", [("verify",), ("verify", "--fast"), ("list", "(no caches)"), ("list",),
                                     ("du", "(no caches)"), ("du",), ("du",), ("du", "(after an add)"),
                                     ("gc", "--dry-run")], ids=" ".join)
def test_a_store_of_200k_blobs_is_checked_in_bounded_memory(many_blobs_store, command):
    """Before: `cas verify` of 200k blobs peaked at 675 MiB (a Path, a list of users and a Future
    per blob); it streams the store by fan-out directory now (ops/verify.py). `cas du` peaked at
    228 MiB (a Digest per blob, every mtime kept) and `gc --dry-run` at 187 MiB (a Digest per
    manifest entry, a tuple of stats per blob): a report numbers blobs by the summaries' table, GC
    interns digests and packs stats (gc/state.py). A first report, which writes the caches, peaked
    at 161 MiB (a Digest per listed blob while the summaries were built; store/listing.py), and
    one after an add at 165 MiB (a Digest per blob of the table, to add one manifest to it)."""
    if command[-1] == "(no caches)":
        shutil.rmtree(many_blobs_store / "cache", ignore_errors=True)
        command = command[:-1]
    elif command[-1] == "(after an add)":
        src = make_model(many_blobs_store.parent / "small", {"w.bin": 1000})
        subprocess.run([sys.executable, "-m", "casstore_cli.main", "--store", many_blobs_store, "add", src,
                        "--name", "small", "--version", "1"], check=True, capture_output=True)
        command = command[:-1]
    peak = peak_rss_mib([sys.executable, "-m", "casstore_cli.main", "--store", many_blobs_store, *command])
    assert peak < LIMIT_MIB, f"cas {' '.join(command)} of 200k blobs peaked at {peak:.0f} MiB"


@pytest.mark.slow
def test_an_add_stays_under_150_mib(published, tmp_path):
    """Before: `cas add` of a 209-file version peaked at 277-282 MiB: four files hashed at once,
    each through 64 MiB mmap windows (counted in RSS though they are page cache). 16 MiB now."""
    root, _ = published
    peak = peak_rss_mib([sys.executable, "-m", "casstore_cli.main", "--store", tmp_path / "s", "add", root / "src",
                         "--name", "m", "--version", "1"], env={**os.environ, "CAS_HASH_CACHE": str(tmp_path / "h")})
    assert peak < LIMIT_MIB, f"cas add peaked at {peak:.0f} MiB"
