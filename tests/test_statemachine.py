"""The store against a dictionary model: add / use / rollback (plain and named) / checkout / log in
any order. Rollback walks back through distinct versions and always agrees with the log."""

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from casstore.errors import Conflict, NotFound
from casstore.ops.add import add
from casstore.ops.checkout import checkout
from casstore.ops.switch import rollback, use
from casstore.store.objects import Store

from conftest import assert_store_consistent

MODELS = ["t2v", "i2v"]
VERSIONS = ["1.0", "1.1", "2.0"]
CONTENTS = [b"", b"vae-weights", b"t5-encoder" * 50, b"shard-1", b"shard-2"]
files = st.dictionaries(st.sampled_from(["vae.pth", "t5.pth", "a/shard.bin", "a/cfg.json2", "README"]), st.sampled_from(CONTENTS), min_size=1, max_size=4)


class StoreMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.dir = Path(tempfile.mkdtemp(prefix="cas-sm-"))
        self.store = Store.open(self.dir / "store")
        self.tags: dict[tuple[str, str], dict[str, bytes]] = {}
        self.stack: dict[str, list[str]] = {}
        self.n = 0

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(model=st.sampled_from(MODELS), version=st.sampled_from(VERSIONS), content=files)
    def add_version(self, model, version, content):
        self.n += 1
        src = self.dir / f"src{self.n}"
        for rel, data in content.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        old = self.tags.get((model, version))
        try:
            add(self.store, src, model, version)
        except Conflict:
            assert old is not None and old != content
            return
        assert old is None or old == content
        self.tags[(model, version)] = content
        if model not in self.stack:
            self.stack[model] = [version]

    @precondition(lambda self: self.tags)
    @rule(data=st.data())
    def use_version(self, data):
        model, version = data.draw(st.sampled_from(sorted(self.tags)))
        use(self.store, model, version)
        if self.stack[model][-1] != version:  # using the current version changes nothing
            self.stack[model].append(version)

    @rule(model=st.sampled_from(MODELS))
    def rollback_model(self, model):
        stack = self.stack.get(model, [])
        try:
            s = rollback(self.store, model)
        except NotFound:
            assert len(stack) < 2
            return
        stack.pop()
        assert s.version == stack[-1]

    @precondition(lambda self: self.stack)
    @rule(data=st.data())
    def rollback_to_named(self, data):
        model = data.draw(st.sampled_from(sorted(self.stack)))
        ever = sorted({s.version for s in self.store.refs.history(model)})
        version = data.draw(st.sampled_from(ever))
        s = rollback(self.store, model, version)
        assert s.version == version
        stack = self.stack[model]
        if version in stack:  # back to it: what was above is undone
            del stack[len(stack) - stack[::-1].index(version):]
        elif stack[-1] != version:  # no longer on the stack: a switch to it
            stack.append(version)

    @rule(model=st.sampled_from(MODELS))
    def checkout_current(self, model):
        if model not in self.stack:
            return
        self.n += 1
        dest = self.dir / f"co{self.n}"
        _, _, m = self.store.load(model)
        checkout(self.store, m, dest)
        expected = self.tags[(model, self.stack[model][-1])]
        got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
        assert got == expected

    @invariant()
    def refs_match_model(self):
        if not hasattr(self, "store"):
            return
        for model, stack in self.stack.items():
            assert self.store.refs.current(model).version == stack[-1]
            log = self.store.refs.history(model)  # what `cas log` prints, oldest first
            assert log[-1].version == stack[-1]
            assert all(a.version != b.version or b.action == "rollback" for a, b in zip(log, log[1:]))
        assert {(m, v) for m in MODELS for v in self.store.refs.tags(m)} == set(self.tags)
        assert_store_consistent(self.store)


StoreMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestStoreMachine = StoreMachine.TestCase


def _no_hard_links(*args, **kwargs):
    import errno

    raise OSError(errno.EPERM, "Operation not permitted (hard links disabled by the test)")


class NoLinkStoreMachine(StoreMachine):
    """The same machine where link() fails as on some SMB and FUSE mounts: refs are published
    with renameat2(RENAME_NOREPLACE) instead (fs/atomic.py)."""

    no_renameat2 = False

    @initialize()
    def setup(self):
        import os

        from casstore.fs import atomic

        self._saved = (os.link, atomic.rename_noreplace)
        os.link = _no_hard_links
        if self.no_renameat2:  # nor renameat2: an exclusive create of the final name
            atomic.rename_noreplace = lambda src, dst: None
        super().setup()

    def teardown(self):
        import os

        from casstore.fs import atomic

        os.link, atomic.rename_noreplace = self._saved
        super().teardown()


class NoLinkNoRenameStoreMachine(NoLinkStoreMachine):
    no_renameat2 = True


for _machine in (NoLinkStoreMachine, NoLinkNoRenameStoreMachine):
    _machine.TestCase.settings = settings(
        max_examples=20, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
TestStoreMachineWithoutHardLinks = NoLinkStoreMachine.TestCase
TestStoreMachineWithoutHardLinksOrRenameat2 = NoLinkNoRenameStoreMachine.TestCase
