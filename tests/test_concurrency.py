"""Several real processes on one store directory."""

import multiprocessing
import os
import subprocess

import pytest

from casstore.errors import Conflict
from casstore.ops.switch import use
from casstore.store.objects import Store

from conftest import assert_store_consistent, make_model

pytestmark = pytest.mark.slow


def test_eight_processes_add_the_same_large_content(cas, tmp_path):
    src = make_model(tmp_path / "src", {"big.safetensors.bin": 96 << 20, "config.json": b'{"a": 1}', "t/vocab": 5000})
    Store.open(cas.store)  # created once, so the racers only race on objects and refs
    procs = [
        subprocess.Popen(cas.argv("--json", "add", src, "--name", "m" if i < 4 else f"m{i}", "--version", "1"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(8)
    ]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _, _ in results), [err for rc, _, err in results if rc]
    store = Store.open(cas.store)
    assert sum(1 for _ in store.iter_blobs()) == 3, "one copy of each blob"
    tagged = {store.refs.get_tag(m, "1") for m in ["m", "m4", "m5", "m6", "m7"]}
    assert None not in tagged
    assert store.refs.current("m").version == "1"
    assert_store_consistent(store)
    assert not os.listdir(store.layout.tmp)


def test_two_cli_switches_one_wins(cas, tmp_path):
    src = make_model(tmp_path / "src", {"a": 10})
    for v in ("1", "2", "3"):
        (src / "a").write_bytes(v.encode())
        cas("add", src, "--name", "m", "--version", v)
    for _ in range(5):
        cas("use", "m@1")
        ps = [subprocess.Popen(cas.argv("use", f"m@{v}", "--expect", "1"), stderr=subprocess.PIPE, text=True) for v in ("2", "3")]
        codes = sorted(p.wait() for p in ps)
        assert codes == [0, 5], codes
        errs = " ".join(p.stderr.read() for p in ps)
        assert "current version of m" in errs


def _racer(root, version, barrier, out):
    store = Store.open(root)
    head = store.refs.current("m")
    barrier.wait()  # both have read the same head before either writes
    try:
        store.refs.switch("m", version, store.refs.get_tag("m", version), action="use", expect=head)
        out.put(("won", version))
    except Conflict as e:
        out.put(("conflict", str(e)))


def test_true_race_on_current_pointer(store, tmp_path):
    from casstore.ops.add import add

    src = make_model(tmp_path / "src", {"a": 10})
    for v in ("1", "2", "3"):
        (src / "a").write_bytes(v.encode())
        add(store, src, "m", v)
    ctx = multiprocessing.get_context("fork")
    for _ in range(5):
        use(store, "m", "1")
        barrier, out = ctx.Barrier(2), ctx.Queue()
        ps = [ctx.Process(target=_racer, args=(store.root, v, barrier, out)) for v in ("2", "3")]
        for p in ps:
            p.start()
        for p in ps:
            p.join(30)
        results = sorted(out.get(timeout=5) for _ in ps)
        assert [r[0] for r in results] == ["conflict", "won"], results
        assert store.refs.current("m").version == results[1][1]
        assert "nothing was changed" in results[0][1]


def _first_use(root, barrier, out):
    barrier.wait()
    try:
        Store.open(root)
        out.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.put(f"{type(e).__name__}: {e}")


def test_sixty_processes_create_one_store_at_once(tmp_path):
    """A job array's ranks all start on a CAS_HOME that does not exist yet: every one succeeds."""
    ctx = multiprocessing.get_context("fork")
    for attempt in range(3):
        root = tmp_path / f"store{attempt}"
        barrier, out = ctx.Barrier(60), ctx.Queue()
        ps = [ctx.Process(target=_first_use, args=(root, barrier, out)) for _ in range(60)]
        for p in ps:
            p.start()
        results = [out.get(timeout=60) for _ in ps]
        for p in ps:
            p.join(30)
        assert results == ["ok"] * 60, [r for r in results if r != "ok"][:3]
        assert sorted(os.listdir(root)) == sorted(["casstore.json", "blobs", "manifests", "refs", "roots", "views",
                                                   "tmp", "quarantine", "leases"])
