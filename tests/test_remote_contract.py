"""One contract, every remote (casstore.testing), each checked through the storage under it:
memory, directory, `cas serve`, nginx in front of a directory (read-only), moto and SeaweedFS
(a Go S3 server) buckets, and the remote stack itself (remotes/layers.py) over a remote that
fails every other call, behind a mirror that never answers."""

import os

import pytest

from casstore.remotes.directory import DirectoryRemote
from casstore.remotes.http import HttpRemote
from casstore.remotes.layers import Tuning, stack
from casstore.remotes.memory import MemoryRemote
from casstore.remotes.s3 import S3Remote
from casstore.testing import BucketStorage, DirectoryStorage, MemoryStorage, ReadContract, WriteContract
from casstore.testing.flaky import Flaky

from servers import CasServe, Hung, Moto, Nginx, SeaweedFS

# Retries without waiting; a mirror that says nothing for 0.3 s is given up on (and demoted).
FAST = Tuning(attempts=3, backoff=0.01, backoff_cap=0.05, first_byte_timeout=0.3, connect_timeout=0.3)


class TestMemory(WriteContract):
    def make(self, tmp_path):
        r = MemoryRemote()
        return r, MemoryStorage(r)


class TestDirectory(WriteContract):
    def make(self, tmp_path):
        return DirectoryRemote(tmp_path / "remote"), DirectoryStorage(tmp_path / "remote")


class TestCasServe(WriteContract):
    def make(self, tmp_path):
        self.srv = CasServe(tmp_path / "remote")
        return HttpRemote(self.srv.url, token=self.srv.token), DirectoryStorage(tmp_path / "remote")

    def close(self):
        self.srv.stop()


class TestNginx(ReadContract):
    def make(self, tmp_path):
        (tmp_path / "remote").mkdir()
        self.ngx = Nginx(tmp_path / "remote", tmp_path / "nginx")
        return HttpRemote(self.ngx.url), DirectoryStorage(tmp_path / "remote")

    def close(self):
        self.ngx.stop()


class TestStackOverAFlakyRemote(WriteContract):
    """Every call of every method fails once with a 503 before it succeeds: the stack retries each."""

    def make(self, tmp_path):
        r = MemoryRemote()
        return stack([Flaky(r, every=2)], FAST), MemoryStorage(r)


class TestStackBehindAHungMirror(ReadContract):
    """The first mirror accepts connections and never answers; reads come from the second."""

    def make(self, tmp_path):
        self.hung = Hung()
        r = MemoryRemote()
        return stack([HttpRemote(self.hung.url), Flaky(r, every=2)], FAST), MemoryStorage(r)

    def close(self):
        self.hung.stop()


@pytest.fixture(scope="module")
def moto():
    server = Moto()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory):
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


class _Bucket(WriteContract):
    server: str

    @pytest.fixture(autouse=True)
    def _bucket(self, request, monkeypatch):
        srv = request.getfixturevalue(self.server)
        for k, v in srv.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", srv.url)
        self.srv, self.prefix = srv, f"team-{os.urandom(4).hex()}/models"

    def make(self, tmp_path):
        # one bucket per server, a fresh prefix per test: SeaweedFS gives each bucket volumes of its own
        bucket = self.srv.shared_bucket()
        return S3Remote(f"s3://{bucket}/{self.prefix}"), BucketStorage(self.srv.client(), bucket, self.prefix)


class TestMotoBucket(_Bucket):
    server = "moto"


class TestSeaweedFSBucket(_Bucket):
    server = "seaweedfs"
