"""The `cas` click group and what its commands share: the context, output, options, helpers.

Commands live by area in ``store_commands``, ``remote_commands``, ``project_commands`` and
``gc_commands``; ``main`` registers them and maps errors to exit codes. The library is imported
inside each command so that `cas --help` stays fast.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import click

CREATORS = {"add", "import", "fetch", "update", "sync", "lock", "init"}
PROGRESS_MODES = ("auto", "bar", "plain", "json", "none")


class Ctx:
    def __init__(self, store: str | None = None, as_json: bool = False, quiet: bool = False, verbose: int = 0) -> None:
        self.store_arg = store
        self.json = as_json
        self.quiet = quiet
        self.verbose = verbose
        self._store = None
        self.pending: dict | None = None
        self.offline = False
        self.progress: str | None = None  # --progress; None: CAS_PROGRESS, else auto

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

            handler = _Stderr()
            handler.setFormatter(Plain())
        handler.rich = rich  # type: ignore[attr-defined]
        log.handlers[:] = [handler]

    def progress_mode(self) -> str:
        """--progress, else CAS_PROGRESS, else auto (a bad CAS_PROGRESS is an error naming it);
        read once, as every message asks."""
        if self.progress is None:
            from casstore.config import env
            from casstore.model import values

            self.progress = env("CAS_PROGRESS", values.choice(*PROGRESS_MODES), "auto")
        return self.progress

    def info(self, msg: str) -> None:
        if not self.quiet:
            self._say("info", msg, msg)

    def warn(self, msg: str) -> None:
        if not self.quiet:  # -q: errors only
            self._say("warning", msg, f"warning: {msg}")

    def _say(self, level: str, msg: str, line: str) -> None:
        if self.progress_mode() == "json":  # stderr is then all NDJSON events
            import json
            import time

            click.echo(json.dumps({"event": "message", "level": level, "message": msg, "time": round(time.time(), 3)}),
                       err=True)
        else:
            click.echo(line, err=True)

    def result(self, data: dict | Callable[[], dict], human: str | None = None) -> None:
        """The command's result: printed now for people; with --json kept until the command ends,
        so stdout carries exactly one JSON document whatever happens (``main`` prints it, with
        the error merged in if the command then fails). ``data`` may be a function that makes
        it, for a result that is costly to build and not wanted without --json."""
        if self.json:
            self.pending = data() if callable(data) else data
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


def _select_options(f):
    f = click.option("--exclude", "exclude", multiple=True, metavar="GLOB",
                     help="Leave out files matching GLOB (repeatable).")(f)
    return click.option("--include", "include", multiple=True, metavar="GLOB",
                        help="Only files matching GLOB: a name (*.json), a path (low_noise/*) or a folder "
                             "(low_noise/); repeatable. The store holds a partial version.")(f)


def _selection(include, exclude):
    from casstore.model.globs import Selection

    return Selection.of(include, exclude)


def _run(coro_fn, remotes):
    import asyncio

    from casstore.transfer.memory import limit_arenas

    limit_arenas()  # before the transfer's threads: bounds its resident memory (transfer/memory.py)

    out = []

    async def go() -> None:  # returns nothing: see below
        try:
            out.append(await coro_fn())
        finally:
            for r in remotes:
                await r.close()

    # Python 3.11's asyncio.run, restoring the SIGINT handler, formats a repr of its task and so
    # of the task's result (signal._int_to_enum): 1.2 s for a set of 900k digests, measured.
    asyncio.run(go())
    return out[0]


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
    click.Option(["--progress"], type=click.Choice(PROGRESS_MODES), expose_value=False, hidden=True,
                 callback=_global("progress")),
]


class CasCommand(click.Command):
    """A command whose "no such option" names what the user most likely meant: `--version` is
    a version (`--to V`, or `M@V`), never `--json` or `--verbose` (click's spelling guess)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            if e.option_name not in ("--version", "-V"):
                raise
            opts = {o for p in self.params for o in getattr(p, "opts", ())}
            meant = "--to VERSION" if "--to" in opts else "MODEL@VERSION"
            raise click.UsageError(f"no option {e.option_name} for `{ctx.command_path}`: a version is given as {meant} "
                                   "(`cas --version` prints casstore's own)", ctx) from None


class CasGroup(click.Group):
    """A group whose commands (and subgroups' commands) also take the global options."""

    group_class = type
    command_class = CasCommand

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
@click.option("--progress", "progress", type=click.Choice(PROGRESS_MODES), default=None,
              help="auto (a bar on a terminal, a line every 5 s otherwise), bar, plain, json (NDJSON events "
                   "on stderr), none; also CAS_PROGRESS.")
@click.version_option(package_name="casstore")
@click.pass_context
def cli(ctx: click.Context, store: str | None, as_json: bool, quiet: bool, verbose: int, offline: bool,
        progress: str | None) -> None:
    """casstore: a content-addressed store for large model weights.

    Its options are accepted after the command as well (`cas list --json`).
    """
    from casstore.config import offline as env_offline

    c = ctx.ensure_object(Ctx)
    c.store_arg, c.json, c.quiet, c.verbose, c.progress = store, as_json, quiet, verbose, progress
    c.offline = env_offline(offline or None)  # CAS_OFFLINE: a bad value is an error, with --json too
    c.configure_logging()


def _policy(max_size, retention_days, keep_last, grace):
    from casstore.gc import Policy

    return Policy.from_config(max_size=max_size, retention_days=retention_days, keep_last=keep_last, grace=grace)


class _Stderr(logging.StreamHandler):
    """A log handler writing to ``sys.stderr`` as it is at each record (a plain StreamHandler
    keeps the stream it was made with): under a progress bar that is rich's proxy."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _progress:
    """Progress of a long command on stderr (bytes, in binary units like every other size casstore
    prints). ``--progress`` (or ``CAS_PROGRESS``): ``bar`` a rich bar; ``plain`` a line every
    ``CAS_PROGRESS_INTERVAL`` seconds (5), and one at the end if any came before, for CI logs; ``json`` NDJSON events
    (start, progress at most each second, every casstore log record: retries, mirrors demoted,
    files verified, and end; the command's own messages become events too); ``none``. ``auto``: a bar on a terminal, plain lines otherwise,
    nothing with -q or --json. NO_COLOR only takes the colour away (rich honours it)."""

    def __init__(self, c: Ctx, label: str) -> None:
        from casstore.config import env
        from casstore.model import values

        mode = c.progress_mode()
        if mode == "auto":
            mode = "none" if (c.quiet or c.json) else "bar" if sys.stderr.isatty() else "plain"
        self.mode, self.label = mode, label
        self.interval = env("CAS_PROGRESS_INTERVAL", values.seconds, 5.0) if mode == "plain" else 1.0
        self.on = mode != "none"
        self.printed = False  # plain: a command over before its first interval says nothing more

    def __enter__(self):
        if self.mode == "bar":
            return self._bar()
        if self.mode in ("plain", "json"):
            import time

            self.t0 = self.last = time.monotonic()
            self.done, self.total = 0, None
            if self.mode == "json":
                self._event("start")
                self._hook_log()
            return self._tick
        return None

    def _bar(self):
        from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, TimeRemainingColumn
        from rich.text import Text

        from casstore.model.sizes import format_size

        class Speed(ProgressColumn):
            def render(self, task) -> Text:
                return Text(f"{format_size(int(task.speed))}/s" if task.speed else "", style="progress.data.speed")

        from rich.console import Console

        # On stderr, like every human line; rich redirects sys.stderr meanwhile, so a warning
        # (logging's _Stderr, click.echo) prints above the bar instead of after its last frame.
        self.bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(binary_units=True),
                            Speed(), TimeRemainingColumn(), transient=True, console=Console(stderr=True))
        self.bar.__enter__()
        self.task = self.bar.add_task(self.label, total=None)
        return lambda done, total: self.bar.update(self.task, completed=done, total=total)

    def _tick(self, done: int, total: int | None) -> None:
        import time

        self.done, self.total = done, total
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.printed = True
            self._report("progress")

    def _report(self, event: str, **extra) -> None:
        import time

        elapsed = time.monotonic() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.mode == "json":
            self._event(event, done=self.done, total=self.total, rate=round(rate), elapsed=round(elapsed, 3), **extra)
            return
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        of = f" of {_size(self.total)}" if self.total else ""
        state = {"progress": "", "end": ", done", "failed": ", failed"}[event]
        click.echo(f"{self.label}: {_size(self.done)}{of}{pct}, {_size(int(rate))}/s, {elapsed:.0f} s{state}", err=True)

    def _event(self, event: str, **fields) -> None:
        import json
        import time

        click.echo(json.dumps({"event": event, "what": self.label, "time": round(time.time(), 3), **fields}), err=True)

    def _hook_log(self) -> None:
        import logging

        outer = self

        class Events(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                outer._event("log", level=record.levelname.lower(), message=record.getMessage())

        self.log = logging.getLogger("casstore")
        self.saved = (self.log.handlers[:], self.log.level)
        self.log.handlers[:] = [Events()]
        self.log.setLevel(min(self.log.level, logging.INFO))

    def __exit__(self, exc_type, exc, tb):
        if self.mode == "bar":
            self.bar.__exit__(exc_type, exc, tb)
        elif self.mode in ("plain", "json"):
            if self.mode == "json":
                self.log.handlers[:], level = self.saved
                self.log.setLevel(level)
            if self.mode == "json" or self.printed:
                self._report("end" if exc_type is None else "failed",
                             **({"error": str(exc)} if exc is not None and self.mode == "json" else {}))


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL: `eval "$(cas completion bash)"` in ~/.bashrc."""
    from click.shell_completion import get_completion_class

    comp = get_completion_class(shell)
    assert comp is not None  # click knows every choice above
    click.echo(comp(cli, {}, "cas", "_CAS_COMPLETE").source())
