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
    data = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    sys.stdout.flush()
    if hasattr(sys.stdout, "buffer"):  # the bytes as they are: no decoding and encoding again
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(data.decode())
        sys.stdout.flush()


PLAIN_ROWS = 1000
"""Tables longer than this are printed as aligned plain text (rich would take minutes)."""


def _width(values: Sequence[Any]) -> int:
    """The widest of the values as text (all text or all integers: without converting each)."""
    kinds = set(map(type, values))
    if kinds == {str}:
        return max(map(len, values))
    if kinds == {int}:
        return max(len(str(min(values))), len(str(max(values))))
    return max(map(len, map(str, values)), default=0)


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as aligned plain text under their headers: each column as wide as its widest cell,
    right-aligned when its header ends in _s (seconds), nothing trailing on a line.
    Each row is one %-format, so 100,000 rows take about a tenth of a second."""
    columns = list(zip(*rows, strict=True)) or [()] * len(headers)
    if any(None in column for column in columns):
        rows = [tuple("" if v is None else v for v in row) for row in rows]
        columns = list(zip(*rows, strict=True))
    widths = [max(len(h), _width(c)) for h, c in zip(headers, columns, strict=True)]
    line = "  ".join(
        f"%{w}s" if h.endswith("_s") else "%s" if n == len(headers) - 1 else f"%-{w}s"
        for n, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    lines = [line % tuple(headers), *(line % tuple(row) for row in rows)]
    return "\n".join(map(str.rstrip, lines))


def print_table(title: str | None, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table for people; aligned plain text when it is long."""
    if len(rows) > PLAIN_ROWS:
        text = plain_table(headers, rows)
        sys.stdout.write((f"{title}\n" if title else "") + text + "\n")
        sys.stdout.flush()
        return
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header, justify="right" if header.endswith("_s") else "left")
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    out.print(table)
