"""Compare-and-swap where link() is missing (some SMB and FUSE mounts): real `cas` processes with
an LD_PRELOAD shim that makes link(2) fail with EPERM and every rename slow (so two writers
overlap), with and without renameat2. Before, the fallback was check-then-rename: two
`cas use --expect` both succeeded and a history record was overwritten (5 of 12 rounds)."""

import json
import os
import shutil
import subprocess

import pytest

from casstore.store.objects import Store

from conftest import CasRunner, make_model

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static void slow(void) { const char *d = getenv("SHIM_RENAME_DELAY_US"); if (d) usleep(atoi(d)); }
int link(const char *a, const char *b) { (void)a; (void)b; errno = EPERM; return -1; }
int linkat(int a, const char *b, int c, const char *d, int e) {
    (void)a; (void)b; (void)c; (void)d; (void)e; errno = EPERM; return -1; }
int rename(const char *a, const char *b) {
    static int (*real)(const char *, const char *);
    if (!real) real = dlsym(RTLD_NEXT, "rename");
    slow(); return real(a, b); }
int renameat(int a, const char *b, int c, const char *d) {
    static int (*real)(int, const char *, int, const char *);
    if (!real) real = dlsym(RTLD_NEXT, "renameat");
    slow(); return real(a, b, c, d); }
int renameat2(int a, const char *b, int c, const char *d, unsigned f) {
    static int (*real)(int, const char *, int, const char *, unsigned);
    if (getenv("SHIM_NO_RENAMEAT2")) { errno = EINVAL; return -1; }
    if (!real) real = dlsym(RTLD_NEXT, "renameat2");
    slow(); return real(a, b, c, d, f); }
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    d = tmp_path_factory.mktemp("shim")
    (d / "nolink.c").write_text(SHIM)
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "a C compiler is needed to build the link() shim"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(d / "nolink.so"), str(d / "nolink.c"), "-ldl"],
                   check=True, capture_output=True)
    return d / "nolink.so"


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "exclusive-create"])
def test_two_switches_with_expect_never_both_win(tmp_path, shim, renameat2):
    env = {**os.environ, "LD_PRELOAD": str(shim), "SHIM_RENAME_DELAY_US": "300000"}
    if not renameat2:
        env["SHIM_NO_RENAMEAT2"] = "1"
    cas = CasRunner(tmp_path / "store", tmp_path)

    def run(*args, shimmed=True):
        return subprocess.Popen(cas.argv(*args), env=env if shimmed else None, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    for v in ("1", "2", "3"):  # the versions as usual: only the switches race
        p = run("add", make_model(tmp_path / f"v{v}", {"w.bin": 1000 + int(v)}), "--name", "m", "--version", v,
                shimmed=False)
        assert p.wait() == 0, p.stderr.read()
    store = Store.open(cas.store)
    wins = 0
    for _ in range(3):  # each round a race the shim's 300 ms renames make certain
        assert run("use", "m@1").wait() == 0
        before = len(store.refs.history("m"))
        a, b = run("use", "m@2", "--expect", "1"), run("use", "m@3", "--expect", "1")
        codes = sorted([a.wait(), b.wait()])
        assert codes[0] == 0 and codes[1] != 0, (codes, a.stderr.read(), b.stderr.read())
        wins += 1
        history = store.refs.history("m")
        assert len(history) == before + 1  # one new record: none overwritten
        for older, newer in zip(history, history[1:]):
            assert newer.seq == older.seq + 1 and newer.previous == older.version
    assert wins == 3
    p = run("--json", "log", "m")
    out, err = p.communicate()
    assert p.returncode == 0 and json.loads(out), err


def test_a_tag_is_created_once_without_hard_links(tmp_path, shim):
    """`cas add` of one version with different files from two processes: one tag, the other a Conflict."""
    env = {**os.environ, "LD_PRELOAD": str(shim), "SHIM_RENAME_DELAY_US": "300000", "SHIM_NO_RENAMEAT2": "1"}
    cas = CasRunner(tmp_path / "store", tmp_path)
    Store.open(cas.store)
    procs = [subprocess.Popen(cas.argv("add", make_model(tmp_path / f"s{i}", {"w.bin": 2000 + i}), "--name", "m",
                                       "--version", "1"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    codes = sorted(p.wait() for p in procs)
    assert codes[0] == 0 and codes[1] == 5, [p.stderr.read() for p in procs]
