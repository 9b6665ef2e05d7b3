"""A version's life against a simple model: fetch (whole or a selection), add, use, rollback, rm
(forced or not) and GC (one that only tidies, one that takes every version it may) in any order.
After every step `list`, `du`, `path` and `log` must tell the same story as the model: which
versions are here with which files, and which one is current (if any)."""

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from casstore.errors import Conflict, NotFound
from casstore.gc import Policy, execute, plan, read_state
from casstore.model.globs import Selection
from casstore.model.history import current_of
from casstore.ops.add import add
from casstore.ops.checkout import view
from casstore.ops.fetch import fetch
from casstore.ops.push import push
from casstore.ops.remove import remove
from casstore.ops.switch import rollback, use
from casstore.ops.usage import report
from casstore.remotes.directory import DirectoryRemote
from casstore.store.objects import Store

from conftest import assert_store_consistent

PUBLISHED = {
    "1.0.0": {"a/x.bin": b"x-1" * 100, "a/y.bin": b"y-1" * 100, "c.json": b"{}"},
    "1.1.0": {"a/x.bin": b"x-1" * 100, "a/y.bin": b"y-2" * 100, "c.json": b"{}"},
    "2.0.0": {"a/x.bin": b"x-3" * 100, "b.bin": b"b" * 300},
}
SELECT_A = Selection.of(["a/"])
TIDY = Policy(max_size=None, retention_days=None, keep_last=100, grace=0)
HARD = Policy(max_size=0, retention_days=0, keep_last=0, grace=0)


def write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def remote_dir():
    """One directory remote for every example (read only by them)."""
    d = Path(tempfile.mkdtemp(prefix="cas-lm-remote-"))
    pub = Store.open(d / "pub")
    for v, files in PUBLISHED.items():
        add(pub, write(d / f"src-{v}", files), "m", v)
        asyncio.run(push(pub, DirectoryRemote(d / "nas"), "m", v))
    yield d / "nas"
    shutil.rmtree(d, ignore_errors=True)


class Lifecycle(RuleBasedStateMachine):
    nas: Path

    @initialize()
    def setup(self):
        self.dir = Path(tempfile.mkdtemp(prefix="cas-lm-"))
        self.store = Store.open(self.dir / "store")
        self.remote = DirectoryRemote(self.nas)
        self.here: dict[tuple[str, str], dict[str, bytes]] = {}  # version -> the files the store holds of it
        self.cur: dict[str, str | None] = {}
        self.n = 0

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(version=st.sampled_from(sorted(PUBLISHED)), part=st.booleans())
    def fetch_version(self, version, part):
        asyncio.run(fetch(self.store, [self.remote], "m", version, selection=SELECT_A if part else None))
        whole = PUBLISHED[version]
        if not part or self.here.get(("m", version)) == whole:
            self.here[("m", version)] = dict(whole)
        else:
            self.here[("m", version)] = {p: b for p, b in whole.items() if SELECT_A.selects(p)}
        if self.cur.get("m") is None:
            self.cur["m"] = version

    @rule(version=st.sampled_from(["1", "2"]), content=st.sampled_from([b"local", b"x-1" * 100]))
    def add_local(self, version, content):
        self.n += 1
        files = {"w.bin": content}
        try:
            add(self.store, write(self.dir / f"src{self.n}", files), "local", version)
        except Conflict:
            assert self.here.get(("local", version)) not in (None, files)
            return
        self.here[("local", version)] = files
        if self.cur.get("local") is None:
            self.cur["local"] = version

    @precondition(lambda self: self.here)
    @rule(data=st.data())
    def use_version(self, data):
        model, version = data.draw(st.sampled_from(sorted(self.here)))
        use(self.store, model, version)
        self.cur[model] = version

    @rule(model=st.sampled_from(["m", "local"]))
    def rollback_model(self, model):
        try:
            s = rollback(self.store, model)
        except NotFound:
            return  # nothing to go back to, or it is gone: nothing changed (the invariants check)
        assert (model, s.version) in self.here
        self.cur[model] = s.version

    @precondition(lambda self: self.here)
    @rule(data=st.data(), force=st.booleans())
    def rm_version(self, data, force):
        model, version = data.draw(st.sampled_from(sorted(self.here)))
        current = self.cur.get(model) == version
        try:
            r = remove(self.store, model, version, force=force)
        except Conflict:
            assert current and not force
            return
        assert r.was_current == current
        del self.here[(model, version)]
        if current:
            self.cur[model] = None

    @rule()
    def gc_tidy(self):
        execute(self.store, plan(read_state(self.store), TIDY), TIDY)

    @rule()
    def gc_hard(self):
        execute(self.store, plan(read_state(self.store), HARD), HARD)
        self.here = {(m, v): files for (m, v), files in self.here.items() if self.cur.get(m) == v}

    @invariant()
    def everything_agrees(self):
        if not hasattr(self, "store"):
            return
        listed = report(self.store, totals=False)
        seen = {(v.model, v.version): v for u in listed.models for v in u.versions}
        assert set(seen) == set(self.here), "cas list"
        assert {k for k, v in seen.items() if v.current} == {(m, v) for m, v in self.cur.items() if v is not None}
        for k, v in seen.items():
            assert v.files == len(self.here[k]), f"cas list files of {k}"
        du = report(self.store, policy=TIDY)
        assert {(v.model, v.version) for u in du.models for v in u.versions} == set(self.here), "cas du"
        on_disk = sum(p.stat().st_size for _, p in self.store.iter_blobs())
        assert du.totals is not None and du.totals.blob_bytes == on_disk
        for model in ("m", "local"):
            cur = self.cur.get(model)
            head = current_of(self.store.refs.history(model))
            assert (head.version if head else None) == cur, "cas log"
            if cur is None:
                with pytest.raises(NotFound):
                    self.store.resolve(model)
                continue
            version, d = self.store.resolve(model)  # `cas path M`
            path = view(self.store, d, self.store.get_manifest(d))
            got = {os.path.relpath(os.path.join(r, n), path): Path(r, n).read_bytes()
                   for r, _, names in os.walk(path) for n in names}
            assert version == cur and got == self.here[(model, cur)], "cas path"
        assert_store_consistent(self.store)


Lifecycle.TestCase.settings = settings(max_examples=25, stateful_step_count=15, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow,
                                                              HealthCheck.function_scoped_fixture])


@pytest.fixture
def machine(remote_dir):
    Lifecycle.nas = remote_dir
    return Lifecycle.TestCase


def test_list_du_path_and_log_agree_through_any_lifecycle(machine):
    machine().runTest()


def test_adding_again_a_version_of_a_model_with_no_current_one_makes_it_current(store, tmp_path):
    """Found by the machine above: with the current version removed (rm --force), adding a new
    version made it current but adding an existing one again did not."""
    from conftest import make_model

    add(store, make_model(tmp_path / "a", {"w.bin": b"two"}), "local", "2")
    src = make_model(tmp_path / "b", {"w.bin": b"one"})
    add(store, src, "local", "1")
    remove(store, "local", "2", force=True)
    assert store.refs.current("local") is None
    r = add(store, src, "local", "1")
    assert r.unchanged and r.current and store.refs.current("local").version == "1"
