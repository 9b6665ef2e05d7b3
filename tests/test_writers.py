"""The one rule for "this writer is gone" (fs/writers.py), which GC, the download engine and
`cas doctor` share."""

import os
import subprocess
import sys

from casstore.fs.writers import HOST, gone, parse_writer, temp_name


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_names_parse_to_host_and_pid():
    assert parse_writer(temp_name()) == (HOST, os.getpid())
    assert parse_writer(temp_name("view.")) == (HOST, os.getpid())
    assert parse_writer(f"{HOST}.12.abc.part") == (HOST, 12)
    assert parse_writer("no-writer-here.tmp") is None


def test_another_host_whose_name_ends_like_ours_is_another_host():
    host, pid = parse_writer(f"x{HOST}.{dead_pid()}.abc.tmp")
    assert host == f"x{HOST}"
    # Judged by silence, never by a pid of this machine: not gone while it is fresh.
    assert not gone((host, pid), last_seen=1000.0, now=1010.0, silence=60.0)
    assert gone((host, pid), last_seen=1000.0, now=1100.0, silence=60.0)


def test_on_this_host_the_pid_decides():
    assert gone((HOST, dead_pid()), last_seen=1000.0, now=1000.0, silence=1e9)
    assert not gone((HOST, os.getpid()), last_seen=0.0, now=1e9, silence=1.0)
    assert gone(None, last_seen=0.0, now=100.0, silence=10.0) and not gone(None, 95.0, 100.0, 10.0)
