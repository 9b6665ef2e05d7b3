"""Reflinks on a real XFS filesystem (a loop-mounted image; needs root and xfsprogs, as in CI)."""

import os
import shutil
import subprocess

import pytest

from casstore.ops.add import add
from casstore.ops.checkout import checkout
from casstore.store.objects import Store

from conftest import assert_store_consistent, make_model

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mkfs.xfs") is None, reason="needs root and mkfs.xfs (CI installs xfsprogs)"
)


@pytest.fixture
def xfs(tmp_path):
    img, mnt = tmp_path / "xfs.img", tmp_path / "xfs"
    with open(img, "wb") as f:
        f.truncate(300 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(img)], check=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_add_and_checkout_use_reflinks(xfs):
    src = make_model(xfs / "src", {"a.bin": 8 << 20, "b/c.json": b"{}"})
    store = Store.open(xfs / "store")
    r = add(store, src, "m", "1")
    assert r.methods == {"reflink": 2}
    res = checkout(store, store.get_manifest(r.manifest), xfs / "out", link="reflink")
    assert res.modes == {"reflink": 2}
    assert (xfs / "out" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
    # A reflinked copy is independent: replacing the checkout's bytes leaves the blob intact.
    os.chmod(xfs / "out" / "a.bin", 0o644)
    with open(xfs / "out" / "a.bin", "r+b") as f:
        f.write(b"changed")
    assert_store_consistent(store)
    auto = checkout(store, store.get_manifest(r.manifest), xfs / "auto")
    assert auto.modes == {"reflink": 2}


def test_a_store_source_on_the_same_filesystem_is_reflinked(xfs, tmp_path):
    """A node store beside the team's store (one XFS): blobs come as reflinks, hashed before
    they are published, so they take no new data blocks; the source is left as it was."""
    from conftest import CasRunner

    team = CasRunner(xfs / "team", tmp_path)
    team("add", make_model(xfs / "src", {"w.bin": 64 << 20, "c.json": b"{}"}), "--name", "m", "--version", "1")
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in (xfs / "team").rglob("*") if p.is_file()}
    subprocess.run(["sync"], check=True)
    free = os.statvfs(xfs).f_bfree * os.statvfs(xfs).f_frsize
    node = CasRunner(xfs / "node", tmp_path)
    p = node("-v", "fetch", "m@1", "--remote", str(xfs / "team"))
    assert "by reflink" in p.stderr and "64.0 MiB copied within this filesystem" in p.stderr, p.stderr
    subprocess.run(["sync"], check=True)
    used = free - os.statvfs(xfs).f_bfree * os.statvfs(xfs).f_frsize
    assert used < 16 << 20, f"the fetch took {used} bytes of new space for a 64 MiB reflinked blob"
    assert node("verify").returncode == 0
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in (xfs / "team").rglob("*") if p.is_file()} == before
