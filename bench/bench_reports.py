"""Time and peak memory of the commands that read a whole store or remote, `cas list`, `cas du`,
`cas gc --dry-run`, `cas gc --remote` (a dry run) and `cas verify`, at 100k to 1M blobs, against the same
commands of an earlier commit.

    python bench/bench_reports.py [--blobs 100000,1000000] [--repeat 3] [--before REV] [--store-per-code] [--cold] [--no-caches]
                                  [--commands "list,du,du [in use],gc --dry-run,gc --dry-run --retention-days 1000,gc --remote,verify"] [--work DIR] [--out JSON]

The stores are casstore/testing/synthetic.py's (64-512-byte blobs, one version of 100 files per
100 blobs, 10 % unreferenced, every version last used 90 days ago: "expired", so the default
policy would free all but each model's current version and a plan stats every blob it would
free). The remote is a directory remote publishing every version of the store, its objects hard
links to the store's (``synthetic.as_directory_remote``). Whole processes, each the child of a small Python process that reports its peak RSS
(``ru_maxrss``). ``--before REV``: a git worktree of REV runs the same commands, alternately with
this checkout's, in a rotating order; reported per command: median seconds and MiB (min-max) of
each, and per round before's time / now's time. ``--cold``: the page cache is dropped before each
run (needs root). `du` is run once untimed first: its first run on a store writes its caches;
``--no-caches`` removes them before each run instead (a first report). ``--store-per-code``: each
code runs on its own hard-linked copy of the store, for codes whose cache formats differ.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import cas_command, speedup, spread, timed  # noqa: E402

from casstore.testing.synthetic import as_directory_remote, many_blobs  # noqa: E402

# "--retention-days 1000": the store in use (every version within its retention period), so the
# plan frees only the unreferenced 10 %. `du` has no such option: "[in use]" runs it with a user
# config file that sets gc.retention_days = 1000.
IN_USE = "[in use]"
COMMANDS = (("list",), ("du",), ("du", IN_USE), ("gc", "--dry-run"), ("gc", "--dry-run", "--retention-days", "1000"),
            ("gc", "--remote", "{remote}"), ("verify",))


def label(template: tuple[str, ...]) -> str:
    return " ".join(template).replace(" {remote}", "")


def before_command(rev: str, work: Path) -> tuple[list[str], Path]:
    """``cas`` of commit ``rev``: its tree checked out beside this one, importable under the
    installed names (``cli/`` is ``casstore_cli``) from a directory of two links. Run with that
    directory as the working directory, it comes first on ``sys.path``."""
    repo = Path(__file__).resolve().parent.parent
    tree = work / f"tree-{rev}"
    if not tree.is_dir():
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
    shim = work / f"import-{rev}"
    shim.mkdir(exist_ok=True)
    for name, target in (("casstore", tree / "casstore"), ("casstore_cli", tree / "cli")):
        if not (shim / name).exists():
            (shim / name).symlink_to(target)
    return [sys.executable, "-m", "casstore_cli.main"], shim


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blobs", default="100000,1000000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", help="a commit to compare with")
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--no-caches", action="store_true", help="remove the store's cache/ before each run (a first report)")
    ap.add_argument("--store-per-code", action="store_true",
                    help="run each code on its own hard-linked copy of the store (codes whose cache formats differ "
                         "would otherwise throw away each other's caches)")
    ap.add_argument("--commands", default=",".join(label(c) for c in COMMANDS), help="which of them, by label")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-reports."))
    work.mkdir(parents=True, exist_ok=True)
    codes = {"now": (cas_command(), Path.cwd())}
    if a.before:
        codes["before"] = before_command(a.before, work)
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "before": a.before,
                    "cold": a.cold, "no_caches": a.no_caches, "repeat": a.repeat, "stores": {}}
    for n in (int(x) for x in a.blobs.split(",") if x):
        root = work / f"store-{n}"
        remote = work / f"remote-{n}"
        if not (root / "blobs").is_dir():
            many_blobs(root, n)
        if not (remote / "index").is_dir():
            as_directory_remote(root, remote)
        roots = {code: root for code in codes}
        if a.store_per_code:
            for code in codes:
                roots[code] = work / f"store-{n}-{code}"
                if not (roots[code] / "blobs").is_dir():
                    # the caches are replaced by rename, never written in place: each copy's stay its own
                    subprocess.run(["cp", "-al", str(root), str(roots[code])], check=True)
        rows: dict = {}
        for template in (c for c in COMMANDS if label(c) in a.commands.split(",")):
            name = label(template)
            command = [part.format(remote=remote) for part in template if part != IN_USE]
            env = None
            if IN_USE in template:
                config = work / "in-use.toml"
                config.write_text("[gc]\nretention_days = 1000\n")
                env = {**os.environ, "CAS_CONFIG": str(config)}
            runs: dict[str, list[tuple[float, float]]] = {code: [] for code in codes}
            for code, (cas, cwd) in codes.items():  # warm-up: a first `du` writes its caches
                timed([*cas, "--store", str(roots[code]), *command], cwd=cwd, env=env)
            names = list(codes)
            for rnd in range(a.repeat):
                for code in names[rnd % len(names):] + names[:rnd % len(names)]:
                    cas, cwd = codes[code]
                    if a.cold:
                        drop_caches()
                    if a.no_caches:
                        shutil.rmtree(roots[code] / "cache", ignore_errors=True)
                    runs[code].append(timed([*cas, "--store", str(roots[code]), *command], cwd=cwd, env=env))
                    print(f"{n} blobs, round {rnd + 1}, {code} cas {name}: {runs[code][-1][0]:.2f} s, "
                          f"{runs[code][-1][1]:.0f} MiB", file=sys.stderr)
            row = {code: {"seconds": spread([s for s, _ in r]), "peak_rss_mib": spread([m for _, m in r])}
                   for code, r in runs.items()}
            if "before" in runs:
                row["speedup"] = speedup([s for s, _ in runs["before"]], [s for s, _ in runs["now"]])
            rows[name] = row
        result["stores"][n] = rows
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
