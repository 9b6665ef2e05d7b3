"""Retention that expires: unused versions go with --retention-days alone, rollback roots expire
or are released, `cas rm`, and quarantined or abandoned partial files are counted and cleaned."""

import json
import os
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from casstore.gc import DAY, Policy, StoreState, VersionState, plan, root_reasons
from casstore.model.digest import Digest
from casstore.store.objects import Store

from conftest import CasRunner, make_model

GC = ("gc", "--grace", "0", "--keep-last", "1")


def age_version(store: Store, model: str, version: str, days: float) -> None:
    """Make a version look unused for ``days`` (its use stamp and manifest file backdated)."""
    t = time.time() - days * DAY
    for p in (store.layout.model_dir(model) / "used" / version, store.layout.manifest(store.refs.get_tag(model, version))):
        if p.exists():
            os.utime(p, (t, t))


def three_versions(tmp_path):
    cas = CasRunner(tmp_path / "store", tmp_path)
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        cas("add", make_model(tmp_path / f"s{v}", {"w.bin": 10_000, "v": v.encode()}), "--name", "m", "--version", v)
    cas("use", "m@1.1.0")
    cas("use", "m@1.2.0")  # 1.0.0 is now third in line: no root under the default keep-last 2
    return cas, Store.open(tmp_path / "store")


def test_retention_expires_unused_versions_without_a_size_limit(tmp_path):
    cas, store = three_versions(tmp_path)
    age_version(store, "m", "1.0.0", 40)
    listed = {v["version"]: v for v in cas.json("list")["models"][0]["versions"]}
    assert listed["1.0.0"]["roots"] == []  # `cas list` calls it collectable ...
    out = cas.json(*GC, "--retention-days", "14")  # ... and gc collects it, with no --max-size
    assert out["plan"]["delete_versions"] == ["m@1.0.0"]
    assert sorted(store.refs.tags("m")) == ["1.1.0", "1.2.0"]
    assert cas("verify").returncode == 0


def test_a_rollback_root_expires_with_retention_and_can_be_released(tmp_path):
    from casstore.store.markers import mark, marked

    cas, store = three_versions(tmp_path)
    mark(store, "m", "1.0.0", "keep")
    age_version(store, "m", "1.0.0", 40)
    assert cas.json(*GC, "--retention-days", "100", "--dry-run")["plan"]["delete_versions"] == []
    kp = store.layout.model_dir("m") / "keep" / "1.0.0"
    t = time.time() - 40 * DAY
    os.utime(kp, (t, t))
    assert cas.json(*GC, "--retention-days", "14", "--dry-run")["plan"]["delete_versions"] == ["m@1.0.0"]
    os.utime(kp)  # a fresh one is released by a command
    assert cas.json("unpin", "m@1.0.0")["released"] == ["rollback root"]
    assert sorted(marked(store, "m", "keep")) == []
    p = cas("unpin", "m@1.0.0", ok=False)
    assert p.returncode == 3 and "neither pinned nor kept" in p.stderr


def test_rm_refuses_current_and_pinned_without_force_and_gc_frees_the_rest(tmp_path):
    cas, store = three_versions(tmp_path)
    p = cas("rm", "m@1.2.0", ok=False)
    assert p.returncode == 5 and "current" in p.stderr
    cas("pin", "m@1.1.0")
    p = cas("rm", "m@1.1.0", ok=False)
    assert p.returncode == 5 and "pinned" in p.stderr
    assert cas.json("rm", "m@1.0.0")["removed"] == "m@1.0.0"
    assert "1.0.0" not in store.refs.tags("m")
    blob = store.blob_path(Digest.of_bytes(b"1.0.0"))
    assert blob.exists()  # blobs go at the next GC, not now
    cas(*GC)
    assert not blob.exists()
    assert cas.json("rm", "m@1.1.0", "--force")["was_pinned"] is True
    assert cas("rm", "m@9.9.9", ok=False).returncode == 3
    assert cas("verify").returncode == 0


def test_quarantine_and_abandoned_partials_are_counted_and_cleaned(tmp_path):
    cas, store = three_versions(tmp_path)
    q = store.layout.quarantine / f"{'ab' * 32}.{int(time.time()) - 7200}.1"
    q.write_bytes(b"x" * 4096)
    dl = store.layout.tmp / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    part = dl / f"{'cd' * 32}.{__import__('socket').gethostname()[:32]}.999999.abcdef.part"  # a dead pid here
    part.write_bytes(b"y" * 8192)
    old = time.time() - 7200
    os.utime(part, (old, old))
    du = cas.json("du")
    assert du["junk_bytes"] >= 4096 + 8192
    kinds = {f["kind"] for f in json.loads(cas("--json", "doctor", ok=False).stdout)["findings"]}
    assert {"quarantined", "abandoned-partial"} <= kinds
    cas("gc", "--grace", "3600")
    assert not q.exists() and not part.exists()
    assert cas.json("du")["junk_bytes"] == 0


NOW = 1e9


@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 60), st.booleans(), st.none() | st.integers(0, 60)), max_size=8),
       st.integers(0, 30))
def test_with_retention_every_version_that_is_no_root_goes(specs, retention):
    vs = [VersionState("m", str(i), Digest(f"{i + 1:064x}"), frozenset(), NOW - days * DAY, None,
                       ("pinned",) if pinned else (), None if kept is None else NOW - kept * DAY)
          for i, (days, pinned, kept) in enumerate(specs)]
    s = StoreState(NOW, {}, {v.manifest: NOW - 100 * DAY for v in vs}, tuple(vs))
    pol = Policy(retention_days=retention, keep_last=0, grace=0)
    p = plan(s, pol)
    gone = {v for _, v, _ in p.delete_versions}
    for v in vs:
        assert (v.version in gone) == (not root_reasons(v, pol, NOW))
