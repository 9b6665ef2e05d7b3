"""Hashing a blob while it downloads (transfer/frontier.py): whatever order the parts' bytes are
written in, the digest is the file's, and bytes that arrive in order are not read back."""

import asyncio
import logging
import os
import random
import re
import threading

import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from casstore.model.digest import Digest
from casstore.remotes.http import HttpRemote
from casstore.transfer.download import Downloader, Settings
from casstore.transfer.partials import BlobJob, Part
from casstore.transfer.scheduler import Scheduler

from servers import nginx


def new_job(path, size, done=()):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.ftruncate(fd, size)
    job = BlobJob(Digest("0" * 64), size, path, None, fd=fd)
    job.done = [list(r) for r in done]
    return job


def cut(size, bounds):
    edges = sorted({0, size, *(b % size for b in bounds)})
    return list(zip(edges, edges[1:]))


def write(job, part, data):
    """What the engine's threads do with a piece of a part (download.py, ``sink``)."""
    view = memoryview(data)
    with job.lock:
        os.pwrite(job.fd, view, part.pos)
        mine = job.frontier.claim(part.pos)
        part.pos += len(view)
    if mine:
        job.frontier.extend(view, job.fd, job.written_from)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 200_000), bounds=st.lists(st.integers(0, 10**9), max_size=6),
       adopted=st.sets(st.integers(0, 6), max_size=3), piece=st.integers(1, 50_000), seed=st.integers(0, 2**32))
def test_any_order_of_writes_gives_the_files_digest(tmp_path_factory, size, bounds, adopted, piece, seed):
    data = os.urandom(size)
    path = tmp_path_factory.mktemp("f") / "x.part"
    ranges = cut(size, bounds)
    done = [ranges[i] for i in sorted(adopted) if i < len(ranges)]  # a resumed partial's ranges
    job = new_job(path, size, done)
    try:
        for a, b in done:
            os.pwrite(job.fd, data[a:b], a)
        for a, b in ranges:
            if [a, b] not in job.done:
                job.parts.append(Part(job, a, a, b))
        rnd = random.Random(seed)
        todo = [p for p in job.parts]
        while todo:  # one piece of a random part at a time
            p = rnd.choice(todo)
            n = min(piece, p.end - p.pos)
            write(job, p, data[p.pos:p.pos + n])
            if p.pos == p.end:
                todo.remove(p)
        got, n = job.frontier.finish(job.fd)
    finally:
        os.close(job.fd)
    assert (got.hex, n) == (blake3.blake3(data).hexdigest(), size)
    assert job.frontier.read_back <= size


def test_bytes_written_in_order_are_not_read_back(tmp_path):
    data = os.urandom(3 << 20)
    job = new_job(tmp_path / "x.part", len(data))
    parts = [Part(job, a, a, a + (1 << 20)) for a in range(0, len(data), 1 << 20)]
    job.parts.extend(parts)
    try:
        for p in parts:
            for i in range(p.start, p.end, 100_000):
                write(job, p, data[i:min(p.end, i + 100_000)])
        assert job.frontier.read_back == 0
        assert job.frontier.finish(job.fd) == (Digest.of_bytes(data), len(data))
        assert job.frontier.read_back == 0
    finally:
        os.close(job.fd)


