"""GC fails closed and re-checks with its own rule (issue: GC deleted what it could not read).

- what GC must keep but cannot read (a manifest, a live lease, a project registration) stops it,
  naming the file, with nothing deleted; `cas doctor` says how to repair it;
- the sweep's last-moment check on a version is the planner's root rule itself;
- the automatic GC after a fetch never takes the version just fetched (CLI and Python API);
- on a network filesystem with cached listings (sshfs over loopback: servers.Sshfs), a version
  fetched again and pinned by another client while GC runs keeps its manifest and blobs.
"""

import json
import os
import time

import pytest

from casstore.errors import CasError
from casstore.fs.writers import HOST
from casstore.gc import Policy, execute, plan, read_state
from casstore.gc import sweep as sweep_module
from casstore.ops.add import add
from casstore.ops.fetch import fetch
from casstore.ops.switch import use
from casstore.remotes.directory import DirectoryRemote
from casstore.store.leases import Lease
from casstore.store.markers import mark
from casstore.store.objects import Store
from casstore.store.roots import register_root

from conftest import CasRunner, assert_store_consistent, make_model, publish
from servers import Sshfs

COLLECT_ALL = Policy(retention_days=0, keep_last=0, grace=0)


def two_versions(store, tmp_path):
    """m@1 (not current, its files an hour old) and m@2 (current), each with a blob of its own."""
    add(store, make_model(tmp_path / "v1", {"w.bin": 30_000}), "m", "1")
    add(store, make_model(tmp_path / "v2", {"w.bin": 40_000}), "m", "2")
    use(store, "m", "2")
    out = {v: store.load("m", v) for v in ("1", "2")}
    _, md1, m1 = out["1"]
    old = time.time() - 3600
    for f in [store.layout.manifest(md1), *(store.blob_path(d) for d in m1.blobs())]:
        os.utime(f, (old, old))
    return out


def flip_a_byte(path):
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))


def test_a_corrupt_manifest_stops_gc_with_nothing_deleted(cas, tmp_path):
    cas("add", make_model(tmp_path / "a", {"w.bin": 30_000, "c.json": b"{}"}), "--name", "m", "--version", "1")
    store = Store.open(cas.store)
    _, md, m = store.load("m")
    before = sorted(os.listdir(store.layout.blobs / m.entries[0].digest.hex[:2]))
    flip_a_byte(store.layout.manifest(md))
    for args in (["gc", "--retention-days", "0", "--grace", "0"], ["gc", "--dry-run", "--max-size", "1"]):
        p = cas(*args, ok=False)
        assert p.returncode == 4, p.stderr
        assert "gc stopped, nothing was deleted" in p.stderr and md.hex in p.stderr and "m@1" in p.stderr
    assert sorted(os.listdir(store.layout.blobs / m.entries[0].digest.hex[:2])) == before
    assert all(store.has_blob(e.digest) for e in m.entries)
    # JSON too: one document carrying the error.
    doc = json.loads(cas("--json", "gc", "--grace", "0", ok=False).stdout)
    assert "gc stopped" in json.dumps(doc)
    # doctor names the file and the fix.
    p = cas("doctor", ok=False)
    assert "corrupt-manifest" in p.stderr and "cas fetch m@1" in p.stderr


def test_a_corrupt_manifest_is_replaced_by_fetching_the_version_again(tmp_path):
    nas = tmp_path / "nas"
    publish(tmp_path, make_model(tmp_path / "a", {"w.bin": 30_000}), "m", "1", nas)
    me = CasRunner(tmp_path / "mine", tmp_path)
    me("fetch", "m@1", "--remote", nas)
    store = Store.open(me.store)
    _, md, _ = store.load("m")
    flip_a_byte(store.layout.manifest(md))
    assert me("gc", "--grace", "0", ok=False).returncode == 4
    me("fetch", "m@1", "--remote", nas)
    assert store.get_manifest(md).digest() == md and list(store.layout.quarantine.iterdir())
    me("gc", "--grace", "0")  # runs again


def test_a_version_another_gc_removes_while_this_one_reads_is_no_broken_root(store, tmp_path, monkeypatch):
    """Two GCs at once (tests/test_stress.py found it): one read m@1's tag, the other then deleted
    the tag and the manifest. The first finds the manifest missing; its tag, read again by
    name, is gone, so the version is no root and nothing stops it. Were the tag still there,
    the missing manifest stops GC as before."""
    m1 = two_versions(store, tmp_path)["1"][1]
    real = Store.manifest_blobs

    def other_gc_first(self, d, mine=None):
        if d == m1 and self.refs.get_tag("m", "1") == m1:
            os.unlink(self.layout.tag("m", "1"))
            os.unlink(self.layout.manifest(d))
        return real(self, d, mine)

    monkeypatch.setattr(Store, "manifest_blobs", other_gc_first)
    state = read_state(store)
    assert [v.version for v in state.versions] == ["2"]
    monkeypatch.setattr(Store, "manifest_blobs", real)
    add(store, make_model(tmp_path / "v3", {"w.bin": 50_000}), "m", "3")
    _, m3, _ = store.load("m", "3")
    os.unlink(store.layout.manifest(m3))  # missing, and still named by its tag
    with pytest.raises(CasError, match="m@3 left out"):
        read_state(store)


