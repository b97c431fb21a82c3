"""What every command shares: the typer app, consoles, options, error handling, printing."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar, get_type_hints

import orjson
import typer
from rich.console import Console
from rich.table import Table
from typer.models import OptionInfo

from replay.errors import ReplayError

app = typer.Typer(
    name="imds-replay",
    help="Record Azure IMDS Scheduled Events and replay them at any speed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


class Format(StrEnum):
    table = "table"
    json = "json"


TracesDir = Annotated[
    Path | None,
    typer.Option(
        "--traces-dir",
        help="The trace dataset (default: $IMDS_REPLAY_TRACES, else the project's traces/)",
        show_default=False,
    ),
]
FormatOpt = Annotated[Format, typer.Option("--format", help="table for people, json for scripts")]


def env_var(option: str) -> str:
    """IMDS_REPLAY_<OPTION>: where an option's value may also come from (a flag wins), for
    containers and CI; pass as typer.Option(envvar=...), which --help shows."""
    return "IMDS_REPLAY_" + option.upper()


def options_from_env(fn: Callable[P, R]) -> Callable[P, R]:
    """Let every option of a command also come from IMDS_REPLAY_<OPTION> (a flag wins).

    Options that already name an environment variable (--token, --traces-dir's dataset) keep
    theirs; arguments (CMD of run) never come from the environment.
    """
    hints = get_type_hints(fn, include_extras=True)  # evaluated once, and kept as evaluated
    for name, annotation in hints.items():
        for info in getattr(annotation, "__metadata__", ()):
            if isinstance(info, OptionInfo) and info.envvar is None and name != "traces_dir":
                info.envvar = env_var(name)
    fn.__annotations__ = hints
    return fn


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a ReplayError into one line on stderr and exit code 2; real bugs keep tracebacks."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ReplayError as exc:
            err.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def resolve_dir(traces_dir: Path | None) -> Path:
    """The --traces-dir given, else the default dataset."""
    from replay.store.layout import default_traces_dir

    return traces_dir if traces_dir is not None else default_traces_dir()


def print_json(value: Any) -> None:
    """Write JSON to stdout (indented, UTF-8)."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


PLAIN_ROWS = 1000
"""Tables longer than this are printed as aligned plain text (rich would take minutes)."""


def print_table(title: str | None, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table for people; aligned plain text when it is long."""
    if len(rows) > PLAIN_ROWS:
        cells = [list(headers), *(["" if v is None else str(v) for v in r] for r in rows)]
        widths = [max(map(len, column)) for column in zip(*cells, strict=True)]
        line = "  ".join(
            f"{{:{'>' if h.endswith('_s') else '<'}{w}}}"
            for h, w in zip(headers, widths, strict=True)
        )
        text = "\n".join(line.format(*row).rstrip() for row in cells)
        sys.stdout.write((f"{title}\n" if title else "") + text + "\n")
        sys.stdout.flush()
        return
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header, justify="right" if header.endswith("_s") else "left")
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    out.print(table)
