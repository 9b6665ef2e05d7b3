"""Real unprivileged accounts for tests that must not run only as root (CI runs as root; root
bypasses permission bits, so such tests assert on what was written, not on EACCES)."""

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

USERS, GROUP = ("castest1", "castest2"), "castestgrp"


def pythonpath(base: Path) -> Path:
    """The project and the few packages `cas add/gc/verify` import, where any user can read them
    (this interpreter's site-packages may sit under root's private home)."""
    import blake3
    import certifi
    import click
    import msgpack
    import packaging
    import platformdirs

    lib = base / "lib"
    root = Path(__file__).resolve().parent.parent
    shutil.copytree(root / "casstore", lib / "casstore")
    shutil.copytree(root / "cli", lib / "casstore_cli")
    for mod in (certifi, click, msgpack, packaging, platformdirs):
        shutil.copytree(Path(mod.__file__).parent, lib / mod.__name__)
    b3 = Path(blake3.__file__)
    if b3.name == "__init__.py":
        shutil.copytree(b3.parent, lib / "blake3")
    else:
        shutil.copy(b3, lib / b3.name)
    return lib


def system_python() -> str:
    python = shutil.which("python3.11", path="/usr/bin") or "/usr/bin/python3"
    if not os.path.exists(python):
        pytest.fail("a system python3 that other users can run is needed")
    return python


def run_as(user: str, lib: Path, home: Path, *args, cwd=None) -> subprocess.CompletedProcess:
    """`cas ARGS` as ``user`` (group GROUP), with only ``lib`` on its Python path."""
    home.mkdir(exist_ok=True)
    shutil.chown(home, user, GROUP)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(lib), "CAS_HASH_CACHE": str(home / "hc"),
           "CAS_CONFIG": str(home / "config.toml")}
    return subprocess.run(["setpriv", f"--reuid={user}", f"--regid={GROUP}", "--init-groups", system_python(),
                           "-m", "casstore_cli.main", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd or home, timeout=120)


def open_to_all(root: Path) -> None:
    """Directories 0755 and files 0644 below ``root``: readable by every account."""
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)


@contextlib.contextmanager
def readable_base(prefix: str):
    """A temp directory every account can read (removed afterwards), and ``lib`` in it: the
    project and what `cas` imports. (pytest's tmp_path sits under root's private directories.)"""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        os.chmod(base, 0o755)
        lib = pythonpath(base)
        open_to_all(base)
        yield base, lib
    finally:
        shutil.rmtree(base, ignore_errors=True)


def give_to(user: str, root: Path) -> None:
    """Make ``user`` (group GROUP) own everything below ``root``, links included (not followed)."""
    import grp
    import pwd

    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(GROUP).gr_gid
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [dirpath, *(os.path.join(dirpath, f) for f in dirnames + filenames)]:
            os.chown(n, uid, gid, follow_symlinks=False)
