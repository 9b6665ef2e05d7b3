"""A store bind-mounted read-only (containers, Kubernetes): every read works and writes nothing;
a write fails with one clear line. A real read-only bind mount (needs root, as CI has)."""

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import casstore

from conftest import CasRunner, make_model

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root (CI runs as root)")


@contextlib.contextmanager
def read_only(store: Path, tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    subprocess.run(["mount", "--bind", str(store), str(mnt)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], check=True)
        yield CasRunner(mnt, tmp_path)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture
def ro_store(tmp_path):
    """What a writer added (m@1.0.0) and fetched (f@2.0.0), then a read-only mount of it: nobody
    ran `cas path` before the mount (views are built as versions complete)."""
    rw = CasRunner(tmp_path / "store", tmp_path)
    rw("add", make_model(tmp_path / "src", {"w.bin": 5000, "config.json": b"{}"}), "--name", "m", "--version", "1.0.0")
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", make_model(tmp_path / "src2", {"f.bin": 7000, "config.json": b"[]"}), "--name", "f", "--version", "2.0.0")
    pub("push", "f@2.0.0", "--remote", tmp_path / "remote")
    rw("fetch", "f@2.0.0", "--remote", tmp_path / "remote")
    with read_only(tmp_path / "store", tmp_path) as ro:
        yield ro


def listing(root):
    return sorted((d, tuple(sorted(fs))) for d, _, fs in os.walk(root))


@pytest.mark.parametrize("args", [("path", "m"), ("path", "f@2.0.0"), ("show", "m"), ("list",), ("du",), ("log", "m"), ("verify", "--fast"),
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
    assert (casstore.fetch("f@2.0.0", store=str(ro_store.store), offline=True) / "config.json").read_bytes() == b"[]"


def test_sync_of_what_the_store_holds(ro_store, tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "cas.toml").write_text(f'remote = "{tmp_path / "remote"}"\n[models.f]\nversion = "2.0.0"\n')
    CasRunner(tmp_path / "store", proj)("lock")  # committed in the project by someone with a writable store
    before = listing(ro_store.store)
    p = CasRunner(ro_store.store, proj)("sync", "--frozen", "--offline", ok=False)
    assert p.returncode == 0, p.stderr
    assert (proj / "models" / "f" / "config.json").read_bytes() == b"[]"
    assert "not registered as a GC root" in p.stderr
    assert listing(ro_store.store) == before


def test_a_store_from_before_views_says_what_to_run_and_doctor_fixes_it(tmp_path):
    from casstore.errors import StoreUnusable

    rw = CasRunner(tmp_path / "store", tmp_path)
    rw("add", make_model(tmp_path / "src", {"w.bin": 5000}), "--name", "m", "--version", "1.0.0")
    subprocess.run(["chmod", "-R", "u+w", str(tmp_path / "store" / "views")], check=True)
    shutil.rmtree(tmp_path / "store" / "views")
    (tmp_path / "store" / "views").mkdir()
    assert [f["kind"] for f in rw.json("doctor", ok=False)["findings"]] == ["missing-view"]
    with read_only(tmp_path / "store", tmp_path) as ro:
        p = ro("path", "m", ok=False)
        assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1
        assert "cas doctor --fix" in p.stderr and "m@1.0.0" in p.stderr
        with pytest.raises(StoreUnusable, match="doctor --fix"):
            casstore.fetch("m@1.0.0", store=str(ro.store), offline=True)
    rw("doctor", "--fix")
    with read_only(tmp_path / "store", tmp_path) as ro:
        assert ro("path", "m").returncode == 0


def test_a_write_fails_with_one_clear_line(ro_store, tmp_path):
    p = ro_store("add", make_model(tmp_path / "new", {"x": 10}), "--name", "m", "--version", "2.0.0", ok=False)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "read-only filesystem" in lines[0] and "CAS_HOME" in lines[0]


def test_reports_keep_their_caches_on_this_machine(ro_store):
    """`cas list`/`du` cannot write the store's cache/: their copies go next to the hash cache,
    and the next run reads them (test_blob_listing.py checks that nothing is parsed again)."""
    from casstore.ops import usage
    from casstore.store import cachefile, listing, summaries
    from casstore.store.objects import Store

    first = ro_store.json("du")
    store = Store(ro_store.store)
    for name in (summaries.FILE, listing.FILE, usage.MEMO):
        assert not (ro_store.store / name).exists()
    for name in (summaries.FILE, usage.MEMO):
        assert cachefile.local_path(store, name).is_file()
    assert not cachefile._writable(ro_store.store), "so that the local copies are read"
    def timeless(report):  # "used 3s ago" in a version's roots moves with the clock
        for m in report["models"]:
            for v in m["versions"]:
                v["roots"] = [r for r in v["roots"] if " ago" not in r]
        return report

    assert timeless(ro_store.json("du")) == timeless(first)
    os.unlink(cachefile.local_path(store, summaries.FILE))  # the list below counts from the local memo
    assert timeless(ro_store.json("list"))["models"] == timeless(first)["models"]
    assert not cachefile.local_path(store, summaries.FILE).exists()