def test_writers_on_threads_give_the_files_digest(tmp_path):
    for round_ in range(5):
        data = os.urandom(4 << 20)
        job = new_job(tmp_path / f"x{round_}.part", len(data))
        parts = [Part(job, a, a, min(len(data), a + 700_000)) for a in range(0, len(data), 700_000)]
        job.parts.extend(parts)

        def run(job, data, p, seed):
            rnd = random.Random(seed)
            while p.pos < p.end:
                n = min(rnd.randint(1, 150_000), p.end - p.pos)
                write(job, p, data[p.pos:p.pos + n])

        threads = [threading.Thread(target=run, args=(job, data, p, i + 10 * round_)) for i, p in enumerate(parts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            assert job.frontier.finish(job.fd) == (Digest.of_bytes(data), len(data))
        finally:
            os.close(job.fd)


def test_a_worker_goes_on_with_its_blob_and_otherwise_takes_a_blob_nobody_fetches(tmp_path):
    async def go():
        s = Scheduler(min_split=1 << 20)
        a, b = (BlobJob(Digest(c * 64), 4 << 20, tmp_path / c, None) for c in "ab")
        s.add(a, 1 << 20)
        s.add(b, 1 << 20)
        first = s.next(may_split=False)
        s.inflight.append(first)
        other = s.next(may_split=False)  # a's second part is next in the queue; b is idle
        assert (first.job, first.start, other.job, other.start) == (a, 0, b, 0)
        s.inflight.remove(first)  # a's first part is done; b's too, and nobody fetches a now
        after = s.next(may_split=False, after=other)  # still: the part that continues b
        assert (after.job, after.start) == (b, 1 << 20)

    asyncio.run(go())


def test_every_queued_part_is_handed_out_once_and_none_of_a_failed_blob(tmp_path):
    async def go():
        s = Scheduler(min_split=1 << 20)
        jobs = [BlobJob(Digest(f"{i:064x}"), (i % 5 + 1) << 20, tmp_path / str(i), None) for i in range(300)]
        for j in jobs:
            s.add(j, 1 << 20)
        jobs[7].error = RuntimeError("failed")
        got, last = [], None
        while (p := s.next(may_split=False, after=last)) is not None:
            got.append((id(p.job), p.start))
            s.inflight[:] = [p]  # one worker
            last = p
        want = [(id(j), a) for j in jobs if j is not jobs[7] for a in range(0, j.size, 1 << 20)]
        assert sorted(got) == sorted(want) and len(got) == len(set(got))
        assert got == want  # one worker: each blob whole and in order, blobs in the order they came

    asyncio.run(go())


def fetch(store, url, blobs, **over):
    async def go():
        r = HttpRemote(url)
        try:
            s = Settings(**{"part_size": 2 << 20, "min_split": 256 << 10, "request_size": 1 << 20, **over})
            return await Downloader(store, [r], s).fetch({d: len(data) for d, data in blobs.items()})
        finally:
            await r.close()

    return asyncio.run(go())


def read_back(caplog):
    return {m[0]: int(m[1]) for r in caplog.records
            for m in re.findall(r"verified blake3:(\w+) \(\d+ bytes, (\d+) read back", r.getMessage())}


def test_a_fetch_from_nginx_hashes_what_arrives_in_order(store, tmp_path, caplog):
    """Real connections on the engine's threads: one worker gets every blob in order and reads
    nothing back; with more workers (parts split and arrive ahead) each blob's first bytes at
    least are hashed as they arrive."""
    caplog.set_level(logging.INFO, logger="casstore")
    blobs = {}
    for i in range(6):
        data = os.urandom((6 << 20) + i * 12345)
        d = Digest.of_bytes(data)
        blobs[d] = data
        (tmp_path / "www" / "blobs" / d.hex[:2]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "www" / "blobs" / d.hex[:2] / d.hex).write_bytes(data)
    one, rest = dict(list(blobs.items())[:3]), dict(list(blobs.items())[3:])
    with nginx(tmp_path / "www", tmp_path / "nginx") as server:
        fetch(store, server.url, one, jobs=1)
        assert read_back(caplog) == {d.hex: 0 for d in one}
        caplog.clear()
        fetch(store, server.url, rest, jobs=4)
        back = read_back(caplog)
        assert back.keys() == {d.hex for d in rest}
        assert all(back[d.hex] < len(data) for d, data in rest.items()), back  # offset 0 lands at the frontier
    for d, data in blobs.items():
        assert store.blob_path(d).read_bytes() == data


def test_a_split_waits_while_the_parts_writer_holds_the_lock(tmp_path):
    """A split moves an in-flight part's end only under the job's lock, which a writer holds from
    checking its room to advancing its position: no write runs past an end that moved."""
    s = Scheduler(min_split=1 << 20)
    job = BlobJob(Digest("a" * 64), 16 << 20, tmp_path / "a", None)
    s.add(job, 16 << 20)
    part = s.next(may_split=True)
    s.inflight.append(part)
    got = []
    with job.lock:
        t = threading.Thread(target=lambda: got.append(s.next(may_split=True)))
        t.start()
        t.join(0.3)
        assert t.is_alive() and part.end == 16 << 20
    t.join()
    assert got[0].start == part.end < 16 << 20


def test_the_engine_writes_a_part_only_while_holding_its_jobs_lock(store, tmp_path, monkeypatch):
    jobs, held = [], []
    post_init = BlobJob.__post_init__

    def track(self):
        post_init(self)
        jobs.append(self)

    real = os.pwrite

    def pwrite(fd, data, offset):
        if threading.current_thread().name.startswith("cas-fetch"):
            held.append(jobs[-1].lock.locked())  # the job in use: adopt() makes one it may drop
        return real(fd, data, offset)

    monkeypatch.setattr(BlobJob, "__post_init__", track)
    monkeypatch.setattr(os, "pwrite", pwrite)
    data = os.urandom(5 << 20)
    d = Digest.of_bytes(data)
    (tmp_path / "www" / "blobs" / d.hex[:2]).mkdir(parents=True)
    (tmp_path / "www" / "blobs" / d.hex[:2] / d.hex).write_bytes(data)
    with nginx(tmp_path / "www", tmp_path / "nginx") as server:
        fetch(store, server.url, {d: data}, jobs=2)
    assert held and all(held), held
    assert store.blob_path(d).read_bytes() == data
