"""A store bind-mounted read-only (containers, Kubernetes): every read works and writes nothing;
a write fails with one clear line. A real read-only bind mount (needs root, as CI has)."""

import os
import subprocess

import pytest

import casstore

from conftest import CasRunner, make_model

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root (CI runs as root)")


@pytest.fixture
def ro_store(tmp_path):
    rw = CasRunner(tmp_path / "store", tmp_path)
    rw("add", make_model(tmp_path / "src", {"w.bin": 5000, "config.json": b"{}"}), "--name", "m", "--version", "1.0.0")
    rw("path", "m")  # the view exists, as on the machine that prepared the image
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(tmp_path / "store"), str(mnt)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], check=True)
        yield CasRunner(mnt, tmp_path)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def listing(root):
    return sorted((d, tuple(sorted(fs))) for d, _, fs in os.walk(root))


@pytest.mark.parametrize("args", [("path", "m"), ("show", "m"), ("list",), ("du",), ("log", "m"), ("verify", "--fast"),
                                  ("verify",), ("fetch", "m@1.0.0"), ("checkout", "m", "CO")])
def test_reads_work(ro_store, tmp_path, args):
    before = listing(ro_store.store)
    args = [str(tmp_path / "co") if a == "CO" else a for a in args]
    p = ro_store(*args, ok=False)
    assert p.returncode == 0, p.stderr
    assert listing(ro_store.store) == before


def test_python_api_reads(ro_store):
    path = casstore.fetch("m@1.0.0", store=str(ro_store.store), offline=True)
    assert (path / "config.json").read_bytes() == b"{}"


def test_a_write_fails_with_one_clear_line(ro_store, tmp_path):
    p = ro_store("add", make_model(tmp_path / "new", {"x": 10}), "--name", "m", "--version", "2.0.0", ok=False)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "read-only filesystem" in lines[0] and "CAS_HOME" in lines[0]


def test_reports_keep_their_caches_on_this_machine(ro_store):
    """`cas list`/`du` cannot write the store's cache/: their copies go next to the hash cache,
    and the next run reads them (test_blob_listing.py checks that nothing is parsed again)."""
    from casstore.store import cachefile, listing, summaries
    from casstore.store.objects import Store

    first = ro_store.json("du")
    store = Store(ro_store.store)
    for name in (summaries.FILE, listing.FILE):
        assert not (ro_store.store / name).exists()
    assert cachefile.local_path(store, summaries.FILE).is_file()
    assert not cachefile._writable(ro_store.store), "so that the local copies are read"
    assert ro_store.json("du") == first
