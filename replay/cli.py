"""The `imds-replay` command: parses options, calls the library, prints.

Heavy imports (pyarrow, aiohttp, pandas) happen inside commands so `--help` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

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
        help="The trace dataset [default: $IMDS_REPLAY_TRACES, else the project's traces/]",
        show_default=False,
    ),
]
FormatOpt = Annotated[Format, typer.Option("--format", help="table for people, json for scripts")]


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
    from replay.store import default_traces_dir

    return traces_dir if traces_dir is not None else default_traces_dir()


def print_json(value: Any) -> None:
    """Write JSON to stdout (indented, UTF-8)."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def print_table(title: str | None, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table for people."""
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header, justify="right" if header.endswith("_s") else "left")
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    out.print(table)


@app.command()
@user_errors
def traces(traces_dir: TracesDir = None, format: FormatOpt = Format.table) -> None:
    """List every trace in the dataset, with bad files reported beside it.

    Example: imds-replay traces --format json
    """
    from replay.store import scan

    directory = resolve_dir(traces_dir)
    good, bad = scan(directory)
    for b in bad:
        err.print(f"warning: skipped {b.problem}", markup=False, highlight=False)
    if format is Format.json:
        print_json(
            [
                {
                    "name": t.name,
                    "scenario": t.scenario,
                    "origin": t.origin,
                    "events": t.events,
                    "documents": t.documents,
                    "duration_s": t.duration_s,
                    "path": str(t.path),
                }
                for t in good
            ]
        )
        return
    print_table(
        f"{len(good)} traces in {directory}",
        ["name", "scenario", "origin", "events", "documents", "duration_s"],
        [(t.name, t.scenario, t.origin, t.events, t.documents, f"{t.duration_s:g}") for t in good],
    )


@app.command()
@user_errors
def show(
    trace: Annotated[str, typer.Argument(help="A trace name or a path to a .parquet file")],
    traces_dir: TracesDir = None,
    format: FormatOpt = Format.table,
) -> None:
    """Show one trace's timeline: each document's offset, incarnation and events.

    Example: imds-replay show live-migration
    """
    from replay.store import load_trace

    t = load_trace(resolve_dir(traces_dir), trace)
    if format is Format.json:
        print_json(
            {
                "name": t.name,
                "scenario": t.scenario,
                "origin": t.origin,
                "started_at": t.started_at,
                "approvals": [
                    {"offset_s": a.offset_s, "event_ids": a.event_ids} for a in t.approvals
                ],
                "documents": [
                    {"offset_s": s.offset_s, "document": s.document} for s in t.snapshots
                ],
            }
        )
        return
    rows = []
    for s in t.snapshots:
        if not s.events:
            rows.append((f"{s.offset_s:g}", s.incarnation, "", "", "", ""))
        for e in s.events:
            rows.append(
                (
                    f"{s.offset_s:g}",
                    s.incarnation,
                    e["EventId"],
                    e["EventType"],
                    e["EventStatus"],
                    e["NotBefore"],
                )
            )
    title = f"{t.name} ({t.scenario}, {t.origin}, started {t.started_at or 'unknown'})"
    print_table(
        title, ["offset_s", "incarnation", "event_id", "type", "status", "not_before"], rows
    )
    for a in t.approvals:
        out.print(f"approved at {a.offset_s:g} s: {', '.join(a.event_ids)}", highlight=False)


class StartMode(StrEnum):
    first_request = "first-request"
    now = "now"


@app.command()
@user_errors
def serve(
    trace: Annotated[
        str | None, typer.Option("--trace", help="Trace name or .parquet path; idle without")
    ] = None,
    speed: Annotated[str, typer.Option(help="60, 60x, dev (= 60) or 200% (= 2)")] = "1",
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    loop: Annotated[bool, typer.Option("--loop", help="Replay forever, fresh EventIds")] = False,
    resources: Annotated[
        str | None, typer.Option(help="Comma-separated VM names to put in every event")
    ] = None,
    start: Annotated[
        StartMode, typer.Option(help="Start the replay clock at the first IMDS request, or now")
    ] = StartMode.first_request,
    approval_delay: Annotated[
        float, typer.Option(help="Trace seconds between an approval and the event's start")
    ] = 0.0,
    recorded_approvals: Annotated[
        bool, typer.Option("--recorded-approvals", help="Play the capture's own approvals")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    traces_dir: TracesDir = None,
) -> None:
    """Serve IMDS Scheduled Events from a trace, on 127.0.0.1:8080 by default.

    Example: imds-replay serve --trace live-migration --speed dev
    """
    import logging

    from aiohttp import web

    from replay.clock import SystemClock
    from replay.registry import DEFAULT, SessionRegistry, parse_speed
    from replay.server import make_app
    from replay.session import SessionOptions, Start
    from replay.store import load_trace

    logging.basicConfig(level=log_level.upper(), format="%(message)s", stream=sys.stderr)
    clock = SystemClock()
    directory = resolve_dir(traces_dir)
    registry = SessionRegistry(directory, clock)
    factor = parse_speed(speed)
    names = tuple(r.strip() for r in resources.split(",") if r.strip()) if resources else None
    if trace is not None:
        t = load_trace(directory, trace)
        registry.add_trace(t)
        options = SessionOptions(
            speed=factor,
            loop=loop,
            resources=names,
            start=Start(start.value),
            approval_delay_s=approval_delay,
            recorded_approvals=recorded_approvals,
        )
        registry.create(DEFAULT, t, options)
        wall = t.duration_s / factor
        err.print(
            f"replaying {t.name} ({t.scenario}, {t.origin}) at {factor:g}x: "
            f"{t.duration_s:g} s of trace take {wall:.3g} s"
            + (", looping" if loop else "")
            + (
                "; the clock starts at the first request"
                if start is StartMode.first_request
                else ""
            ),
            highlight=False,
        )
        for lc in t.lifecycles.values():
            if lc.not_before_s is not None and lc.scheduled_s is not None:
                notice = (lc.not_before_s - lc.scheduled_s) / factor
                if notice < 1:
                    err.print(
                        f"warning: {lc.event_id} gets {notice:.2f} s of notice at {factor:g}x "
                        "(NotBefore has whole seconds; slow down to see it)",
                        highlight=False,
                    )
    else:
        err.print("idle: start a session with POST /replay/sessions", highlight=False)
    err.print(
        f"IMDS at http://{host}:{port}/metadata/scheduledevents?api-version=2020-07-01 "
        f"(control API: http://{host}:{port}/replay/)",
        highlight=False,
    )
    web.run_app(
        make_app(registry, clock=clock),
        host=host,
        port=port,
        print=None,
        access_log=logging.getLogger("aiohttp.access") if log_level == "debug" else None,
    )


def main() -> None:
    """Entry point of the console script."""
    app()
