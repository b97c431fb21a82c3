"""The `imds-replay` command: parses options, calls the library, prints.

The typer app and the helpers every command shares live in `common`; the commands live in one
module per concern (dataset, fleet, serving, run, recording, stats), registered on import
below. Heavy imports (pyarrow, aiohttp, pandas) happen inside commands so `--help` stays fast.

May import: everything (it is the top layer, beside replay.testing).
"""

from __future__ import annotations

# Registering the commands, in the order `--help` lists them.
from replay.cli import dataset, fleet, recording, run, serving, stats  # noqa: F401
from replay.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the console script."""
    app()
