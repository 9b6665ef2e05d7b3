"""Shared fixtures: a store on real disk, a `cas` runner in a real subprocess, model builders."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casstore.gc import readahead
from casstore.model.digest import hash_file
from casstore.store.objects import Store


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """No test touches the user's real store, config or hash cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("CAS_HOME", str(home / "default-store"))
    monkeypatch.setenv("CAS_HASH_CACHE", str(home / "hashes.sqlite"))
    monkeypatch.setenv("CAS_CONFIG", str(home / "config.toml"))


@contextlib.contextmanager
def isolated(base: Path):
    """``_isolated_env`` for a module-scoped fixture (which runs before any test's own)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAS_HOME", str(base / "default-store"))
        mp.setenv("CAS_HASH_CACHE", str(base / "hashes.sqlite"))
        mp.setenv("CAS_CONFIG", str(base / "config.toml"))
        yield mp


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(tmp_path / "store")


def write_safetensors(path: Path, n_tensors: int = 2, elems: int = 1024, seed: bytes = b"") -> None:
    header, off = {}, 0
    for i in range(n_tensors):
        header[f"layer{i}.weight"] = {"dtype": "F32", "shape": [elems], "data_offsets": [off, off + 4 * elems]}
        off += 4 * elems
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.write((seed + os.urandom(off))[:off])


def make_model(root: Path, files: dict[str, bytes | int]) -> Path:
    """Create files; an int value means that many random bytes."""
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(content) if isinstance(content, int) else content)
    return root


class CasRunner:
    def __init__(self, store: Path, cwd: Path) -> None:
        self.store = store
        self.cwd = cwd

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "casstore_cli.main", "--store", str(self.store), *map(str, args)]

    def __call__(self, *args: str, ok: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run(self.argv(*args), cwd=self.cwd, capture_output=True, text=True, input=input, timeout=120)
        if ok and p.returncode != 0:
            raise AssertionError(f"cas {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}")
        return p

    def json(self, *args: str, ok: bool = True) -> dict:
        p = self("--json", *args, ok=ok)
        return json.loads(p.stdout)


def publish(tmp_path: Path, src: Path, model: str, version: str, remote: Path | str, *extra: str) -> CasRunner:
    """Add ``src`` as MODEL@VERSION to a publisher's store and push it; returns the publisher."""
    pub = CasRunner(tmp_path / "pub", tmp_path)
    pub("add", src, "--name", model, "--version", version, *extra)
    pub("push", f"{model}@{version}", "--remote", remote)
    return pub


def timed(argv, **kw) -> float:
    """Seconds a command takes to run to completion (to place kill -9 inside its real work)."""
    t0 = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, **kw)
    return time.monotonic() - t0


def kill_at(argv, delay: float) -> bool:
    """Start ``argv``, SIGKILL it after ``delay`` s; True if it was still running then."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    running = p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.wait()
    return running


@pytest.fixture
def users():
    """Two real unprivileged accounts in one group (needs root, as CI has)."""
    from accounts import GROUP, USERS

    if subprocess.run(["getent", "group", GROUP], capture_output=True).returncode != 0:
        subprocess.run(["groupadd", GROUP], check=True)
    for u in USERS:
        if subprocess.run(["id", u], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-M", "-N", "-g", GROUP, u], check=True)
    return USERS




@pytest.fixture
def cas(tmp_path) -> CasRunner:
    return CasRunner(tmp_path / "store", tmp_path)


def assert_store_consistent(store: Store) -> None:
    """Invariants 2-4 of docs/architecture.md: every tag and current pointer resolves to a complete
    manifest whose blobs all hash to their names; leftovers exist only as temp files."""
    for model in store.refs.models():
        targets = dict(store.refs.tags(model))
        cur = store.refs.current(model)
        if cur is not None:
            targets["<current>"] = cur.manifest
            assert store.refs.get_tag(model, cur.version) in (None, cur.manifest)
        for label, d in targets.items():
            m = store.get_manifest(d)
            for e in m.entries:
                p = store.blob_path(e.digest)
                assert p.exists(), f"{model} {label}: blob {e.digest} of {e.path} missing"
    for d, p in store.iter_blobs():
        got, _ = hash_file(p)
        assert got == d, f"blob {p} holds other bytes"
    for sub in ("blobs", "manifests"):
        for dirpath, _, names in os.walk(store.root / sub):
            for n in names:
                assert "tmp" not in n, f"temp file under a final name: {dirpath}/{n}"


_HELPER_RECORDS = readahead.Readahead.records  # the real one, whatever a test patched in since


def taken(monkeypatch, helpers: set[int] | None = None) -> list[str]:
    """The manifests GC's readahead helpers (gc/readahead.py) handed over, as they were taken;
    ``helpers``: filled with each helper's id."""
    seen: list[str] = []

    def records(self):
        if helpers is not None:
            helpers.add(id(self))
        for mh, named in _HELPER_RECORDS(self):
            seen.append(mh)
            yield mh, named

    monkeypatch.setattr(readahead.Readahead, "records", records)
    return seen
