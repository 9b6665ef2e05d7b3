"""The `cas` command. Results go to stdout (JSON with --json); messages go to stderr.

Error classes map to exit codes in one place, ``exitcodes.py``.
"""

from __future__ import annotations

import errno
import json
import sys

import click

from . import exchange_commands, gc_commands, project_commands, remote_commands, store_commands  # noqa: F401 - they register commands
from .app import Ctx, cli
from .exitcodes import exit_code


def main(argv: list[str] | None = None) -> None:
    c = Ctx()
    try:
        cli.main(args=argv, prog_name="cas", standalone_mode=False, obj=c)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except (click.exceptions.Exit, SystemExit) as e:  # a command that chose its exit status
        _emit(c)
        sys.exit(e.exit_code if isinstance(e, click.exceptions.Exit) else e.code)
    except click.ClickException as e:
        e.show()
        if c.json or "--json" in (argv if argv is not None else sys.argv[1:]):
            _error_json(c, type(e).__name__, e.format_message(), e.exit_code)
        sys.exit(e.exit_code)
    except Exception as e:
        from casstore.errors import CasError

        if not isinstance(e, (CasError, OSError)):
            if c.json:  # a bug: the traceback goes to stderr, and stdout still holds one document
                _error_json(c, "InternalError", f"{type(e).__name__}: {e}", 1)
            raise
        code = exit_code(e)
        if isinstance(e, OSError) and e.errno == errno.EROFS:
            e = CasError(f"{e.filename or 'the store'} is on a read-only filesystem: this command needs to write "
                         f"there; reading commands (path, show, list, verify --fast, fetch of what is here) work, "
                         f"or name a writable store with --store or CAS_HOME")
        click.echo(f"cas: error: {e}", err=True)
        if c.json:
            _error_json(c, type(e).__name__, str(e), code)
        sys.exit(code)
    _emit(c)


def _error_json(c: Ctx, kind: str, message: str, code: int) -> None:
    error = {"type": kind, "message": message, "exit_code": code}
    click.echo(json.dumps({**(c.pending or {}), "ok": False, "error": error}, indent=2, sort_keys=True))


def _emit(c: Ctx) -> None:
    if c.json and c.pending is not None:
        click.echo(json.dumps(c.pending, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()

