"""The `relman` command's entry point: runs `relman.cli.app` (the commands live in relman/cli/)."""

from __future__ import annotations

import os
import sys

import typer

from relman.cli import app
from relman.errors import RelmanError

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, flush, and leave with os._exit (sdk-python#300)."""
    code = 0
    try:
        app(args=argv, prog_name="relman", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except RelmanError as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
