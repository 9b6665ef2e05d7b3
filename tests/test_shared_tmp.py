"""What another member of a shared store plants in its tmp/ or blobs/ is never trusted because
of its name: a partial download that is a symlink to a victim's file is not written through, not
linked into blobs/, and `cas verify` reports a symlink under blobs/ (real processes, real files).
"""

import grp
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from casstore.model.digest import Digest
from casstore.store.objects import Store

from accounts import GROUP, open_to_all, readable_base, run_as, system_python
from conftest import CasRunner, assert_store_consistent, make_model

# Stdlib only: the attacker's process runs it without pytest or casstore.
PLANT = """
import json, os, sys, time
from pathlib import Path

def plant(store_root, hexd, size, target):
    dl = Path(store_root) / "tmp" / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    stem = dl / f"{hexd}.otherhost.4242.abcdef123456"
    os.symlink(target, stem.with_suffix(".part"))
    rec = stem.with_suffix(".progress")
    rec.write_text(json.dumps({"digest": "blake3:" + hexd, "size": size, "done": [[0, size]]}))
    old = time.time() - 7200
    os.utime(rec, (old, old))
    os.utime(stem.with_suffix(".part"), (old, old), follow_symlinks=False)

if __name__ == "__main__":
    os.umask(0o002)  # as a member's casstore would in a shared store: the group can use what it makes
    plant(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
"""


def plant_partial(store_root: Path, d: Digest, size: int, target: Path) -> None:
    """A dead writer's partial (another host, backdated) that is a symlink to ``target``, with a
    progress record claiming every byte is done."""
    ns: dict = {}
    exec(PLANT, ns)
    ns["plant"](store_root, d.hex, size, target)


def publish_one(tmp_path: Path, nas: Path) -> tuple[Digest, int, bytes]:
    data = os.urandom(300_000)
    src = make_model(tmp_path / "src", {"w.bin": data})
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", src, "--name", "m", "--version", "1.0.0")
    pub("push", "m@1.0.0", "--remote", nas)
    return Digest.of_bytes(data), len(data), data


def assert_blob_is_ours(store: Store, d: Digest, data: bytes) -> None:
    p = store.blob_path(d)
    st = os.lstat(p)
    assert stat.S_ISREG(st.st_mode) and st.st_nlink >= 1
    assert p.read_bytes() == data


def test_planted_symlink_partial_is_not_adopted(tmp_path):
    d, size, data = publish_one(tmp_path, tmp_path / "nas")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the victim's own file")
    os.chmod(victim, 0o644)
    cas = CasRunner(tmp_path / "store", tmp_path)
    Store.open(tmp_path / "store")  # creates the store
    plant_partial(tmp_path / "store", d, size, victim)
    cas("fetch", "m@1.0.0", "--remote", tmp_path / "nas")
    assert victim.read_bytes() == b"the victim's own file"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644  # not chmodded 0444 either
    store = Store.open(tmp_path / "store")
    assert_blob_is_ours(store, d, data)
    assert cas("verify").returncode == 0
    assert_store_consistent(store)


def test_verify_reports_a_symlink_under_blobs(tmp_path):
    d, size, data = publish_one(tmp_path, tmp_path / "nas")
    cas = CasRunner(tmp_path / "store", tmp_path)
    cas("fetch", "m@1.0.0", "--remote", tmp_path / "nas")
    store = Store.open(tmp_path / "store")
    elsewhere = tmp_path / "same-bytes"
    elsewhere.write_bytes(data)  # even the right bytes: a link is not the store's file
    blob = store.blob_path(d)
    os.chmod(blob, 0o644)
    os.unlink(blob)
    os.symlink(elsewhere, blob)
    p = cas("--json", "verify", ok=False)
    assert p.returncode == 4
    report = json.loads(p.stdout)  # one JSON document, the report with the error merged in
    assert report["ok"] is False and report["error"]["type"] == "IntegrityError"
    assert any(x["kind"] == "corrupt" and "not a regular file" in x["detail"] for x in report["problems"])
    assert elsewhere.read_bytes() == data and not os.path.lexists(blob)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating users needs root (CI runs as root)")