def test_a_live_lease_that_cannot_be_read_stops_gc(store, tmp_path):
    two_versions(store, tmp_path)
    bad = store.layout.leases / "somebody.json"
    bad.write_text('{"digests": ["not-a-digest"]}')
    with pytest.raises(Exception, match="cannot read 1 live lease|live lease") as e:
        plan(read_state(store), COLLECT_ALL)
    assert str(bad) in str(e.value)
    bad.unlink()
    p = plan(read_state(store), COLLECT_ALL)
    assert p.delete_versions == (("m", "1", store.resolve("m", "1")[1]),)


def test_an_unreadable_project_registration_stops_gc(store, tmp_path):
    two_versions(store, tmp_path)
    reg = store.layout.project_roots / "x.json"
    reg.parent.mkdir(parents=True, exist_ok=True)
    reg.write_text("{truncated")
    with pytest.raises(Exception, match="project registration") as e:
        read_state(store)
    assert str(reg) in str(e.value)


def test_a_registration_keeps_what_it_locked_when_its_lock_cannot_be_seen(store, tmp_path):
    """A project on another machine (a shared store on a NAS), or in a directory this user cannot
    read: its lock is not there to read, so the registration's own record is what GC keeps."""
    from casstore.model.lockfile import Locked, LockFile

    versions = two_versions(store, tmp_path)
    v1, md1, m1 = versions["1"]
    lock = LockFile({"m": Locked.of("1", v1, md1, m1)})
    register_root(store, tmp_path / "elsewhere" / "cas.lock", lock)  # no such file on this host
    reg = next(store.layout.project_roots.glob("*.json"))
    doc = json.loads(reg.read_text())
    doc["host"] = "another-machine"
    reg.write_text(json.dumps(doc))
    p = plan(read_state(store), COLLECT_ALL)
    assert p.delete_versions == () and any("locked by" in r for _, rs in p.kept for r in rs)
    # On the host that wrote it, a lock that is gone drops the registration.
    doc["host"] = HOST
    reg.write_text(json.dumps(doc))
    p = plan(read_state(store), COLLECT_ALL)
    assert [v for _, v, _ in p.delete_versions] == ["1"] and not reg.exists()


@pytest.mark.parametrize("becomes_root", ["used", "pinned", "kept for rollback", "locked by a project", "leased"])
def test_a_version_that_became_a_root_after_the_plan_keeps_its_tag(store, tmp_path, becomes_root):
    """The sweep re-checks each version with the planner's own rule (before: current and pins only)."""
    from casstore.model.lockfile import Locked, LockFile

    versions = two_versions(store, tmp_path)
    v1, md1, m1 = versions["1"]
    policy = Policy(retention_days=1, keep_last=0, grace=0)
    old = time.time() - 3 * 86400
    for f in (store.layout.manifest(md1), store.layout.markers("m", "used") / "1"):
        os.utime(f, (old, old))
    p = plan(read_state(store), policy)
    assert [v for _, v, _ in p.delete_versions] == ["1"]
    lease = None
    if becomes_root == "used":
        mark(store, "m", "1", "used")
    elif becomes_root == "pinned":
        mark(store, "m", "1", "pins")
    elif becomes_root == "kept for rollback":
        mark(store, "m", "1", "keep")
    elif becomes_root == "locked by a project":
        lockf = tmp_path / "proj" / "cas.lock"
        lockf.parent.mkdir()
        lock = LockFile({"m": Locked.of("1", v1, md1, m1)})
        lockf.write_bytes(lock.encode())
        register_root(store, lockf, lock)
    else:
        lease = Lease(store, "test", [md1, *m1.blobs()]).__enter__()
    r = execute(store, p, policy)
    assert r.versions == 0 and store.refs.get_tag("m", "1") == md1
    assert all(store.has_blob(d) for d in m1.blobs()) and store.has_manifest(md1)
    if lease is not None:
        lease.__exit__(None, None, None)
    assert_store_consistent(store)


def test_young_content_is_kept_and_the_plan_says_why(store, tmp_path):
    two_versions(store, tmp_path)
    p = plan(read_state(store), Policy(max_size=1, retention_days=None, keep_last=0, grace=3600))
    assert p.delete_versions == ()  # before: tags removed, 0 bytes freed, no reason given
    kept = dict(p.kept)
    assert any("within the grace period" in r for r in kept["m@1"])


