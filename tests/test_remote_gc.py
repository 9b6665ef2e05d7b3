"""`cas gc --remote` on a directory remote, and the remote lock protocol that keeps it from
deleting what a push in flight is about to publish (the bucket case runs in test_s3.py)."""

import asyncio
import json
import os
import shutil
import time

import pytest

from casstore.errors import CasError, Conflict
from casstore.gc import readahead
from casstore.ops import remote_gc
from casstore.ops.remote_gc import collect_remote, plan_remote
from casstore.remotes.base import SkipNames
from casstore.remotes.directory import DirectoryRemote
from casstore.remotes.layers import stack
from casstore.remotes.locks import STALE, RemoteLock
from casstore.testing.synthetic import as_directory_remote, many_blobs

from conftest import CasRunner, make_model, taken


def old(path, seconds=7200):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_gc_remote_on_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("CAS_DELTA_MIN_SIZE", "1000")  # w.bin gets a chunk map
    nas = tmp_path / "nas"
    cas = CasRunner(tmp_path / "pub", tmp_path)
    src = make_model(tmp_path / "a", {"w.bin": 50_000, "c.json": b"{}"})
    cas("add", src, "--name", "m", "--version", "1.0.0")
    cas("push", "m@1.0.0", "--remote", nas)
    orphan = nas / "blobs" / "ff" / ("f" * 64)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"a blob of a push that died before its index")
    [kept_map] = [p for p in (nas / "chunks").rglob("*") if p.is_file()]  # the map of w.bin, pushed with it
    orphan_map = nas / "chunks" / "ff" / ("f" * 64)
    orphan_map.parent.mkdir(parents=True, exist_ok=True)
    orphan_map.write_bytes(b"the chunk map of that blob")
    stranger = nas / "blobs" / "README"
    stranger.write_text("not ours")
    old(orphan)
    old(orphan_map)
    old(kept_map)
    out = cas.json("gc", "--remote", nas)
    assert out["dry_run"] and out["plan"]["delete"] == ["blobs/ff/" + "f" * 64, "chunks/ff/" + "f" * 64]
    assert out["plan"]["objects"] == 7  # 2 blobs, the orphan, README; the manifest; 2 maps: kept ones too
    assert orphan.exists()
    out = cas.json("gc", "--remote", nas, "--yes")
    assert out["result"]["deleted"] == 2 and not orphan.exists() and not orphan_map.exists() and stranger.exists()
    assert kept_map.exists()
    assert out["plan"]["versions"] == 1
    user = CasRunner(tmp_path / "user", tmp_path)
    assert user.json("fetch", "m@1.0.0", "--remote", nas)["version"] == "1.0.0"


def test_a_directory_lists_in_ascending_order_and_stats_no_skipped_file(tmp_path, monkeypatch):
    """Keys ascend across directories (a directory sorts as its name and a slash), which the
    retry layer relies on to pass what a restarted listing gives again; skipped files are never
    stat'ed (remote GC skips the 1M it keeps)."""
    root = tmp_path / "r"
    names = ["x/a-b", "x/a.json", "x/a/b", "x/a/c/d", "x/ab", "x/b"]  # "-" and "." sort before "/"
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(n.encode())
    r = DirectoryRemote(root)
    stated = []
    lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda path, **kw: stated.append(os.path.basename(path)) or lstat(path, **kw))

    async def listed(**kw):
        return [(x.key, x.size) async for x in r.listing("x/", **kw)]

    assert asyncio.run(listed()) == [(n, len(n)) for n in sorted(names)] and sorted(names) == names
    stated.clear()
    assert asyncio.run(listed(skip=lambda k: k != "x/a/c/d")) == [("x/a/c/d", 7)]
    assert stated == ["d"]
    # By file name, a directory at a time (what remote GC passes): the same keys as asking per key
    # would give, the passed ones counted and never stat'ed; a directory of a passed name is still walked.
    stated.clear()
    by_name = SkipNames({"b", "a.json", "ab"})
    assert asyncio.run(listed(skip=by_name)) == [("x/a-b", 5), ("x/a/c/d", 7)]
    assert by_name.passed == 4 and sorted(stated) == ["a-b", "d"]
    per_key = SkipNames({"b", "a.json", "ab"})
    assert [k for k in names if not per_key(k)] == ["x/a-b", "x/a/c/d"] and per_key.passed == 4


