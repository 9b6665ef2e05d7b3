"""The core without the APIs only Linux has: no `fcntl` module (Windows has none), no
`os.copy_file_range` (macOS). Run in a real `cas` process with both taken away before
casstore is imported: add, path, checkout, verify, push and fetch still work (by read and write
instead of reflinks and kernel copies)."""

from __future__ import annotations

import subprocess
import sys

from conftest import make_model

PRELUDE = """
import os, sys, runpy
del os.copy_file_range
sys.modules["fcntl"] = None  # `import fcntl` raises ImportError
sys.argv = ["cas", *sys.argv[1:]]
runpy.run_module("casstore_cli.main", run_name="__main__")
"""


def cas(store, *args):
    p = subprocess.run([sys.executable, "-c", PRELUDE, "--store", str(store), *map(str, args)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_the_core_runs_without_linux_only_apis(tmp_path):
    src = make_model(tmp_path / "src", {"w.bin": 3 << 20, "config.json": b"{}", "sub/x.txt": b"x"})
    cas(tmp_path / "s", "add", src, "--name", "m", "--version", "1")
    view = cas(tmp_path / "s", "path", "m@1").strip()
    assert open(f"{view}/w.bin", "rb").read() == (src / "w.bin").read_bytes()
    cas(tmp_path / "s", "checkout", "m@1", tmp_path / "co", "--link", "copy")
    assert (tmp_path / "co" / "w.bin").read_bytes() == (src / "w.bin").read_bytes()
    cas(tmp_path / "s", "verify")
    cas(tmp_path / "s", "push", "m@1", "--remote", tmp_path / "remote")
    cas(tmp_path / "t", "fetch", "m@1", "--remote", tmp_path / "remote")
    assert open(cas(tmp_path / "t", "path", "m@1").strip() + "/sub/x.txt", "rb").read() == b"x"