def test_the_automatic_gc_after_fetch_keeps_what_was_fetched(tmp_path):
    nas = tmp_path / "nas"
    pub = publish(tmp_path, make_model(tmp_path / "a", {"w.bin": 300_000}), "m", "1", nas)
    pub("add", make_model(tmp_path / "b", {"w.bin": 400_000}), "--name", "m", "--version", "2")
    pub("push", "m@2", "--remote", nas)
    cfg = tmp_path / "config.toml"
    cfg.write_text('[gc]\nmax_size = "350K"\nretention_days = 0\nkeep_last = 1\ngrace = 0\n')
    me = CasRunner(tmp_path / "mine", tmp_path)
    env = {**os.environ, "CAS_CONFIG": str(cfg)}
    import subprocess

    def run(*args):
        p = subprocess.run(me.argv(*args), capture_output=True, text=True, env=env, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        return p

    run("fetch", "m@1", "--remote", nas)
    run("fetch", "m@2", "--remote", nas)  # over 350K: the auto GC runs, and m@2 is what it keeps
    run("path", "m@2")
    run("use", "m@2")
    run("fetch", "m@1", "--remote", nas)  # not current, but just fetched: kept
    run("path", "m@1")


def test_the_python_api_runs_the_same_automatic_gc(tmp_path, monkeypatch):
    import casstore

    nas = tmp_path / "nas"
    pub = publish(tmp_path, make_model(tmp_path / "z", {"w.bin": 100_000}), "m", "0", nas)
    for v, size in (("1", 300_000), ("2", 400_000)):
        pub("add", make_model(tmp_path / f"v{v}", {"w.bin": size}), "--name", "m", "--version", v)
        pub("push", f"m@{v}", "--remote", nas)
    cfg = tmp_path / "config.toml"
    cfg.write_text('[gc]\nmax_size = "450K"\nretention_days = 0\nkeep_last = 0\ngrace = 0\n')
    monkeypatch.setenv("CAS_CONFIG", str(cfg))
    store = Store.open(tmp_path / "mine")
    casstore.fetch("m@0", remote=str(nas), store=store)
    casstore.fetch("m@1", remote=str(nas), store=store)
    use(store, "m", "1")
    casstore.fetch("m@2", remote=str(nas), store=store)
    assert store.refs.get_tag("m", "0") is None  # the API ran the automatic GC (it never did before)
    assert store.refs.get_tag("m", "2") is not None  # the fetched version, kept
    path = casstore.fetch("m@2", remote=str(nas), store=store)
    assert (path / "w.bin").stat().st_size == 400_000
    # m@1 is current: kept too; the store is over its limit only by roots, and says so nowhere fatal
    assert store.refs.get_tag("m", "1") is not None


@pytest.fixture
def nas(tmp_path, request):
    n = Sshfs(tmp_path / "export", tmp_path / "mnt", tmp_path / "sshd", cache_timeout=getattr(request, "param", 10))
    yield n
    n.stop()


def test_on_a_nas_a_version_fetched_again_while_gc_runs_is_kept(nas, tmp_path, monkeypatch):
    """The issue's race: client A's GC deleted m@1's tag; client B fetched m@1 again (finding its
    manifest and blobs present) and pinned it; A's re-mark, listing refs/ through its client's
    cache, did not see the new tag and unlinked the manifest (4 of 6 rounds before). B writes
    straight into the export; A works through the caching sshfs mount."""
    remote_dir = tmp_path / "remote"
    mine = Store.open(nas.mount / "store")  # client A
    versions = two_versions(mine, tmp_path)
    from casstore.ops.push import push

    asyncio_run(push(mine, DirectoryRemote(remote_dir), "m", "1"))
    other = Store.open(nas.export / "store")  # client B: the server's side of the same directory
    monkeypatch.setenv("CAS_NAS_SETTLE", "0")  # only the by-name re-checks protect here

    def b_fetches_and_pins():
        mine.refs.tags("m")  # anything on A's machine that lists the tags now fills its client's cache
        asyncio_run(fetch(other, [DirectoryRemote(remote_dir)], "m", "1"))
        assert "1" not in mine.refs.tags("m")  # A's client does not see B's tag in a listing
        mark(other, "m", "1", "pins")

    monkeypatch.setattr(sweep_module, "after_tags", b_fetches_and_pins)
    p = plan(read_state(mine), COLLECT_ALL)
    assert [v for _, v, _ in p.delete_versions] == ["1"]
    execute(mine, p, COLLECT_ALL)
    _, md1, m1 = versions["1"]
    assert other.refs.get_tag("m", "1") == md1
    assert other.has_manifest(md1) and all(other.has_blob(d) for d in m1.blobs())
    assert_store_consistent(other)


@pytest.mark.parametrize("nas", [4], indirect=True)
def test_on_a_nas_gc_waits_for_leases_its_listing_cache_hides(nas, tmp_path, monkeypatch):
    """A lease another client took just before the set-aside may be missing from this client's
    cached listing of leases/; GC waits CAS_NAS_SETTLE on a network filesystem before its last
    check (60 s by default there; 5 s here, past the mount's 4 s cache: with 0 it loses the blobs)."""
    from casstore.fs.mounts import is_network

    assert is_network(nas.mount) and not is_network(tmp_path)
    mine = Store.open(nas.mount / "store")
    versions = two_versions(mine, tmp_path)
    _, md1, m1 = versions["1"]
    other = Store.open(nas.export / "store")
    monkeypatch.setenv("CAS_NAS_SETTLE", "5")
    leases = []
    monkeypatch.setattr(sweep_module, "after_tags", lambda: leases.append(Lease(other, "b", m1.blobs()).__enter__()))
    p = plan(read_state(mine), COLLECT_ALL)
    r = execute(mine, p, COLLECT_ALL)
    assert r.settled == 5 and all(other.has_blob(d) for d in m1.blobs())
    leases[0].__exit__(None, None, None)


def asyncio_run(coro):
    import asyncio

    return asyncio.run(coro)


def test_gc_says_what_the_grace_period_spares(cas, tmp_path):
    """Before: on content younger than the grace period `gc --max-size` removed tags, freed 0 B
    and did not say why."""
    cas("add", make_model(tmp_path / "a", {"w.bin": 30_000}), "--name", "m", "--version", "1")
    cas("add", make_model(tmp_path / "b", {"w.bin": 40_000}), "--name", "m", "--version", "2")
    cas("use", "m@2")
    cas("rm", "m@1")
    p = cas("gc", "--max-size", "1K", "--keep-last", "0", "--retention-days", "0")
    assert "younger than the grace period (1h)" in p.stderr and "spare 1 blobs" in p.stderr, p.stderr
    store = Store.open(cas.store)
    assert store.refs.get_tag("m", "2") is not None


def test_a_manifest_another_gc_has_set_aside_does_not_stop_this_gc(tmp_path):
    """Two GCs at once (test_stress): one sets a tagged version's manifest aside for its last
    check; the other found the tag naming a manifest "not in the store" and stopped (exit 4).
    Now it reads the manifest where the first GC put it, and keeps the version."""
    from conftest import CasRunner, make_model

    cas = CasRunner(tmp_path / "s", tmp_path)
    cas("add", make_model(tmp_path / "a", {"w": 5000}), "--name", "m", "--version", "1")
    store = Store.open(tmp_path / "s")
    d = store.refs.get_tag("m", "1")
    trash = store.layout.gc_trash_manifests
    trash.mkdir(parents=True, exist_ok=True)
    os.rename(store.layout.manifest(d), trash / f"{d.hex}.otherhost.1.2-3-4.tmp")  # as gc/sweep.py names it
    p = cas("--json", "gc", "--grace", "0", "--retention-days", "0", "--keep-last", "0", "--max-size", "0")
    assert p.returncode == 0, p.stderr
    assert store.has_manifest(d) and store.refs.get_tag("m", "1") == d  # kept, and put back (it is live)


@pytest.mark.parametrize("kind", ["manifest", "blob"])
def test_an_object_another_gc_puts_back_before_this_one_unlinks_it_is_kept(store, tmp_path, monkeypatch, kind):
    """Two GCs at once (tests/test_stress.py found it): this one set m@1's manifest and blob
    aside and checked them; the other, judging them live from its own earlier read, put them
    back (recover_trash) just before this one's unlink. This GC carries on; what was put back
    stays at its name, and is not counted as freed."""
    m1 = two_versions(store, tmp_path)["1"]
    md1, blob = m1[1], next(iter(m1[2].blobs()))
    target = md1 if kind == "manifest" else blob
    final = store.layout.manifest(md1) if kind == "manifest" else store.blob_path(blob)
    real = sweep_module._unlink_aside

    def other_gc_first(a):
        if a.digest == target:
            os.link(a.aside, a.final)
            os.unlink(a.aside)
        return real(a)

    monkeypatch.setattr(sweep_module, "_unlink_aside", other_gc_first)
    policy = Policy(max_size=0, retention_days=0, keep_last=0, grace=0)
    p = plan(read_state(store), policy)
    assert target in (p.delete_manifests if kind == "manifest" else p.delete_blobs)
    res = execute(store, p, policy)
    assert os.path.exists(final)
    assert res.spared >= 1
    assert store.refs.get_tag("m", "1") is None
