"""One contract, every remote (casstore.testing): memory, directory, `cas serve`, and nginx in
front of a directory (read-only)."""

from casstore.remotes.directory import DirectoryRemote
from casstore.remotes.http import HttpRemote
from casstore.remotes.memory import MemoryRemote
from casstore.testing import ReadContract, WriteContract

from servers import CasServe, Nginx


class TestMemory(WriteContract):
    def make(self, tmp_path):
        r = MemoryRemote()
        return r, r


class TestDirectory(WriteContract):
    def make(self, tmp_path):
        return DirectoryRemote(tmp_path / "remote"), DirectoryRemote(tmp_path / "remote")


class TestCasServe(WriteContract):
    def make(self, tmp_path):
        self.srv = CasServe(tmp_path / "remote")
        return HttpRemote(self.srv.url, token=self.srv.token), HttpRemote(self.srv.url, token=self.srv.token)

    def close(self):
        self.srv.stop()


class TestNginx(ReadContract):
    def make(self, tmp_path):
        seeder = DirectoryRemote(tmp_path / "remote")
        seeder._ensure()
        self.ngx = Nginx(tmp_path / "remote", tmp_path / "nginx")
        return HttpRemote(self.ngx.url), seeder

    def close(self):
        self.ngx.stop()
