import json

import pytest

from casstore.errors import InvalidInput
from casstore.model.digest import Digest
from casstore.model.lockfile import Locked, LockedFile, LockFile
from casstore.model.manifest import Entry, Manifest


def D(i):
    return Digest(f"{i:064x}")


def sample():
    m = Manifest("t2v", "1.1.0", (Entry("config.json", 10, D(1)), Entry("w/model.safetensors", 1 << 30, D(2))))
    return LockFile({"t2v": Locked.of("^1.1", "1.1.0", D(9), m), "a-vae": Locked("1.0.0", "1.0.0", D(8), ())}), m


def test_round_trip_and_stable_text():
    lock, m = sample()
    data = lock.encode()
    assert LockFile.decode(data).encode() == data
    lines = data.decode().splitlines()
    assert lines[3].strip().startswith("\"a-vae\"")  # models sorted by name
    assert sum('"path":' in line for line in lines) == 2  # one file per line: diffs show which weights changed
    assert lock.models["t2v"].matches(m)


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda o: o["models"]["t2v"]["files"][0].update(digest="blake3:xyz"), "blake3:xyz"),
        (lambda o: o["models"]["t2v"]["files"][0].update(path="../../etc/passwd"), "../../etc/passwd"),
        (lambda o: o["models"]["t2v"]["files"].reverse(), "not sorted"),
        (lambda o: o["models"]["t2v"]["files"][0].update(size=-1), "bad size"),
        (lambda o: o["models"].update({"../x": o["models"]["t2v"]}), "../x"),
        (lambda o: o.update(casstore_lock=7), "schema"),
        (lambda o: o["models"]["t2v"].pop("manifest"), "manifest"),
    ],
)
def test_hand_edited_lock_rejected(edit, needle):
    lock, _ = sample()
    obj = json.loads(lock.encode())
    edit(obj)
    with pytest.raises(InvalidInput) as e:
        LockFile.decode(json.dumps(obj).encode(), "proj/cas.lock")
    assert "proj/cas.lock" in str(e.value) and needle in str(e.value)


def test_matches_detects_a_file_list_that_differs():
    lock, m = sample()
    other = Manifest("t2v", "1.1.0", (Entry("config.json", 11, D(1)), Entry("w/model.safetensors", 1 << 30, D(2))))
    assert not lock.models["t2v"].matches(other)
    assert LockedFile("a", 1, D(1)) == LockedFile("a", 1, D(1))
