"""The remote stack (remotes/layers.py): each method retried once after a 503, reads resumed,
mirrors tried in order with a hung one demoted after one failure, and every mirror's error kept
when all fail. Real directory remotes, real nginx and a real hung server on loopback."""

import asyncio
import json
import os
import subprocess

import pytest

from casstore.errors import IntegrityError, NotFound, RemoteError
from casstore.model.digest import Digest
from casstore.ops.fetch import fetch
from casstore.remotes.base import blob, chunks
from casstore.remotes.directory import DirectoryRemote
from casstore.remotes.layers import Mirrors, MirrorsFailed, Tuning, stack
from casstore.store.objects import Store
from casstore.testing.flaky import Flaky
from casstore.transfer.download import Settings

from conftest import CasRunner, assert_store_consistent, make_model, publish
from servers import Hung, nginx

FAST = Tuning(attempts=3, backoff=0.01, backoff_cap=0.05)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def published(tmp_path):
    nas = tmp_path / "nas"
    publish(tmp_path, make_model(tmp_path / "src", {"w.bin": 3 << 20, "config.json": b"{}"}), "m", "1.0.0", nas)
    return nas


@pytest.mark.parametrize("method", ["read_index", "read", "stat", "missing", "listing", "now", "looks_like_remote"])
def test_every_read_method_is_retried_after_one_503(published, method):
    flaky = Flaky(DirectoryRemote(published), fail={method: 1})
    s = stack([flaky], FAST)
    d = Digest.of_bytes(b"{}")

    async def go():
        if method == "read_index":
            assert (await s.read_index("m")) is not None
        elif method == "read":
            assert b"".join([c async for c in s.read(blob(d, 2))]) == b"{}"
        elif method == "stat":
            assert await s.stat(blob(d, 2)) == 2
        elif method == "missing":
            assert await s.missing([blob(d, 2)]) == set()
        elif method == "listing":
            assert len([x async for x in s.listing("blobs/")]) == 2
        elif method == "now":
            assert await s.now() > 0
        else:
            assert await s.looks_like_remote()

    run(go())
    assert flaky.calls[method] == 2 and s.retries == 1


def test_a_listing_that_fails_midway_is_started_again_and_gives_each_key_once(tmp_path):
    """The retry layer passes what the second listing gives again by key (keys ascend), not by
    a set of every key seen."""
    nas = tmp_path / "nas"
    publish(tmp_path, make_model(tmp_path / "src", {f"f{i}": 1000 + i for i in range(6)}), "m", "1", nas)

    class FailsMidway(Flaky):
        async def listing(self, under, skip=None):
            n = 0
            async for item in self.inner.listing(under, skip):
                yield item
                n += 1
                if n == 3:
                    self._trip("listing")  # once (fail=...), after three keys

    flaky = FailsMidway(DirectoryRemote(nas), fail={"listing": 1})
    s = stack([flaky], FAST)

    async def go():
        return [x.key async for x in s.listing("blobs/")]

    keys = run(go())
    assert keys == sorted({x.key for x in run(listed(DirectoryRemote(nas)))}) and len(keys) == 6
    assert flaky.calls["listing"] == 2 and s.retries == 1


async def listed(remote):
    return [x async for x in remote.listing("blobs/")]


def test_a_listing_out_of_order_passes_whole_when_nothing_fails(tmp_path):
    """Keys ascend on every backend here, but a server that listed otherwise would lose nothing
    (a lock above all, remotes/locks.py) unless its listing had to be started again."""
    nas = tmp_path / "nas"
    publish(tmp_path, make_model(tmp_path / "src", {f"f{i}": 1000 + i for i in range(6)}), "m", "1", nas)

    class Backwards(Flaky):
        async def listing(self, under, skip=None):
            for item in [x async for x in self.inner.listing(under, skip)][::-1]:
                yield item

    keys = [x.key for x in run(listed(stack([Backwards(DirectoryRemote(nas))], FAST)))]
    assert keys == sorted(keys, reverse=True) and len(keys) == 6


@pytest.mark.parametrize("method", ["write", "write_index", "put_small", "delete"])
def test_every_write_method_is_retried_after_one_503(tmp_path, method):
    target = DirectoryRemote(tmp_path / "r")
    flaky = Flaky(target, fail={method: 1})
    s = stack([flaky], FAST)
    data = os.urandom(1000)
    d = Digest.of_bytes(data)

    async def go():
        if method == "write":
            await s.write(blob(d, len(data)), data)
            assert await target.stat(blob(d)) == len(data)
        elif method == "write_index":
            await s.write_index("m", b'{"casstore_index": 1, "model": "m", "versions": {}}', None)
            assert await target.read_index("m") is not None
        elif method == "put_small":
            assert await s.put_small("locks/x.json", b"{}")
        else:
            await target.put_small("locks/y.json", b"{}")
            await s.delete("locks/y.json")

    run(go())
    assert flaky.calls[method] == 2


def test_a_fetch_survives_one_503_on_index_manifest_chunk_map_stat_and_blob(published, store):
    """Before: one 503 on a model's index failed the fetch (only blob parts were retried)."""
    flaky = Flaky(DirectoryRemote(published), fail={"read_index": 1, "read": 2, "stat": 1})
    res = run(fetch(store, [flaky], "m", "1.0.0", settings=Settings(attempts=3, backoff=0.01)))
    assert res.stats.bytes_downloaded > 3 << 20 and flaky.fail["read_index"] == 0 and flaky.fail["read"] == 0
    assert_store_consistent(store)


