"""I/O faults as NAS and SMB clients produce them, injected into real `cas` processes (faults.py):
whatever fails, afterwards every tag and current pointer resolves to a manifest whose blobs exist
and verify, nothing partial sits under a final name, and what was committed before still verifies.
"""

import subprocess

import pytest

from casstore.store.objects import Store

import faults
from conftest import CasRunner, assert_store_consistent, make_model

pytestmark = pytest.mark.slow  # many child processes; `.ci/run` runs `pytest -m slow` as its own step


def run(store, rules, *args, cwd=None):
    return subprocess.run(faults.argv(store, *args), env=faults.env(rules), capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.fixture
def base(tmp_path):
    """A store holding m@1 (committed before any fault), and a new tree to add as m@2."""
    cas = CasRunner(tmp_path / "store", tmp_path)
    cas("add", make_model(tmp_path / "v1", {f"f{i}.bin": 50_000 for i in range(6)}), "--name", "m", "--version", "1")
    new = make_model(tmp_path / "v2", {f"g{i}.bin": 50_000 for i in range(6)} | {"config.json": b"{}"})
    return cas, new


def settled(cas):
    store = Store.open(cas.store)
    assert_store_consistent(store)
    assert store.refs.get_tag("m", "1") is not None
    p = cas("verify", ok=False)
    assert p.returncode == 0, p.stderr
    return store


@pytest.mark.parametrize("rule, outcome", [
    ({"op": "fsync", "errno": "EIO", "after": 3, "kind": "file"}, "fails"),
    ({"op": "fsync", "errno": "EIO", "after": 0, "kind": "file", "times": -1}, "fails"),
    ({"op": "link", "errno": "EACCES", "times": 3}, "succeeds"),  # SMB: refused while another client has it open
    ({"op": "link", "errno": "EIO", "times": -1, "path": "/refs/"}, "fails"),  # the tag cannot be written
    ({"op": "open", "errno": "ESTALE", "after": 2, "path": "/store/tmp/", "not_path": "/clock."},  # NFS: the handle
         "fails"),  # went away (not the clock probe, which falls back to the local clock, and runs a varying number of times)
    ({"op": "fsync", "errno": "EINVAL", "kind": "dir", "times": -1}, "succeeds"),  # FUSE/SMB: no directory fsync
    ({"op": "copy_file_range", "errno": "ENOSPC", "after_bytes": 100_000}, "fails"),
])
def test_add_under_faults(base, rule, outcome):
    cas, new = base
    p = run(cas.store, [rule], "add", new, "--name", "m", "--version", "2")
    if outcome == "succeeds":
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
        assert "injected" in p.stderr or "no space" in p.stderr, p.stderr
        assert str(cas.store) in p.stderr, f"the error names no path: {p.stderr}"
    store = settled(cas)
    if outcome == "succeeds":
        assert store.refs.get_tag("m", "2") is not None
    # Whatever happened, the same add completes once the filesystem behaves.
    cas("add", new, "--name", "m", "--version", "2")
    settled(cas)


def test_switch_under_rename_and_link_faults(base):
    cas, new = base
    cas("add", new, "--name", "m", "--version", "2")
    for rule, to in (({"op": "link", "errno": "EACCES", "times": 2}, "2"), ({"op": "link", "errno": "EIO", "times": -1}, "1")):
        p = run(cas.store, [rule], "use", f"m@{to}")  # a real switch each time (m@1 is current at first)
        assert ("EIO" in rule["errno"]) == (p.returncode != 0), p.stderr
        settled(cas)


def test_a_switch_is_not_failed_by_its_temp_file_cleanup(base):
    """Before: `cas use` switched, then exited 1 because removing its temp file failed."""
    cas, new = base
    cas("add", new, "--name", "m", "--version", "2")
    p = run(cas.store, [{"op": "unlink", "errno": "EIO", "times": -1, "path": "/tmp/"}], "use", "m@2")
    assert p.returncode == 0, p.stderr
    assert Store.open(cas.store).refs.current("m").version == "2"
    settled(cas)


# A directory remote on the store's filesystem is copied in the kernel (copy_file_range), and
# streamed (pwrite) under a rate limit (transfer/download.py, _copy_local): both paths, faulted.
PATHS = {"stream": ("pwrite", ["--limit-rate", "1G"]), "copy": ("copy_file_range", [])}


@pytest.mark.parametrize("path", PATHS)
def test_fetch_out_of_space_mid_download(tmp_path, path):
    op, extra = PATHS[path]
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", make_model(tmp_path / "src", {"big.bin": 3 << 20, "small.json": b"{}"}), "--name", "m", "--version", "1")
    pub("push", "m@1", "--remote", tmp_path / "nas")
    user = CasRunner(tmp_path / "store", tmp_path)
    user("add", make_model(tmp_path / "mine", {"a.bin": 1000}), "--name", "mine", "--version", "1")
    p = run(user.store, [{"op": op, "errno": "ENOSPC", "after_bytes": 1 << 20}], "fetch", "m@1",
            "--remote", tmp_path / "nas", *extra)
    assert p.returncode == 8 and "no space" in p.stderr, p.stderr
    store = Store.open(user.store)
    assert store.refs.get_tag("m", "1") is None
    assert_store_consistent(store)
    assert user("verify").returncode == 0
    user("fetch", "m@1", "--remote", tmp_path / "nas")  # and it completes afterwards
    assert_store_consistent(Store.open(user.store))


def test_gc_under_rename_faults(base):
    cas, new = base
    cas("add", new, "--name", "m", "--version", "2")
    cas("use", "m@2")
    for rule in ({"op": "rename", "errno": "EACCES", "times": 2}, {"op": "rename", "errno": "EIO", "times": -1}):
        run(cas.store, [rule], "gc", "--max-size", "0", "--grace", "0", "--retention-days", "0", "--keep-last", "1")
        store = Store.open(cas.store)
        assert_store_consistent(store)
        assert store.refs.current("m").version == "2"
    assert cas("verify").returncode == 0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rule", [
    {"op": "WRITE", "errno": "EIO", "after_bytes": 1 << 20},
    {"op": "fsync", "errno": "EIO", "kind": "file", "times": -1},
    {"op": "WRITE", "errno": "ENOSPC", "after_bytes": 1 << 20},
])
def test_fetch_io_errors_name_their_path(tmp_path, rule, path):
    """Before: `cas: error: [Errno 5] Input/output error`, naming nothing."""
    op, extra = PATHS[path]
    rule = {**rule, "op": op if rule["op"] == "WRITE" else rule["op"]}
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", make_model(tmp_path / "src", {"big.bin": 3 << 20, "small.json": b"{}"}), "--name", "m", "--version", "1")
    pub("push", "m@1", "--remote", tmp_path / "nas")
    user = CasRunner(tmp_path / "store", tmp_path)
    Store.open(user.store)
    p = run(user.store, [rule], "fetch", "m@1", "--remote", tmp_path / "nas", "--jobs", "1", *extra)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert str(user.store) in p.stderr, f"the error names no path: {p.stderr}"
    assert_store_consistent(Store.open(user.store))