def test_gc_remote_refuses_a_static_http_server(tmp_path):
    cas = CasRunner(tmp_path / "s", tmp_path)
    p = cas("gc", "--remote", "http://127.0.0.1:9/", "--yes", ok=False)
    assert p.returncode == 7 and "cannot be listed" in p.stderr


def test_gc_waits_for_a_push_and_a_push_for_gc(tmp_path):
    remote = DirectoryRemote(tmp_path / "nas")

    async def go():
        async with RemoteLock(remote, "push"):
            with pytest.raises(Conflict, match="a push is running"):
                await collect_remote(remote, 0, dry_run=False)
            async with RemoteLock(remote, "push"):  # pushes share
                pass
        async with RemoteLock(remote, "gc"):
            with pytest.raises(Conflict, match="a remote GC is running"):
                async with RemoteLock(remote, "push"):
                    pass
        assert list((tmp_path / "nas" / "locks").iterdir()) == []  # every lock released
        plan, result = await collect_remote(remote, 0, dry_run=False)
        assert result is not None and result.deleted == 0

    asyncio.run(go())


def test_a_dead_pushers_lock_goes_stale_and_doctor_removes_it(tmp_path):
    nas = tmp_path / "nas"
    remote = DirectoryRemote(nas)
    lock = nas / "locks" / "push-deadhost.1.abc.json"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"kind": "push", "host": "deadhost", "pid": 1, "time": 0}))
    old(lock, STALE + 60)
    plan, result = asyncio.run(collect_remote(remote, 0, dry_run=False))  # a stale lock blocks nothing
    assert result is not None
    cas = CasRunner(tmp_path / "s", tmp_path)
    out = cas.json("doctor", "--remote", nas, ok=False)
    assert [f["kind"] for f in out["findings"]] == ["stale-remote-lock"] and not lock.exists()


@pytest.fixture(scope="module")
def synthetic_remote(tmp_path_factory):
    """3,000 blobs (300 of no version) and 30 versions of 100 files, published on a directory remote."""
    base = tmp_path_factory.mktemp("remote-plan")
    many_blobs(base / "store", 3000)
    as_directory_remote(base / "store", base / "remote")
    return base / "remote"


def remote_plan(root, monkeypatch, *, helped: bool, helpers: set[int] | None = None):
    """The plan, and the manifests helper processes handed it (gc/readahead.py), as they came."""
    monkeypatch.setattr(readahead, "MIN_MANIFESTS", 1 if helped else 10 ** 9)
    seen = taken(monkeypatch, helpers)
    return asyncio.run(plan_remote(stack(DirectoryRemote(root)), grace=0)), seen


def test_helpers_reading_a_directory_remotes_manifests_plan_what_reads_through_the_remote_plan(
        synthetic_remote, monkeypatch):
    alone, none = remote_plan(synthetic_remote, monkeypatch, helped=False)
    helpers: set[int] = set()
    helped, seen = remote_plan(synthetic_remote, monkeypatch, helped=True, helpers=helpers)
    manifests = sorted(p.stem for p in (synthetic_remote / "manifests").rglob("*.json"))
    assert none == [] and sorted(seen) == manifests  # each helper its share, none twice
    assert len(helpers) == remote_gc._HELPERS
    assert helped == alone
    assert sum(k.startswith("blobs/") for k in alone.delete) == 300 and alone.versions >= len(manifests)


def test_a_manifest_no_helper_can_read_is_read_through_the_remote_whose_error_names_it(
        synthetic_remote, tmp_path, monkeypatch):
    root = tmp_path / "remote"
    shutil.copytree(synthetic_remote, root, copy_function=os.link)
    path = sorted((root / "manifests").rglob("*.json"))[5]
    changed = path.with_suffix(".new")  # a new inode: the module's remote keeps its own
    changed.write_bytes(path.read_bytes().replace(b'"size": ', b'"size":  ', 1))  # no longer its digest's bytes
    os.replace(changed, path)
    with pytest.raises(CasError) as alone:
        remote_plan(root, monkeypatch, helped=False)
    with pytest.raises(CasError) as helped:
        remote_plan(root, monkeypatch, helped=True)
    assert path.stem in str(alone.value) and str(helped.value) == str(alone.value)
