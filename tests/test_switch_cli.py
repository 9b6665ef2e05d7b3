"""What `cas use` and `cas rollback` say and record when there is nothing to switch, and what a
rollback to a collected version says to run."""

from __future__ import annotations

from conftest import make_model


def test_use_and_rollback_to_the_current_version_record_nothing_and_say_so(cas, tmp_path):
    for v in ("1.0.0", "1.1.0"):
        cas("add", make_model(tmp_path / v, {"a.bin": 100 + len(v)}), "--name", "m", "--version", v)
    cas("use", "m@1.1.0")
    seqs = [h["seq"] for h in cas.json("log", "m")["history"]]
    again = cas("use", "m@1.1.0")
    assert "1.1.0 is already current; nothing recorded" in again.stderr
    assert cas.json("use", "m@1.1.0")["changed"] is False
    p = cas("rollback", "m", "1.1.0")
    assert "already current; nothing recorded" in p.stderr
    assert [h["seq"] for h in cas.json("log", "m")["history"]] == seqs  # no "1.1.0 -> 1.1.0" records
    out = cas.json("rollback", "m")
    assert out["changed"] is True and out["version"] == "1.0.0" and out["previous"] == "1.1.0"


def test_a_rollback_to_a_collected_version_names_fetch(cas, tmp_path):
    for v in ("1.0.0", "1.1.0"):
        cas("add", make_model(tmp_path / v, {"a.bin": 100 + len(v)}), "--name", "m", "--version", v)
    cas("use", "m@1.1.0")
    cas("rm", "m@1.0.0")
    cas("gc", "--grace", "0", "--retention-days", "0", "--keep-last", "0", "--max-size", "0")
    p = cas("rollback", "m", ok=False)
    assert p.returncode == 3 and "cas rollback m --fetch" in p.stderr, p.stderr


def test_rm_force_of_the_current_version_unsets_it_everywhere(cas, tmp_path):
    for v in ("1.0.0", "1.1.0"):
        cas("add", make_model(tmp_path / v, {"a.bin": 100 + len(v)}), "--name", "m", "--version", v)
    cas("use", "m@1.1.0")
    assert cas("rm", "m@1.1.0", ok=False).returncode == 5  # current: refused without --force
    assert "m has no current version now" in cas("rm", "m@1.1.0", "--force").stderr
    listed = cas.json("list", "m")
    assert [(v["version"], v["current"]) for m in listed["models"] for v in m["versions"]] == [("1.0.0", False)]
    p = cas("path", "m", ok=False)
    assert p.returncode == 3 and "no current version" in p.stderr
    log = cas("log", "m").stdout.splitlines()
    assert "rm" in log[0] and "1.1.0 -> -" in log[0]
    out = cas.json("rollback", "m")  # back to the version before the removed one
    assert out["version"] == "1.0.0" and cas("path", "m").returncode == 0
