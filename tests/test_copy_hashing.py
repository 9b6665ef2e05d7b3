"""A copy into the store is hashed from the new file as it is written (fs/linking.copy with a
hasher), in steps that straddle every boundary: mapped and read steps, the kernel copy and its
read/write fallback. What is hashed must be what the new file holds, never the source's bytes."""

import errno
import os

import pytest

from casstore.errors import IntegrityError
from casstore.fs import linking
from casstore.model.digest import Digest, StreamHasher, hash_file

STEP = linking._STEP


@pytest.mark.parametrize("size", [0, 1, linking._MAPPED_MIN - 1, linking._MAPPED_MIN + 7, STEP, 3 * STEP + 12345])
def test_a_copy_hashed_as_it_is_written_has_the_bytes_digest(tmp_path, size):
    data = os.urandom(size)
    src = tmp_path / "src"
    src.write_bytes(data)
    h = StreamHasher()
    os.close(linking.copy(src, str(tmp_path / "dst"), hasher=h))
    assert (tmp_path / "dst").read_bytes() == data
    assert (h.digest(), h.size) == (Digest.of_bytes(data), size)


@pytest.mark.parametrize("fails_after", [0, 1])
def test_a_copy_falling_back_to_read_and_write_is_hashed_whole(tmp_path, monkeypatch, fails_after):
    """copy_file_range refused at once (across filesystems on old kernels) or after a step: the
    rest goes through read and write, and the hasher still sees every byte once."""
    data = os.urandom(2 * STEP + 999)
    src = tmp_path / "src"
    src.write_bytes(data)
    real, calls = os.copy_file_range, []

    def refusing(*a):
        calls.append(a)
        if len(calls) > fails_after:
            raise OSError(errno.EXDEV, "cross-device")
        return real(*a)

    monkeypatch.setattr(os, "copy_file_range", refusing)
    h = StreamHasher()
    os.close(linking.copy(src, str(tmp_path / "dst"), hasher=h))
    assert len(calls) == fails_after + 1
    assert (tmp_path / "dst").read_bytes() == data
    assert (h.digest(), h.size) == (Digest.of_bytes(data), len(data))


def test_what_is_hashed_is_the_copy_not_the_source(store, tmp_path, monkeypatch):
    """A byte the copy got wrong (a bad disk, a buggy filesystem) makes the copy's digest differ
    from the source's: put_file refuses it instead of publishing it under the source's name."""
    data = os.urandom(STEP + 5000)
    src = tmp_path / "w.bin"
    src.write_bytes(data)
    real = os.copy_file_range

    def corrupting(src_fd, dst_fd, count, *a):
        n = real(src_fd, dst_fd, count, *a)
        pos = os.lseek(dst_fd, 0, os.SEEK_CUR)
        os.pwrite(dst_fd, b"\xff" if data[pos - 1] != 0xFF else b"\x00", pos - 1)
        return n

    monkeypatch.setattr(os, "copy_file_range", corrupting)
    expected, _ = hash_file(src)
    with pytest.raises(IntegrityError, match="changed while it was being added"):
        store.put_file(src, expected=expected)
    assert not store.has_blob(expected)
    assert [p for p in store.layout.tmp.iterdir() if p.is_file()] == []


def test_a_copied_blob_is_published_under_the_digest_of_its_bytes(store, tmp_path):
    data = os.urandom(STEP + 1)
    src = tmp_path / "w.bin"
    src.write_bytes(data)
    p = store.put_file(src)
    assert p.method == "copy" and p.digest == Digest.of_bytes(data)
    assert hash_file(store.blob_path(p.digest)) == (p.digest, len(data))


@pytest.mark.parametrize("refusal, asked", [(errno.EOPNOTSUPP, 1), (errno.EXDEV, 1), (errno.EINVAL, 3)])
def test_a_filesystem_that_cannot_reflink_is_asked_once(tmp_path, monkeypatch, refusal, asked):
    """ext4 refuses FICLONE for every file: after the first refusal this process copies without
    asking (each refusal made and removed a file). A refusal that may be one file's own (EINVAL:
    btrfs files of different COW modes) is no reason to stop asking."""
    calls = []

    def refusing(src, name, dir_fd=None):
        calls.append(src)
        raise linking.LinkUnsupported(refusal, "no reflink here")

    monkeypatch.setattr(linking, "reflink", refusing)
    monkeypatch.setattr(linking, "_NO_REFLINK", set())
    (tmp_path / "out").mkdir()
    for i in range(3):
        (tmp_path / f"s{i}").write_bytes(b"x" * (i + 1))
        assert linking.reflink_or_copy(tmp_path / f"s{i}", tmp_path / "out" / f"d{i}") == "copy"
        assert (tmp_path / "out" / f"d{i}").read_bytes() == b"x" * (i + 1)
    assert len(calls) == asked
