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
