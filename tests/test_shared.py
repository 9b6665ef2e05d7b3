"""A store shared by two real users of one group (created by the test; CI runs as root)."""

import grp
import json
import os
import shutil
import subprocess

import pytest

from casstore.store.objects import Store

from accounts import GROUP, readable_base
from conftest import assert_store_consistent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating users needs root (CI runs as root)")


def test_two_users_read_add_and_collect(users):
    python = shutil.which("python3.11", path="/usr/bin") or "/usr/bin/python3"
    if not os.path.exists(python):
        pytest.fail("a system python3 that other users can run is needed")
    with readable_base("cas-shared-") as (base, lib):
        store = base / "store"
        store.mkdir()
        os.chown(store, 0, grp.getgrnam(GROUP).gr_gid)
        os.chmod(store, 0o2775)

        def cas(user, *args, ok=True):
            home = base / f"home-{user}"
            home.mkdir(exist_ok=True)
            shutil.chown(home, user, GROUP)
            env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(lib), "CAS_HASH_CACHE": str(home / "hc")}
            p = subprocess.run(["setpriv", f"--reuid={user}", f"--regid={GROUP}", "--init-groups",
                                python, "-m", "casstore_cli.main", "--store", str(store), *args],
                               capture_output=True, text=True, env=env, cwd=home)
            if ok:
                assert p.returncode == 0, (user, args, p.stderr)
            return p

        cas("castest1", "init", "--shared")
        shared_content = os.urandom(50_000)
        for u in users:
            src = base / f"src-{u}"
            src.mkdir()
            (src / "vae.pth").write_bytes(shared_content)
            (src / f"{u}.bin").write_bytes(os.urandom(10_000))
            for p in (src, *src.iterdir()):
                shutil.chown(p, u, GROUP)
            cas(u, "add", str(src), "--name", f"model-{u}", "--version", "1")
        # Each reads the other's version, and either can collect.
        cas("castest2", "checkout", "model-castest1@1", str(base / "home-castest2" / "co"))
        cas("castest1", "verify")
        st = Store.open(store)
        blobs = [p for _, p in st.iter_blobs()]
        assert len(blobs) == 3  # the shared VAE once
        assert all(p.stat().st_mode & 0o044 == 0o044 for p in blobs)  # group and others can read
        assert all(p.stat().st_gid == grp.getgrnam(GROUP).gr_gid for p in blobs)
        for d in (store / "tmp", store / "leases", store / "blobs"):
            assert d.stat().st_mode & 0o2070 == 0o2070, d
        garbage = base / "src-castest1" / "castest1.bin"
        garbage.write_bytes(os.urandom(10_000))
        cas("castest1", "add", str(base / "src-castest1"), "--name", "model-castest1", "--version", "2")
        cas("castest2", "gc", "--max-size", "70K", "--grace", "0", "--retention-days", "0", "--keep-last", "1")
        cas("castest1", "gc", "--grace", "0")
        assert_store_consistent(Store.open(store))
        # Nothing that one user wrote has permissions the other would trip over.
        doctor = json.loads(cas("castest2", "--json", "doctor", ok=False).stdout)
        assert [f for f in doctor["findings"] if f["kind"] == "permissions"] == []
