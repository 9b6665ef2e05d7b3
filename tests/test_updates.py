"""check-updates and update: plans, strategies, breaking versions, never backwards, kill -9."""

import os
import random

import pytest

from casstore.store.markers import marked
from casstore.store.objects import Store

from conftest import CasRunner, assert_store_consistent, isolated, kill_at, make_model, timed


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A publisher's store and a remote with t2v 1.0.0, 1.1.0, 1.2.0 and a breaking 2.0.0 (made
    once: the tests only read them)."""
    base = tmp_path_factory.mktemp("published")
    with isolated(base):
        pub = CasRunner(base / "pub", base)
        for v in ("1.0.0", "1.1.0", "1.2.0", "2.0.0"):
            src = make_model(base / f"src-{v}", {"config.json": v.encode(), "big.bin": 2 << 20, "same.bin": b"shared"})
            pub("add", src, "--name", "t2v", "--version", v)
            pub("push", f"t2v@{v}", "--remote", base / "nas")
    return pub, base / "nas"


@pytest.fixture
def env(tmp_path, published):
    """A user store with t2v 1.0.0 current, fetched from that remote."""
    _, nas = published
    user = CasRunner(tmp_path / "user", tmp_path)
    user("fetch", "t2v@1.0.0", "--remote", nas)
    return user, nas


def test_check_updates(env):
    user, nas = env
    [info] = user.json("check-updates", "--remote", nas)["models"]
    assert info == {"model": "t2v", "current": "1.0.0", "latest": "2.0.0", "update_available": True,
                    "breaking": True, "compatible": "1.2.0", "unmet_requirements": [], "recommended": "1.2.0",
                    "skipped": [], "error": None}


def test_dry_run_changes_nothing(env, tmp_path):
    user, nas = env
    before = sorted(p for p in (tmp_path / "user").rglob("*") if "tmp" not in p.parts)
    plan = user.json("update", "t2v", "--dry-run", "--remote", nas)
    assert (plan["from"], plan["to"], plan["switched"]) == ("1.0.0", "1.2.0", False)
    assert plan["changed"] == ["big.bin", "config.json"] and plan["added"] == [] and plan["removed"] == []
    # big.bin is copied from the directory remote on this filesystem; config.json is downloaded
    assert (plan["download_bytes"], plan["copy_bytes"]) == (5, 2 << 20)
    assert sorted(p for p in (tmp_path / "user").rglob("*") if "tmp" not in p.parts) == before


def test_conservative_then_aggressive_then_breaking(env, tmp_path):
    user, nas = env
    store = Store.open(tmp_path / "user")
    out = user.json("update", "t2v", "--to", "1.1.0", "--remote", nas)
    assert out["switched"] and store.refs.current("t2v").version == "1.1.0"
    assert sorted(marked(store, "t2v", "keep")) == ["1.0.0"]  # conservative: the old version stays a rollback root
    user("update", "t2v", "--to", "1.2.0", "--strategy", "aggressive", "--remote", nas)
    assert sorted(marked(store, "t2v", "keep")) == []  # 1.1.0 was not kept, and the next update released 1.0.0
    p = user("update", "t2v", "--to", "2.0.0", "--remote", nas, ok=False)
    assert p.returncode == 5 and "major version bump" in p.stderr
    assert store.refs.current("t2v").version == "1.2.0"
    out = user.json("update", "t2v", "--allow-breaking", "--strategy", "parallel", "--remote", nas)
    assert out["to"] == "2.0.0" and out["breaking"]
    assert (store.layout.view(store.refs.get_tag("t2v", "2.0.0"))).is_dir()
    assert (store.layout.view(store.refs.get_tag("t2v", "1.2.0"))).is_dir()
    assert [s["action"] for s in user.json("log", "t2v")["history"]][:3] == ["update", "update", "update"]
    assert user.json("rollback", "t2v")["version"] == "1.2.0"
    assert_store_consistent(store)


def test_never_backwards(env, tmp_path, published):
    user, nas = env
    user("update", "t2v", "--to", "1.2.0", "--remote", nas)
    p = user("update", "t2v", "--to", "1.1.0", "--remote", nas, ok=False)
    assert p.returncode == 5 and "never goes backwards" in p.stderr
    # A remote that only offers older versions: nothing to do.
    only_old = tmp_path / "old-nas"
    pub, _ = published
    pub("push", "t2v@1.0.0", "--remote", only_old)
    out = user.json("update", "t2v", "--remote", only_old)
    assert out["up_to_date"] and not out["switched"]
    assert Store.open(tmp_path / "user").refs.current("t2v").version == "1.2.0"


def test_rollback_fetches_collected_blobs_on_request(env, tmp_path):
    user, nas = env
    user("update", "t2v", "--to", "1.1.0", "--remote", nas)
    store = Store.open(tmp_path / "user")
    old = store.get_manifest(store.refs.get_tag("t2v", "1.0.0"))
    big = next(e for e in old.entries if e.path == "big.bin")
    os.chmod(store.blob_path(big.digest), 0o644)
    os.unlink(store.blob_path(big.digest))  # as GC would have done
    p = user("rollback", "t2v", ok=False)
    assert p.returncode == 3 and "cas fetch t2v@1.0.0" in p.stderr
    assert user.json("rollback", "t2v", "--fetch", "--remote", nas)["version"] == "1.0.0"
    assert_store_consistent(store)


@pytest.mark.slow
def test_kill_9_during_update(tmp_path):
    pub = CasRunner(tmp_path / "pub", tmp_path)
    for v in ("1.0.0", "1.1.0"):
        pub("add", make_model(tmp_path / f"s{v}", {"w.bin": 24 << 20, "c.json": v.encode()}), "--name", "m", "--version", v)
        pub("push", f"m@{v}", "--remote", tmp_path / "nas")
    rnd = random.Random(7)
    # Calibrate: interpreter start and store open, then a whole update, so kills land in the update.
    cal = CasRunner(tmp_path / "cal", tmp_path)
    cal("fetch", "m@1.0.0", "--remote", tmp_path / "nas")
    t_start = timed(cal.argv("log", "m"))
    t_update = timed(cal.argv("update", "m", "--remote", tmp_path / "nas", "--limit-rate", "40M"))
    outcomes, killed = set(), 0
    for i in range(12):
        user = CasRunner(tmp_path / f"u{i}", tmp_path)
        user("fetch", "m@1.0.0", "--remote", tmp_path / "nas")
        killed += kill_at(user.argv("update", "m", "--remote", tmp_path / "nas", "--limit-rate", "40M"),
                          t_start + rnd.uniform(0.05, 0.95) * (t_update - t_start))
        store = Store.open(tmp_path / f"u{i}")
        cur = store.refs.current("m")
        assert cur.version in ("1.0.0", "1.1.0")
        outcomes.add(cur.version)
        m = store.get_manifest(cur.manifest)
        assert all(store.has_blob(e.digest) for e in m.entries)
        assert_store_consistent(store)
        user("update", "m", "--remote", tmp_path / "nas")  # and it completes afterwards
        assert store.refs.current("m").version == "1.1.0"
    assert killed >= 8, f"only {killed} of 12 updates were still running when killed"
    assert "1.0.0" in outcomes


def test_a_dry_run_lists_every_change_or_says_how_many_more(tmp_path):
    pub = CasRunner(tmp_path / "pub", tmp_path)
    old = {f"f{i:03d}": f"a{i}".encode() for i in range(60)}
    new = {**{f"f{i:03d}": f"b{i}".encode() for i in range(60)}, **{f"new{i:03d}": b"n" for i in range(3)}}
    pub("add", make_model(tmp_path / "old", old), "--name", "m", "--version", "1.0.0")
    pub("add", make_model(tmp_path / "new", new), "--name", "m", "--version", "1.1.0")
    for v in ("1.0.0", "1.1.0"):
        pub("push", f"m@{v}", "--remote", tmp_path / "nas")
    user = CasRunner(tmp_path / "user", tmp_path)
    user("fetch", "m@1.0.0", "--remote", tmp_path / "nas")
    p = user("update", "m", "--dry-run", "--remote", tmp_path / "nas")
    assert "~ and 10 more (--json lists them all)" in p.stderr
    assert p.stderr.count("\n  ~ f") == 50 and "+ new002" in p.stderr and "  download 171 B;" in p.stderr
    assert len(user.json("update", "m", "--dry-run", "--remote", tmp_path / "nas")["changed"]) == 60


@pytest.mark.parametrize("strategy", ["conservative", "parallel", "aggressive"])
def test_each_strategy_is_what_gc_then_frees(env, tmp_path, strategy):
    """Before: all three left 1.0.0 kept and `gc --dry-run` freeing 0 B."""
    user, nas = env
    store = Store.open(tmp_path / "user")
    user("update", "t2v", "--to", "1.1.0", "--strategy", strategy, "--remote", nas)
    plan = user.json("gc", "--dry-run", "--grace", "0", "--keep-last", "2", "--retention-days", "30")["plan"]
    old_tag = store.refs.get_tag("t2v", "1.0.0")
    if strategy == "aggressive":  # released: its 2 MiB are what GC frees now, the policy's keep-last aside
        assert "t2v@1.0.0" not in plan["kept"] and plan["bytes_freed"] >= 2 << 20, plan
        assert sorted(marked(store, "t2v", "keep")) == []
        user("gc", "--grace", "0", "--keep-last", "2", "--retention-days", "30")
        assert store.refs.get_tag("t2v", "1.0.0") is None
        assert "--fetch" in user("rollback", "t2v", ok=False).stderr
    else:  # one rollback root, nothing freed
        assert "rollback root" in plan["kept"]["t2v@1.0.0"] and plan["bytes_freed"] == 0, plan
        assert sorted(marked(store, "t2v", "keep")) == ["1.0.0"]
    if strategy == "parallel":
        assert store.layout.view(old_tag).is_dir() and store.layout.view(store.refs.get_tag("t2v", "1.1.0")).is_dir()
