"""What every command shares: the typer app, consoles, options, error handling, printing."""

from __future__ import annotations

import copy
import gc
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

# The options of the commands that replay (serve, run, push), defined once; each command gives
# its own default.
TraceName = Annotated[str, typer.Option("--trace", help="Trace name or .parquet path")]
Speed = Annotated[str, typer.Option(help="60, 60x, dev (= 60) or 200% (= 2)")]
Loop = Annotated[bool, typer.Option("--loop", help="Replay forever, fresh EventIds")]
Resources = Annotated[
    str | None, typer.Option(help="Comma-separated VM names to put in every event")
]
ApprovalDelay = Annotated[
    float, typer.Option(help="Trace seconds between an approval and the event's start")
]
RecordedApprovals = Annotated[
    bool, typer.Option("--recorded-approvals", help="Play the capture's own approvals")
]
RateLimit = Annotated[
    int | None,
    typer.Option(
        help="IMDS requests per second per client address (per VM of a fleet); more get 429"
    ),
]
WarmUp = Annotated[
    float,
    typer.Option(help="Wall seconds at a session's (or each fleet VM's) start answered slowly"),
]
Faults = Annotated[
    Path | None,
    typer.Option(
        help="JSON playbook of failures in trace-time windows (a fleet VM draws on its own, "
        "unless the fleet file gives it a playbook)"
    ),
]
FaultSeed = Annotated[int, typer.Option(help="Seed for the playbook's probabilities")]
LogLevel = Annotated[str, typer.Option(help="debug, info, warning")]


def vm_names(resources: str | None) -> tuple[str, ...] | None:
    """--resources as names (None: the trace's own)."""
    if not resources:
        return None
    return tuple(r.strip() for r in resources.split(",") if r.strip())


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
        metadata = getattr(annotation, "__metadata__", ())
        if name == "traces_dir" or not any(_takes_env(info) for info in metadata):
            continue
        # A copy with the variable: the shared definitions above serve other commands too.
        own = [_with_envvar(info, env_var(name)) if _takes_env(info) else info for info in metadata]
        hints[name] = Annotated[(annotation.__origin__, *own)]
    fn.__annotations__ = hints
    return fn


def _takes_env(info: object) -> bool:
    return isinstance(info, OptionInfo) and info.envvar is None


def _with_envvar(info: OptionInfo, name: str) -> OptionInfo:
    own = copy.copy(info)
    own.envvar = name
    return own


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


SERVER_GC_THRESHOLD = 4_000
"""Allocations between two young-generation collections in a serving process (Python's
default is 700)."""


def settle_collector() -> None:
    """Set the garbage collector for serving, once start-up is over.

    What start-up made (modules, traces, a fleet) lasts as long as the process, so it leaves
    the collector's sight (gc.freeze). A server answering thousands of polls a second makes
    objects that live a few milliseconds; collected every 700 allocations they survive into the
    old generations and soon trigger full collections over every connection's objects: stalls
    of 100-500 ms with 5,000 kept-alive clients (benchmarks/fleet_scale.py). Collected every
    SERVER_GC_THRESHOLD allocations most die young. Much larger thresholds (20,000) make each
    young collection walk the objects of every connection opened since the last one, which
    slows clients that open a connection per poll; 4,000 kept both near their best there.
    """
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(SERVER_GC_THRESHOLD, older, oldest)
