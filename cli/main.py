"""The `cas` command. Results go to stdout (JSON with --json); messages go to stderr.

Error classes map to exit codes in one place, ``exitcodes.py``.
"""

from __future__ import annotations

import json
import sys

import click

from . import gc_commands, project_commands, remote_commands, store_commands  # noqa: F401 - they register commands
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
        sys.exit(e.exit_code)
    except Exception as e:
        from casstore.errors import CasError

        if not isinstance(e, (CasError, OSError)):
            raise
        code = exit_code(e)
        click.echo(f"cas: error: {e}", err=True)
        if c.json:
            error = {"type": type(e).__name__, "message": str(e), "exit_code": code}
            click.echo(json.dumps({**(c.pending or {}), "ok": False, "error": error}, indent=2, sort_keys=True))
        sys.exit(code)
    _emit(c)


def _emit(c: Ctx) -> None:
    if c.json and c.pending is not None:
        click.echo(json.dumps(c.pending, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()

