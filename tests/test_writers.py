"""The one rule for "this writer is gone" (fs/writers.py), which GC, leases, the download engine,
remote locks and `cas doctor` share."""

import json
import os
import subprocess
import sys
import time

from casstore.fs.writers import HOST, INSTANCE, Writer, gone, parse_writer, start_time, temp_name
from casstore.store.leases import Lease, live_leases
from casstore.store.objects import Store


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_names_parse_to_the_writer():
    me = Writer.me()
    assert parse_writer(temp_name()) == me
    assert parse_writer(temp_name("view.")) == me
    assert parse_writer(f"{HOST}.12.abc.part") == Writer(HOST, 12)  # a name from before instances
    assert parse_writer("no-writer-here.tmp") is None


def test_another_host_whose_name_ends_like_ours_is_another_host():
    w = parse_writer(f"x{HOST}.{dead_pid()}.abc.tmp")
    assert w is not None and w.host == f"x{HOST}"
    # Judged by silence, never by a pid of this machine: not gone while it is fresh.
    assert not gone(w, last_seen=1000.0, now=1010.0, silence=60.0)
    assert gone(w, last_seen=1000.0, now=1100.0, silence=60.0)


def test_on_this_host_the_pid_decides():
    assert gone(Writer(HOST, dead_pid(), INSTANCE), last_seen=1000.0, now=1000.0, silence=1e9)
    assert not gone(Writer.me(), last_seen=0.0, now=1e9, silence=1.0)
    assert gone(None, last_seen=0.0, now=100.0, silence=10.0) and not gone(None, 95.0, 100.0, 10.0)


def test_a_reused_pid_is_not_the_writer():
    me = Writer.me()
    assert me.start is not None and me.start == start_time(os.getpid())
    impostor = Writer(HOST, os.getpid(), INSTANCE, me.start + 1)  # the pid, started at another time
    assert impostor.alive() is False and gone(impostor, last_seen=1000.0, now=1000.0, silence=1e9)


def test_another_boot_or_pid_namespace_is_judged_by_silence():
    # Same host name and a live pid, but another instance (a container with this host name,
    # or this machine before a reboot): the pid means nothing here.
    other = Writer(HOST, os.getpid(), "00000000" if INSTANCE != "00000000" else "11111111")
    assert other.alive() is None
    assert not gone(other, last_seen=1000.0, now=1010.0, silence=60.0)
    assert gone(other, last_seen=1000.0, now=1100.0, silence=60.0)


def test_records_round_trip():
    me = Writer.me()
    assert Writer.from_record(json.loads(json.dumps(me.record()))) == me
    assert Writer.from_record({"host": "h", "pid": "12"}) is None and Writer.from_record([]) is None


def _lease_file(store, writer: Writer, digests, age: float = 0.0):
    p = store.layout.leases / f"{writer.host}.{writer.pid}.x.json"
    p.write_text(json.dumps({**writer.record(), "what": "test", "time": 0, "digests": [d.hex for d in digests]}))
    t = time.time() - age
    os.utime(p, (t, t))
    return p


def test_a_killed_local_process_releases_its_lease_at_once(tmp_path):
    """Before: a lease lived for its whole TTL (10 minutes) after its process was killed."""
    from casstore.model.digest import Digest

    store = Store.open(tmp_path / "s")
    d = Digest.of_bytes(b"x")
    dead = _lease_file(store, Writer(HOST, dead_pid(), INSTANCE, 1), [d])
    scan = live_leases(store)
    assert d not in scan.held and scan.dead == [dead]


def test_a_live_process_keeps_its_lease_even_unrefreshed_and_others_by_ttl(tmp_path):
    from casstore.model.digest import Digest

    store = Store.open(tmp_path / "s")
    a, b, c = (Digest.of_bytes(x) for x in (b"a", b"b", b"c"))
    with Lease(store, "test", [a]) as lease:
        t = time.time() - 7200
        os.utime(lease.path, (t, t))  # its refresher stalled: the process is alive all the same
        fresh_elsewhere = _lease_file(store, Writer("another-host", 1), [b])
        stale_elsewhere = _lease_file(store, Writer("another-host", 2), [c], age=7200)
        scan = live_leases(store)
        assert scan.held == {a, b} and scan.dead == [stale_elsewhere] and fresh_elsewhere not in scan.dead


def test_a_live_lease_that_cannot_be_read_is_reported(tmp_path):
    store = Store.open(tmp_path / "s")
    bad = store.layout.leases / "garbage.json"
    bad.write_text("{not json")
    scan = live_leases(store)
    assert scan.unreadable and scan.unreadable[0][0] == bad
    old = time.time() - 7200
    os.utime(bad, (old, old))
    assert live_leases(store).dead == [bad]  # unrefreshed for the lease period: garbage, not a lease


def test_a_remote_lock_of_a_killed_local_push_does_not_block_a_remote_gc(tmp_path):
    """Before: a push killed on this machine held `cas gc --remote` off for the lock's 6 hours."""
    import asyncio

    from casstore.fs.writers import writer_id
    from casstore.remotes import locks
    from casstore.remotes.directory import DirectoryRemote

    remote = DirectoryRemote(tmp_path / "r")
    me = writer_id()
    dead = f"{HOST}.{dead_pid()}.{me.split('.')[-1]}"  # this machine's instance, a pid that is gone

    async def go():
        await remote.put_small(f"locks/push-{dead}.json", b"{}")
        async with locks.RemoteLock(remote, "gc"):
            pass
        assert [k for k, _ in await locks.stale_locks(remote)] == [f"locks/push-{dead}.json"]
        await remote.put_small(f"locks/push-{me}.json", b"{}")  # a live one (this process) blocks
        try:
            async with locks.RemoteLock(remote, "gc"):
                raise AssertionError("a live push's lock must block a remote GC")
        except locks.Conflict:
            pass

    asyncio.run(go())
