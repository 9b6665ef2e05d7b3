"""Disk full during add, on a real small tmpfs (mounting needs root, as in CI)."""

import os
import subprocess

import pytest

from casstore.store.objects import Store

from conftest import CasRunner, assert_store_consistent, make_model

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_precheck_and_midway(small_fs, tmp_path):
    cas = CasRunner(small_fs / "store", tmp_path)
    good = make_model(tmp_path / "good", {"w.bin": 100_000})
    cas("add", good, "--name", "ok", "--version", "1")

    big = make_model(tmp_path / "big", {"a.bin": 6 << 20, "b.bin": 6 << 20})
    p = cas("add", big, "--name", "big", "--version", "1", ok=False)
    assert p.returncode == 8, p.stderr
    assert "no space left" in p.stderr and "needed 12.0 MiB" in p.stderr and "free" in p.stderr

    # Passes the size pre-check, fails while writing: 1,000 files of 5,000 bytes fill 8 KiB pages each.
    many = make_model(tmp_path / "many", {f"f{i:04d}": 5000 for i in range(1000)})
    p = cas("add", many, "--name", "many", "--version", "1", ok=False)
    assert p.returncode == 8, p.stderr
    assert "no space left" in p.stderr

    store = Store.open(small_fs / "store")
    assert store.refs.models() == ["ok"]
    assert_store_consistent(store)
    assert cas("verify").returncode == 0


def test_fetch_checks_free_space_first(small_fs, tmp_path):
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", make_model(tmp_path / "big", {"a.bin": 12 << 20}), "--name", "big", "--version", "1")
    pub("push", "big@1", "--remote", tmp_path / "nas")
    user = CasRunner(small_fs / "store", tmp_path)
    p = user("fetch", "big@1", "--remote", tmp_path / "nas", ok=False)
    assert p.returncode == 8 and "needed 12.0 MiB" in p.stderr
    assert not list((small_fs / "store" / "tmp" / "downloads").glob("*"))
