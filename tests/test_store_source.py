"""A store as a source for another (a node-local store filled from the team's store on the NAS):
read through `cas fetch --remote <store dir>` or a configured remote, never written to (checked
on a read-only bind mount where the tests run as root, as CI does, and by the source's files,
names, sizes and mtimes, before and after). Before: "no casstore-remote.json there", exit 3."""

import contextlib
import json
import os
import subprocess

from casstore.store.objects import Store

from conftest import CasRunner, assert_store_consistent, make_model


def snapshot(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            st = os.lstat(os.path.join(d, n))
            out[os.path.relpath(os.path.join(d, n), root)] = (st.st_size, st.st_mtime_ns)
    return out


@contextlib.contextmanager
def read_only(path, tmp_path):
    """``path`` through a read-only bind mount when we may mount (root), else as it is."""
    if os.geteuid() != 0:
        yield path
        return
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(path), str(mnt)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], check=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def team_store(tmp_path):
    team = CasRunner(tmp_path / "team", tmp_path)
    team("add", make_model(tmp_path / "v1", {"w.bin": 3 << 20, "config.json": b"{}"}), "--name", "m", "--version", "1.0.0")
    team("add", make_model(tmp_path / "v2", {"w.bin": 2 << 20, "config.json": b"{}", "extra.bin": 5000}),
         "--name", "m", "--version", "1.1.0")
    return team


def test_a_store_serves_another_read_only(tmp_path):
    team = team_store(tmp_path)
    before = snapshot(team.store)
    with read_only(team.store, tmp_path) as src:
        node = CasRunner(tmp_path / "node", tmp_path)
        out = json.loads(node("--json", "versions", "m", "--remote", str(src)).stdout)
        assert {"1.0.0", "1.1.0"} <= set(json.dumps(out).split('"')), out
        plan = json.loads(node("--json", "fetch", "m@1.0.0", "--remote", str(src), "--dry-run").stdout)
        assert (plan["bytes_copied"], plan["bytes_download"]) == (3 << 20, 2), plan
        res = json.loads(node("--json", "fetch", "m@1.0.0", "--remote", str(src)).stdout)
        assert res["version"] == "1.0.0"
        # on the same filesystem: copied in the kernel (reflinked where it can), not streamed
        assert res["bytes_copied"] == 3 << 20 and res["bytes_downloaded"] == 2, res
        node("remote", "add", "nas", str(src), "--default")
        res = json.loads(node("--json", "fetch", "m").stdout)  # the newest, through the configured remote
        assert res["version"] == "1.1.0"
    assert node("verify").returncode == 0
    store = Store.open(tmp_path / "node")
    assert_store_consistent(store)
    assert store.load("m", "1.1.0")[1] == Store.open(team.store).load("m", "1.1.0")[1]  # the same manifest
    assert snapshot(team.store) == before  # nothing written to the source: no lease, stamp or clock probe


def test_publishing_or_collecting_through_a_store_is_refused_clearly(tmp_path):
    team = team_store(tmp_path)
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", make_model(tmp_path / "v3", {"x.bin": 1000}), "--name", "other", "--version", "1.0.0")
    before = snapshot(team.store)
    for args in (("push", "other@1.0.0", "--remote", str(team.store)), ("gc", "--remote", str(team.store))):
        p = pub(*args, ok=False)
        assert p.returncode != 0 and "is a store, read as a remote" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr and str(team.store) in p.stderr
    assert snapshot(team.store) == before


def test_cas_serve_serves_a_store_read_only(tmp_path):
    from servers import CasServe

    team = team_store(tmp_path)
    before = snapshot(team.store)
    srv = CasServe(team.store)
    try:
        node = CasRunner(tmp_path / "node", tmp_path)
        res = json.loads(node("--json", "fetch", "m", "--remote", srv.url).stdout)
        assert res["version"] == "1.1.0"
        assert node("verify").returncode == 0
        pub = CasRunner(tmp_path / "pub", tmp_path)
        pub("add", make_model(tmp_path / "v3", {"x.bin": 1000}), "--name", "other", "--version", "1.0.0")
        p = subprocess.run(pub.argv("push", "other@1.0.0", "--remote", srv.url), capture_output=True, text=True,
                           env={**os.environ, "CAS_TOKEN": srv.token}, timeout=60)
        assert p.returncode != 0 and "read-only server" in p.stderr and "`cas serve` of a store" in p.stderr, p.stderr
    finally:
        srv.stop()
    assert snapshot(team.store) == before


def test_a_blob_on_the_same_filesystem_is_still_verified(tmp_path):
    """The kernel copy is hashed before it is published, like a download: a damaged blob in the
    source is refused by name, and nothing of it lands; under --limit-rate it streams instead."""
    team = team_store(tmp_path)
    m = Store.open(team.store).load("m", "1.0.0")[2]
    big = next(e for e in m.entries if e.size == 3 << 20)
    blob = Store.open(team.store).blob_path(big.digest)
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.write(b"rot")
    node = CasRunner(tmp_path / "node", tmp_path)
    p = node("fetch", "m@1.0.0", "--remote", str(team.store), ok=False)
    assert p.returncode == 4 and str(blob) in p.stderr and "hashes to" in p.stderr, p.stderr
    store = Store.open(tmp_path / "node")
    assert not store.has_blob(big.digest)
    assert_store_consistent(store)
    p = node("fetch", "m@1.0.0", "--remote", str(team.store), "--limit-rate", "1G", ok=False)
    assert p.returncode == 4 and "hash to" in p.stderr, p.stderr  # the stream's own check
    assert not store.has_blob(big.digest)
