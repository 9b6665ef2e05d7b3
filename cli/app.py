"""The `cas` click group and what its commands share: the context, output, options, helpers.

Commands live by area in ``store_commands``, ``remote_commands``, ``project_commands`` and
``gc_commands``; ``main`` registers them and maps errors to exit codes. The library is imported
inside each command so that `cas --help` stays fast.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

CREATORS = {"add", "import", "fetch", "update", "sync", "lock", "init"}


class Ctx:
    def __init__(self, store: str | None = None, as_json: bool = False, quiet: bool = False, verbose: int = 0) -> None:
        self.store_arg = store
        self.json = as_json
        self.quiet = quiet
        self.verbose = verbose
        self._store = None
        self.pending: dict | None = None
        self.offline = False

    def store(self):
        """The store; only commands that put something in it create it (reading commands on a
        path that holds no store say so, rather than leave an empty store behind)."""
        if self._store is None:
            from casstore.config import store_path
            from casstore.store.objects import Store

            create = click.get_current_context().command_path.split(" ", 1)[-1] in CREATORS
            self._store = Store.open(store_path(self.store_arg), create=create)
        return self._store

    def configure_logging(self) -> None:
        """-v: per-file detail and what casstore decides; -vv: every request too. rich's handler
        only when asked for detail on a terminal (so plain runs do not import rich); otherwise
        one plain line per warning."""
        import logging

        log = logging.getLogger("casstore")
        log.setLevel(logging.DEBUG if self.verbose >= 2 else logging.INFO if self.verbose else logging.WARNING)
        log.propagate = False
        rich = bool(self.verbose) and sys.stderr.isatty()
        if log.handlers and getattr(log.handlers[0], "rich", None) == rich:
            return  # called again (a -v after the command) with nothing to change
        if rich:
            from rich.console import Console
            from rich.logging import RichHandler

            handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False)
        else:
            class Plain(logging.Formatter):
                def format(self, record: logging.LogRecord) -> str:
                    return f"{record.levelname.lower()}: {record.getMessage()}"

            handler = logging.StreamHandler()
            handler.setFormatter(Plain())
        handler.rich = rich  # type: ignore[attr-defined]
        log.handlers[:] = [handler]

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
    from casstore.model.sizes import format_size

    return format_size(n)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ref(text: str):
    from casstore.model.names import Ref

    return Ref.parse(text)


def _remote_options(f):
    f = click.option("--remote", "-r", "remote_name", metavar="NAME|URL", help="Remote to use (default: all configured, default first).")(f)
    return click.option("--insecure", is_flag=True, help="Allow plain HTTP to a host that is not loopback.")(f)


def _delta_option(f):
    return click.option("--delta", type=click.Choice(["auto", "never"]), default=None,
                        help="auto (default, or $CAS_DELTA): build changed large files from local chunks and fetch "
                             "only the rest; never: always download whole files.")(f)


def _run(coro_fn, remotes):
    import asyncio

    from casstore.transfer.memory import limit_arenas

    limit_arenas()  # before the transfer's threads: bounds its resident memory (transfer/memory.py)

    async def go():
        try:
            return await coro_fn()
        finally:
            for r in remotes:
                await r.close()

    return asyncio.run(go())


def _global(attr: str, combine=None, then=None):
    def callback(ctx: click.Context, param: click.Parameter, value):
        c = ctx.find_object(Ctx)
        if c is not None and value not in (None, False, 0):
            setattr(c, attr, combine(getattr(c, attr), value) if combine else value)
            if then is not None:
                then(c)

    return callback


# The group's options, accepted after the subcommand too (`cas list --json`). Made once and shared
# by every command: an Option holds no per-command state, and `cas` starts faster.
_GLOBAL_OPTIONS = [
    click.Option(["--store"], metavar="PATH", expose_value=False, hidden=True, callback=_global("store_arg")),
    click.Option(["--json"], is_flag=True, expose_value=False, hidden=True, callback=_global("json")),
    click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, hidden=True, callback=_global("quiet")),
    click.Option(["-v", "--verbose"], count=True, expose_value=False, hidden=True,
                 callback=_global("verbose", lambda a, b: a + b, then=Ctx.configure_logging)),
    click.Option(["--offline"], is_flag=True, expose_value=False, hidden=True, callback=_global("offline")),
]


class CasGroup(click.Group):
    """A group whose commands (and subgroups' commands) also take the global options."""

    group_class = type

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not isinstance(cmd, click.Group):
            taken = {o for p in cmd.params for o in getattr(p, "opts", ())}
            cmd.params.extend(o for o in _GLOBAL_OPTIONS if not set(o.opts) & taken)
        super().add_command(cmd, name)


@click.group(cls=CasGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", metavar="PATH", help="Store directory (default: $CAS_HOME, the config file, or the user cache dir).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv: debug).")
@click.option("--offline", is_flag=True, help="Never contact a remote (also CAS_OFFLINE=1).")
@click.version_option(package_name="casstore")
@click.pass_context
def cli(ctx: click.Context, store: str | None, as_json: bool, quiet: bool, verbose: int, offline: bool) -> None:
    """casstore: a content-addressed store for large model weights.

    Its options are accepted after the command as well (`cas list --json`).
    """
    from casstore.config import offline as env_offline

    c = ctx.ensure_object(Ctx)
    c.store_arg, c.json, c.quiet, c.verbose = store, as_json, quiet, verbose
    c.offline = env_offline(offline or None)  # CAS_OFFLINE: a bad value is an error, with --json too
    c.configure_logging()


def _policy(max_size, retention_days, keep_last, grace):
    from casstore.gc import Policy

    return Policy.from_config(max_size=max_size, retention_days=retention_days, keep_last=keep_last, grace=grace)


class _progress:
    """A rich progress bar on a TTY (bytes, in binary units like every other size casstore
    prints); nothing with -q, --json, NO_COLOR or when stderr is not a terminal."""

    def __init__(self, c: Ctx, label: str) -> None:
        import os

        self.on = not (c.quiet or c.json or os.environ.get("NO_COLOR")) and sys.stderr.isatty()
        self.label = label

    def __enter__(self):
        if not self.on:
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, TimeRemainingColumn
        from rich.text import Text

        from casstore.model.sizes import format_size

        class Speed(ProgressColumn):
            def render(self, task) -> Text:
                return Text(f"{format_size(int(task.speed))}/s" if task.speed else "", style="progress.data.speed")

        self.bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(binary_units=True),
                            Speed(), TimeRemainingColumn(), transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task(self.label, total=None)
        return lambda done, total: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.on:
            self.bar.__exit__(*exc)




@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL: `eval "$(cas completion bash)"` in ~/.bashrc."""
    from click.shell_completion import get_completion_class

    comp = get_completion_class(shell)
    assert comp is not None  # click knows every choice above
    click.echo(comp(cli, {}, "cas", "_CAS_COMPLETE").source())
