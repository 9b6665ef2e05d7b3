"""The GC's command line: gc, pin/unpin, config, auto GC after fetch, du/list, doctor."""

import json
import os
import time

from casstore.store.objects import Store

from conftest import CasRunner, assert_store_consistent, make_model


def three_versions(cas, tmp_path, size=30_000):
    for i in range(3):
        cas("add", make_model(tmp_path / f"v{i}", {"w": size, "c": f"{i}".encode()}), "--name", "m", "--version", f"1.{i}.0")


def test_pin_protects_and_unpin_releases(cas, tmp_path):
    three_versions(cas, tmp_path)
    cas("pin", "m@1.1.0")
    args = ("gc", "--max-size", "1K", "--grace", "0", "--retention-days", "0", "--keep-last", "1")
    out = cas.json(*args)
    assert out["plan"]["delete_versions"] == ["m@1.2.0"] and out["plan"]["kept"]["m@1.1.0"] == ["pinned"]
    cas("unpin", "m@1.1.0")
    assert cas("unpin", "m@1.1.0", ok=False).returncode == 3
    assert cas.json(*args)["plan"]["delete_versions"] == ["m@1.1.0"]
    assert sorted(Store.open(cas.store).refs.tags("m")) == ["1.0.0"]


def test_dry_run_changes_nothing(cas, tmp_path):
    three_versions(cas, tmp_path)
    before = sorted(str(p) for p in cas.store.rglob("*") if "tmp" not in p.parts)
    out = cas.json("gc", "--max-size", "1K", "--grace", "0", "--retention-days", "0", "--keep-last", "1", "--dry-run")
    assert out["plan"]["bytes_freed"] > 0 and "result" not in out
    assert sorted(str(p) for p in cas.store.rglob("*") if "tmp" not in p.parts) == before


def test_config_and_auto_gc_after_fetch(tmp_path):
    pub = CasRunner(tmp_path / "pub", tmp_path)
    for i in range(3):
        pub("add", make_model(tmp_path / f"s{i}", {"w": 40_000, "c": f"{i}".encode()}), "--name", "m", "--version", f"1.{i}.0")
        pub("push", f"m@1.{i}.0", "--remote", tmp_path / "nas")
    user = CasRunner(tmp_path / "user", tmp_path)
    for key, value in (("gc.max_size", "100K"), ("gc.retention_days", "0"), ("gc.keep_last", "1"), ("gc.grace", "0")):
        user("config", "set", key, value)
    assert user.json("config", "get", "gc.max_size")["gc.max_size"] == "100K"
    assert user("config", "set", "gc.bogus", "1", ok=False).returncode == 2
    user("fetch", "m@1.0.0", "--remote", tmp_path / "nas")
    user("fetch", "m@1.1.0", "--remote", tmp_path / "nas")
    p = user("fetch", "m@1.2.0", "--remote", tmp_path / "nas")
    assert "auto gc (over gc.max_size 100.0 KiB)" in p.stderr
    store = Store.open(tmp_path / "user")
    assert sum(path.stat().st_size for _, path in store.iter_blobs()) <= 100 * 1024
    assert store.refs.current("m").version == "1.0.0"
    assert_store_consistent(store)


def test_du_and_list_show_use_and_roots(cas, tmp_path):
    three_versions(cas, tmp_path)
    cas("pin", "m@1.2.0")
    du = cas.json("du")
    vs = {v["version"]: v for v in du["models"][0]["versions"]}
    assert "current" in vs["1.0.0"]["roots"] and "pinned" in vs["1.2.0"]["roots"]
    assert vs["1.1.0"]["last_used"] > time.time() - 600
    assert du["gc_would_free"] == 0 and du["blob_bytes"] == 3 * 30_001
    assert "kept: pinned" in cas("list").stdout


def test_doctor(cas, tmp_path):
    cas("add", make_model(tmp_path / "a", {"w": 100}), "--name", "m", "--version", "1")
    assert cas("doctor").returncode == 0
    store = Store.open(cas.store)
    (cas.store / "stray.txt").write_text("?")
    blob = next(p for _, p in store.iter_blobs())
    os.chmod(blob, 0o644)
    (store.layout.tmp / "locks").mkdir(exist_ok=True)
    lock = store.layout.tmp / "locks" / f"{'a' * 64}.lock"
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 4, "time": 0}))
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    old = store.layout.tmp / "x.1.abc.tmp"
    old.write_text("partial")
    os.utime(old, (time.time() - 90_000, time.time() - 90_000))
    p = cas("--json", "doctor", ok=False)
    assert p.returncode == 1
    kinds = {f["kind"] for f in json.loads(p.stdout)["findings"]}
    assert kinds == {"unknown-file", "permissions", "stale-lock", "orphaned-temp"}