def test_a_read_that_breaks_resumes_at_its_offset(published):
    class Breaks(DirectoryRemote):
        broke = False

        async def read(self, key, start=0, end=None):
            n = 0
            async for chunk in super().read(key, start, end):
                yield chunk
                n += len(chunk)
                if not Breaks.broke and n >= 1 << 20:
                    Breaks.broke = True
                    raise RemoteError("reset mid-body", url=self.url, retryable=True)

    from casstore.store.objects import Store

    st = Store.open(published.parent / "pub")
    d = st.load("m", "1.0.0")[2].entries[1].digest  # w.bin (sorted after config.json)
    s = stack([Breaks(published)], FAST)
    got = run(_read_all(s, blob(d, 3 << 20)))
    assert Digest.of_bytes(got) == d and s.retries == 1


async def _read_all(r, key):
    return b"".join([c async for c in r.read(key)])


def test_when_every_mirror_fails_the_error_names_each_url_and_status(tmp_path, store):
    a = Flaky(DirectoryRemote(tmp_path / "a"), fail={"read_index": -1}, status=503, url="https://a.example/cas/")
    b = Flaky(DirectoryRemote(tmp_path / "b"), fail={"read_index": -1}, status=500, url="https://b.example/cas/")
    with pytest.raises(MirrorsFailed) as e:
        run(fetch(store, [a, b], "m", "1.0.0", settings=Settings(attempts=2, backoff=0.01)))
    msg = str(e.value)
    assert "https://a.example/cas/" in msg and "https://b.example/cas/" in msg and "503" in msg and "500" in msg
    assert [x.status for x in e.value.errors] == [503, 500] and e.value.status == 503


def test_a_missing_object_on_every_mirror_is_not_found_naming_them(tmp_path):
    s = stack([DirectoryRemote(tmp_path / "a"), DirectoryRemote(tmp_path / "b")], FAST)
    d = Digest.of_bytes(b"nothing")
    with pytest.raises(NotFound) as e:
        run(_read_all(s, chunks(d)))
    assert str(tmp_path / "a") in str(e.value) and str(tmp_path / "b") in str(e.value)


def test_a_hung_mirror_is_demoted_after_one_failure(tmp_path):
    """Before: a default remote that accepts and never answers, before a healthy nginx: each blob
    tried it five times (30 s each); after 590 s 24 of 209 blobs were done, and nothing was said."""
    nas = tmp_path / "nas"
    src = make_model(tmp_path / "src", {f"f{i:03d}.json": 200 + i for i in range(200)} | {"w.bin": 3 << 20})
    publish(tmp_path, src, "m", "1.0.0", nas)
    hung = Hung()
    try:
        with nginx(tmp_path, tmp_path / "ngx") as srv:
            with open(os.environ["CAS_CONFIG"], "w") as f:
                f.write(f'default_remote = "hung"\n[remotes.hung]\nurl = "{hung.url}"\n'
                        f'[remotes.good]\nurl = "{srv.url}nas/"\n')
            cas = CasRunner(tmp_path / "mine", tmp_path)
            env = {**os.environ, "CAS_FIRST_BYTE_TIMEOUT": "1"}
            p = subprocess.run(cas.argv("--json", "fetch", "m@1.0.0"), capture_output=True, text=True, env=env,
                               timeout=120)
            assert p.returncode == 0, p.stderr
            assert json.loads(p.stdout)["blobs"] == 201
            assert "did not answer" in p.stderr and hung.url in p.stderr  # said once, naming it
            assert hung.requests == 1, hung.requests  # the index; demoted then, never asked again
    finally:
        hung.stop()


def test_stack_is_built_once(tmp_path):
    s = stack([DirectoryRemote(tmp_path)], FAST)
    assert stack(s) is s and stack([s]) is s and isinstance(s, Mirrors)


def test_a_mirror_serving_wrong_bytes_is_distrusted_and_the_blob_fetched_from_the_next(published, store, caplog):
    """Before: bytes from a stale or corrupt mirror that did not verify failed the fetch, with the
    first mirror's URL named whichever mirror had served them."""
    for kind in (True, "blob"):  # the manifest first, or the blobs (one in parts, one small, in memory)
        bad = Flaky(DirectoryRemote(published), wrong=kind, url="https://stale.example/cas/")
        s = stack([bad, DirectoryRemote(published)], FAST)
        run(fetch(store, s, "m", "1.0.0", settings=Settings(attempts=2, backoff=0.01, jobs=2)))
        assert store.refs.get_tag("m", "1.0.0") is not None and s.distrusted == {0}
        assert "stale.example" in caplog.text and "did not verify" in caplog.text
        assert_store_consistent(store)
        store = Store.open(store.root.parent / "again")


def test_when_every_mirror_serves_wrong_bytes_the_error_names_each(published, store):
    a = Flaky(DirectoryRemote(published), wrong=True, url="https://a.example/cas/")
    b = Flaky(DirectoryRemote(published), wrong=True, url="https://b.example/cas/")
    with pytest.raises(IntegrityError) as e:
        run(fetch(store, stack([a, b], FAST), "m", "1.0.0", settings=Settings(attempts=2, backoff=0.01)))
    assert "https://b.example/cas/" in str(e.value)  # the second try came from b
    assert store.refs.models() == []
    assert_store_consistent(store)
