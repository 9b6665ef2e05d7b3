"""kill -9 at random moments of `cas add`, `cas use` and `cas rollback` (real processes).

Afterwards every tag and current pointer must resolve to a complete manifest whose blobs all
verify, and leftovers may exist only as temp files.
"""

import os
import random

import pytest

from casstore.store.objects import Store

from conftest import assert_store_consistent, kill_at, make_model, timed

pytestmark = pytest.mark.slow


def test_kill_9_during_add_use_rollback(cas, tmp_path):
    rnd = random.Random(1234)
    src = make_model(tmp_path / "src", {f"shard-{i:02d}.bin": 1 << 20 for i in range(32)} | {"config.json": b"{}"})
    t_add = timed(cas.argv("add", src, "--name", "m", "--version", "0"))

    def change_some():  # new bytes each round, so each add writes blobs
        for j in rnd.sample(range(32), 4):
            (src / f"shard-{j:02d}.bin").write_bytes(os.urandom(1 << 20))

    change_some()
    t_add = max(t_add, timed(cas.argv("add", src, "--name", "m", "--version", "1")))
    t_use = timed(cas.argv("use", "m@1"))
    kills = {"add": 0, "switch": 0}
    for i in range(2, 80):
        if kills["add"] >= 30:
            break
        change_some()
        kills["add"] += kill_at(cas.argv("add", src, "--name", "m", "--version", str(i)), rnd.uniform(0.2, 0.95) * t_add)
        if i % 10 == 0:
            assert_store_consistent(Store.open(cas.store))
    store = Store.open(cas.store)
    versions = list(store.refs.tags("m"))
    for i in range(120):
        if kills["switch"] >= 30:
            break
        argv = cas.argv("rollback", "m") if i % 2 else cas.argv("use", f"m@{rnd.choice(versions)}")
        kills["switch"] += kill_at(argv, rnd.uniform(0.5, 1.0) * t_use)
    assert kills["add"] + kills["switch"] >= 50, f"only {kills} processes were killed mid-run"
    assert_store_consistent(store)
    cur = store.refs.current("m")
    assert cur is not None and store.refs.get_tag("m", cur.version) == cur.manifest
    # Leftovers are only temp files, and the store keeps working.
    for dirpath, _, names in os.walk(cas.store):
        if not dirpath.startswith(str(cas.store / "tmp")):
            assert not any(n.endswith(".tmp") for n in names), (dirpath, names)
    cas("add", src, "--name", "m", "--version", "final")
    cas("use", "m@final")
    assert cas("verify").returncode == 0
