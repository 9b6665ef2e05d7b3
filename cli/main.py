"""The `cas` command. Results go to stdout (JSON with --json); messages go to stderr.

Error classes map to exit codes in one place, ``exitcodes.py``.
"""

from __future__ import annotations

import json
import sys

import click

from . import gc_commands, project_commands, remote_commands, store_commands  # noqa: F401 - they register commands
from .app import cli
from .exitcodes import exit_code

def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="cas", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except Exception as e:
        from casstore.errors import CasError

        if not isinstance(e, (CasError, OSError)):
            raise
        code = exit_code(e)
        click.echo(f"cas: error: {e}", err=True)
        if "--json" in (argv if argv is not None else sys.argv[1:]):
            click.echo(json.dumps({"ok": False, "error": {"type": type(e).__name__, "message": str(e), "exit_code": code}}))
        sys.exit(code)


if __name__ == "__main__":
    main()

