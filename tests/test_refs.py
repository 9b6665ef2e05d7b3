"""Reading tags: a tag as `set_tag` writes it and one written by hand give the same digest, in as
few reads as the file needs, and anything else is an error naming the file."""

import os
import threading

import pytest

from casstore.errors import CorruptStore
from casstore.model.digest import Digest

D = Digest("ab" * 32)


@pytest.mark.parametrize("text", [f"{D}\n", f"{D}", f"  {D}\r\n", f"{D}\n\n"])
def test_a_tag_in_any_form_the_careful_read_accepts_names_its_manifest(store, text):
    store.refs.set_tag("m", "1", D)
    path = store.layout.tag("m", "1")
    os.unlink(path)
    path.write_text(text)
    assert store.refs.get_tag("m", "1") == D
    assert store.refs.tags("m") == {"1": D}


def test_a_tag_as_written_is_read_in_one_read(store, monkeypatch):
    import casstore.model.strictjson as strictjson

    store.refs.set_tag("m", "1", D)
    reads, real = [], os.read

    def read(fd, n):
        reads.append(n)
        return real(fd, n)

    monkeypatch.setattr(strictjson.os, "read", read)
    assert store.refs.tags("m") == {"1": D}
    assert len(reads) == 1


@pytest.mark.parametrize("text", ["blake3:" + "AB" * 32 + "\n", "blake3:" + "ab" * 31 + "\n", "", "x" * 500])
def test_a_damaged_tag_is_an_error_naming_its_file(store, text):
    store.refs.set_tag("m", "1", D)
    path = store.layout.tag("m", "1")
    os.unlink(path)
    path.write_text(text)
    os.utime(path, (1, 1))  # old: not a record still being written, re-read for a while
    with pytest.raises(CorruptStore, match=str(path)):
        store.refs.tags("m")


def test_a_fifo_in_place_of_a_tag_is_an_error_not_a_hang(store):
    store.refs.set_tag("m", "1", D)
    path = store.layout.tag("m", "1")
    os.unlink(path)
    os.mkfifo(path)
    os.utime(path, (1, 1))
    done = []

    def read():
        try:
            store.refs.tags("m")
        except CorruptStore as e:
            done.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert done and str(path) in str(done[0])
