"""Real processes on one store for a bounded time: fetches, adds, updates, use/rollback,
checkouts and GCs (grace 0, so only leases and last-moment checks protect writers), all at once.

Invariant, checked throughout and at the end: every tag and current pointer resolves to a
manifest whose blobs all exist (and, at the end, verify); the store ends within its limit when
the roots allow it.
"""

import os
import random
import threading
import time

import pytest

from casstore.errors import NotFound
from casstore.gc import Policy, plan, read_state
from casstore.store.objects import Store

from conftest import CasRunner, assert_store_consistent, make_model

pytestmark = pytest.mark.slow
DURATION = float(os.environ.get("CAS_STRESS_SECONDS", 35))
OK_CODES = {"fetch": {0}, "add": {0}, "use": {0, 3, 5}, "rollback": {0, 3, 5}, "checkout": {0, 3},
            "gc": {0}, "update": {0, 3, 5}}


def check_live(store):
    """The invariant while others write: re-read a ref before blaming it (GC may just have removed it)."""
    for model in store.refs.models():
        refs = [("tag", v, d) for v, d in store.refs.tags(model).items()]
        cur = store.refs.current(model)
        if cur is not None:
            refs.append(("current", cur.version, cur.manifest))
        for kind, v, d in refs:
            try:
                m = store.get_manifest(d)
                missing = [e for e in m.entries if not store.has_blob(e.digest)]
            except NotFound:
                missing = ["manifest"]
            if missing and missing != ["manifest"]:
                # GC moves a blob aside before its last check and puts it back if a writer refreshed
                # it meanwhile (gc.py): a blob may be absent for that instant, never for longer.
                time.sleep(0.2)
                missing = [e for e in missing if not store.has_blob(e.digest)]
            if not missing:
                continue
            still = store.refs.get_tag(model, v) == d if kind == "tag" else store.refs.current(model).manifest == d
            assert not still, f"{kind} {model}@{v} -> {d} lacks {missing[:3]}"


def test_everything_at_once(tmp_path):
    nas = tmp_path / "nas"
    pub = CasRunner(tmp_path / "pub", tmp_path)
    shared = os.urandom(1 << 20)
    for i in range(8):
        src = make_model(tmp_path / f"p{i}", {"vae.pth": shared, "w.bin": 512 << 10, "c.json": f"{i}".encode()})
        pub("add", src, "--name", "m", "--version", f"1.{i}.0")
        pub("push", f"m@1.{i}.0", "--remote", nas)
    store_dir = tmp_path / "store"
    cas = CasRunner(store_dir, tmp_path)
    cas("fetch", "m@1.0.0", "--remote", nas)
    store = Store.open(store_dir)
    deadline = time.monotonic() + DURATION
    failures, counts = [], {}
    lock = threading.Lock()

    def worker(kind, seed):
        rnd = random.Random(seed)
        n = 0
        while time.monotonic() < deadline:
            n += 1
            v = f"1.{rnd.randrange(8)}.0"
            if kind == "fetch":
                args = ["fetch", f"m@{v}", "--remote", nas]
            elif kind == "add":
                src = make_model(tmp_path / f"a{seed}-{n}", {"vae.pth": shared, "x.bin": 300 << 10})
                args = ["add", src, "--name", "local", "--version", f"{seed}.{n}"]
            elif kind == "use":
                args = ["use", f"m@{v}"] if n % 3 else ["rollback", "m"]
            elif kind == "update":
                args = ["update", "m", "--remote", nas, "--strategy", rnd.choice(["conservative", "aggressive"])]
            elif kind == "checkout":
                args = ["checkout", f"m@{v}", tmp_path / f"co{seed}", "--link", rnd.choice(["copy", "hardlink"])]
            else:
                args = ["gc", "--max-size", "4M", "--grace", "0", "--retention-days", "0", "--keep-last", "1"]
            p = cas(*args, ok=False)
            with lock:
                counts[kind] = counts.get(kind, 0) + 1
                if p.returncode not in OK_CODES[args[0]]:
                    failures.append((args, p.returncode, p.stderr[-800:]))

    kinds = ["fetch", "fetch", "add", "use", "update", "checkout", "gc", "gc"]
    threads = [threading.Thread(target=worker, args=(k, i)) for i, k in enumerate(kinds)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        check_live(store)
        time.sleep(0.5)
    for t in threads:
        t.join()
    assert not failures, "\n".join(f"{a[0]} -> {code}: {err}" for a, code, err in failures[:5])
    assert counts.get("gc", 0) >= 4 and counts.get("fetch", 0) >= 4, counts
    assert_store_consistent(store)
    assert cas("verify").returncode == 0
    p = plan(read_state(store), Policy(max_size=4 << 20, retention_days=0, keep_last=1, grace=0))
    cas("gc", "--max-size", "4M", "--grace", "0", "--retention-days", "0", "--keep-last", "1")
    if p.shortfall == 0:
        assert sum(path.stat().st_size for _, path in store.iter_blobs()) <= 4 << 20
