"""The `cas` click group and what its commands share: the context, output, options, helpers.

Commands live by area in ``store_commands``, ``remote_commands``, ``project_commands`` and
``gc_commands``; ``main`` registers them and maps errors to exit codes. The library is imported
inside each command so that `cas --help` stays fast.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import click

class Ctx:
    def __init__(self, store: str | None = None, as_json: bool = False, quiet: bool = False, verbose: int = 0) -> None:
        self.store_arg = store
        self.json = as_json
        self.quiet = quiet
        self.verbose = verbose
        self._store = None
        self.pending: dict | None = None

    def store(self, create: bool = True):
        if self._store is None:
            from casstore.config import store_path
            from casstore.store import Store

            self._store = Store.open(store_path(self.store_arg), create=create)
        return self._store

    def info(self, msg: str) -> None:
        if not self.quiet:
            click.echo(msg, err=True)

    def warn(self, msg: str) -> None:
        click.echo(f"warning: {msg}", err=True)

    def result(self, data: dict, human: str | None = None) -> None:
        """The command's result: printed now for people; with --json kept until the command ends,
        so stdout carries exactly one JSON document whatever happens (``main`` prints it, with
        the error merged in if the command then fails)."""
        if self.json:
            self.pending = data
        elif human is not None:
            click.echo(human)


pass_ctx = click.make_pass_decorator(Ctx)


def _size(n: int) -> str:
    from casstore.sizes import format_size

    return format_size(n)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ref(text: str):
    from casstore.names import Ref

    return Ref.parse(text)


def _remote_options(f):
    f = click.option("--remote", "-r", "remote_name", metavar="NAME|URL", help="Remote to use (default: all configured, default first).")(f)
    return click.option("--insecure", is_flag=True, help="Allow plain HTTP to a host that is not loopback.")(f)


def _run(coro_fn, remotes):
    import asyncio

    async def go():
        try:
            return await coro_fn()
        finally:
            for r in remotes:
                await r.close()

    return asyncio.run(go())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", metavar="PATH", help="Store directory (default: $CAS_HOME, the config file, or the user cache dir).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.option("-v", "--verbose", count=True, help="More detail on stderr.")
@click.version_option(package_name="casstore")
@click.pass_context
def cli(ctx: click.Context, store: str | None, as_json: bool, quiet: bool, verbose: int) -> None:
    """casstore: a content-addressed store for large model weights."""
    c = ctx.ensure_object(Ctx)
    c.store_arg, c.json, c.quiet, c.verbose = store, as_json, quiet, verbose


def _policy(max_size, retention_days, keep_last, grace):
    from casstore.config import load_user_config
    from casstore.gc import DEFAULT_GRACE, Policy
    from casstore.sizes import parse_size

    cfg = load_user_config().get("gc", {})
    ms = max_size if max_size is not None else cfg.get("max_size")
    return Policy(
        max_size=parse_size(str(ms)) if ms is not None else None,
        retention_days=float(retention_days if retention_days is not None else cfg.get("retention_days", 30)),
        keep_last=int(keep_last if keep_last is not None else cfg.get("keep_last", 2)),
        grace=float(grace if grace is not None else cfg.get("grace", DEFAULT_GRACE)),
    )



class _progress:
    """A rich progress bar on a TTY; nothing otherwise (or with -q / --json)."""

    def __init__(self, c: Ctx, label: str) -> None:
        self.on = not (c.quiet or c.json) and sys.stderr.isatty()
        self.label = label

    def __enter__(self):
        if not self.on:
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        self.bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task(self.label, total=None)
        return lambda done, total: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.on:
            self.bar.__exit__(*exc)