def test_one_member_cannot_make_another_overwrite_their_files(users):
    """castest1 plants the partial; castest2, whose file it points at, fetches."""
    attacker, victim_user = users
    gid = grp.getgrnam(GROUP).gr_gid
    with readable_base("cas-tmp-attack-") as (base, lib):
        d, size, data = publish_one(base, base / "nas")
        open_to_all(base / "nas")
        store = base / "store"
        store.mkdir()
        os.chown(store, 0, gid)
        os.chmod(store, 0o2775)
        home1, home2 = base / "home-1", base / "home-2"
        assert run_as(attacker, lib, home1, "--store", store, "init", "--shared").returncode == 0
        secret = home2 / "notes.txt"
        home2.mkdir()
        secret.write_bytes(b"castest2's notes")
        shutil.chown(secret, victim_user, GROUP)
        os.chmod(secret, 0o600)
        # The attacker plants it (as the attacker, in the group-writable tmp/).
        p = subprocess.run(["setpriv", f"--reuid={attacker}", f"--regid={GROUP}", "--init-groups", system_python(),
                            "-c", PLANT, str(store), d.hex, str(size), str(secret)],
                           env={"PATH": "/usr/bin:/bin", "HOME": str(home1)}, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        p = run_as(victim_user, lib, home2, "--store", store, "fetch", "m@1.0.0", "--remote", base / "nas")
        assert p.returncode == 0, p.stderr
        assert secret.read_bytes() == b"castest2's notes"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert_blob_is_ours(Store.open(store), d, data)
        assert run_as(victim_user, lib, home2, "--store", store, "verify").returncode == 0


# Stdlib only, run as the attacker: swap a version's view for a symlink to a directory of his own
# files, or a blobs/XX fan-out directory for a symlink to a directory he owns.
SWAP = """
import os, shutil, sys
from pathlib import Path

store, kind, name, own = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
os.umask(0o002)
own.mkdir(parents=True, exist_ok=True)
if kind == "view":
    (own / "w.bin").write_bytes(b"the attacker's code")
    target = store / "views" / name
    os.rename(target, store / "tmp" / ("old-view-" + name))  # the group may write views/ on a shared store
    os.symlink(own, target)
else:
    sub = store / "blobs" / name
    for f in os.listdir(sub):
        shutil.copy(sub / f, own / f)
    os.rename(sub, store / "tmp" / ("old-fanout-" + name))
    os.symlink(own, sub)
"""


def _swap(attacker, home, store, kind, name, own):
    home.mkdir(exist_ok=True)
    shutil.chown(home, attacker, GROUP)
    p = subprocess.run(["setpriv", f"--reuid={attacker}", f"--regid={GROUP}", "--init-groups", system_python(),
                        "-c", SWAP, str(store), kind, name, str(own)],
                       env={"PATH": "/usr/bin:/bin", "HOME": str(home)}, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="creating users needs root (CI runs as root)")
def test_a_member_cannot_swap_another_members_view(users):
    """Before: castest2's `cas path` returned castest1's directory, and verify and doctor said nothing."""
    attacker, victim = users
    gid = grp.getgrnam(GROUP).gr_gid
    with readable_base("cas-view-swap-") as (base, lib):
        d, size, data = publish_one(base, base / "nas")
        open_to_all(base / "nas")
        store = base / "store"
        store.mkdir()
        os.chown(store, 0, gid)
        os.chmod(store, 0o2775)
        home1, home2 = base / "home-1", base / "home-2"
        assert run_as(victim, lib, home2, "--store", store, "init", "--shared").returncode == 0
        assert run_as(victim, lib, home2, "--store", store, "fetch", "m@1.0.0", "--remote", base / "nas").returncode == 0
        p = run_as(victim, lib, home2, "--store", store, "path", "m@1.0.0")
        assert p.returncode == 0, p.stderr
        view = Path(p.stdout.strip())
        _swap(attacker, home1, store, "view", view.name, home1 / "evil")
        assert os.path.islink(view)
        for cmd in ("verify", "doctor"):
            p = run_as(victim, lib, home2, "--store", store, "--json", cmd)
            assert p.returncode != 0 and str(view) in p.stdout, (cmd, p.stdout, p.stderr)
        p = run_as(victim, lib, home2, "--store", store, "path", "m@1.0.0")
        assert p.returncode == 0 and Path(p.stdout.strip()) == view, p.stderr
        assert not os.path.islink(view) and (view / "w.bin").read_bytes() == data  # rebuilt, the store's bytes


@pytest.mark.skipif(os.geteuid() != 0, reason="creating users needs root (CI runs as root)")
def test_a_symlinked_fanout_directory_is_neither_read_nor_written_through(users):
    """Before: a symlinked blobs/XX made a fetch write outside the store, and others read his copies."""
    attacker, victim = users
    gid = grp.getgrnam(GROUP).gr_gid
    with readable_base("cas-fanout-") as (base, lib):
        d, size, data = publish_one(base, base / "nas")
        open_to_all(base / "nas")
        store = base / "store"
        store.mkdir()
        os.chown(store, 0, gid)
        os.chmod(store, 0o2775)
        home1, home2 = base / "home-1", base / "home-2"
        assert run_as(victim, lib, home2, "--store", store, "init", "--shared").returncode == 0
        assert run_as(victim, lib, home2, "--store", store, "fetch", "m@1.0.0", "--remote", base / "nas").returncode == 0
        own = home1 / "fanout"
        _swap(attacker, home1, store, "fanout", d.hex[:2], own)
        (own / d.hex).unlink()  # so a fetch has something to write
        p = run_as(victim, lib, home2, "--store", store, "fetch", "m@1.0.0", "--remote", base / "nas")
        assert p.returncode != 0 and str(store / "blobs" / d.hex[:2]) in p.stderr, p.stderr
        assert not (own / d.hex).exists()  # nothing written through the link
        p = run_as(victim, lib, home2, "--store", store, "--json", "verify")
        report = json.loads(p.stdout)
        assert p.returncode != 0 and any(x["kind"] == "unsafe" for x in report["problems"]), p.stdout
        p = run_as(victim, lib, home2, "--store", store, "--json", "doctor")
        assert any(f["kind"] == "symlink" for f in json.loads(p.stdout)["findings"])
