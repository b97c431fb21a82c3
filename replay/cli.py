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
        help="The trace dataset (default: $IMDS_REPLAY_TRACES, else the project's traces/)",
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
        print_json([{**t.summary(), "path": str(t.path)} for t in good])
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
    rate_limit: Annotated[
        int | None, typer.Option(help="IMDS requests per second per client; more get 429")
    ] = None,
    warm_up: Annotated[
        float, typer.Option(help="Wall seconds at a session's start answered slowly")
    ] = 0.0,
    faults: Annotated[
        Path | None, typer.Option(help="JSON playbook of failures in trace-time windows")
    ] = None,
    fault_seed: Annotated[int, typer.Option(help="Seed for the playbook's probabilities")] = 0,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="IMDS_REPLAY_TOKEN", help="Needed by the control API and page (non-loopback)"
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    traces_dir: TracesDir = None,
) -> None:
    """Serve IMDS Scheduled Events from a trace, on 127.0.0.1:8080 by default.

    Example: imds-replay serve --trace live-migration --speed dev
    """
    import logging

    from aiohttp import web

    from replay.clock import SystemClock
    from replay.faults import FaultPlan, load_playbook
    from replay.registry import DEFAULT, SessionRegistry, parse_speed
    from replay.server import make_app
    from replay.session import SessionOptions, Start
    from replay.store import load_trace

    loopback = host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
    if not loopback and not token:
        raise ReplayError(
            f"binding {host} exposes the control API and page: give --token (or set "
            "IMDS_REPLAY_TOKEN); the IMDS routes stay open as on a real VM"
        )
    playbook = load_playbook(faults) if faults is not None else None
    logging.basicConfig(level=log_level.upper(), format="%(message)s", stream=sys.stderr)
    clock = SystemClock()
    directory = resolve_dir(traces_dir)
    registry = SessionRegistry(
        directory, clock, rate_limit=rate_limit, warm_up_s=warm_up, token=token
    )
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
        session = registry.create(DEFAULT, t, options)
        if playbook is not None:
            session.faults = FaultPlan(playbook, seed=fault_seed)
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
        if playbook is not None:
            registry.sessions[DEFAULT].faults = FaultPlan(playbook, seed=fault_seed)
    if not loopback:
        err.print(
            f"warning: {host}:{port} exposes IMDS to anyone who can reach it; the control API, "
            "page and streams need the token",
            highlight=False,
        )

    def ready(_: str) -> None:
        # run_app calls this once the socket is bound: scripts can wait for this line.
        err.print(
            f"IMDS at http://{host}:{port}/metadata/scheduledevents?api-version=2020-07-01 "
            f"(control API: http://{host}:{port}/replay/; Ctrl-C stops)",
            highlight=False,
        )

    web.run_app(
        make_app(registry, clock=clock),
        host=host,
        port=port,
        print=ready,
        access_log=logging.getLogger("aiohttp.access") if log_level == "debug" else None,
    )


class ApprovePolicy(StrEnum):
    none = "none"
    user = "user"
    all = "all"


@app.command()
@user_errors
def capture(
    url: Annotated[
        str | None,
        typer.Option(
            help="Scheduled Events endpoint (default: IMDS, http://169.254.169.254/metadata/"
            "scheduledevents?api-version=2020-07-01)",
            show_default=False,
        ),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between polls")] = 1.0,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds", show_default=False)
    ] = None,
    until_events: Annotated[
        int | None,
        typer.Option(help="Stop once N events have completed (seen, then gone)", min=1),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Capture file; an existing one is continued (default: capture-<host>.jsonl)",
            show_default=False,
        ),
    ] = None,
    approve: Annotated[
        ApprovePolicy,
        typer.Option(help="Approve Scheduled events at once: none, user (EventSource User), all"),
    ] = ApprovePolicy.none,
) -> None:
    """Record what IMDS Scheduled Events shows this VM into a crash-safe capture file.

    Every change, error and approval becomes one fsynced JSON line, plus a heartbeat each minute.

    Stops at --duration, after --until-events, or on Ctrl-C or SIGTERM.

    Example: imds-replay capture --approve user --until-events 1 --out vm1.jsonl
    """
    import re
    import socket
    from contextlib import nullcontext

    from rich.live import Live
    from rich.text import Text

    from replay.capture import DEFAULT_URL, CaptureStats, format_status, run_capture

    if out is None:
        host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "vm"
        out = Path(f"capture-{host}.jsonl")
    live = Live(console=err, refresh_per_second=4, transient=True) if err.is_terminal else None

    def status(stats: CaptureStats) -> None:
        if live is not None:
            live.update(Text(format_status(stats), no_wrap=True, overflow="ellipsis"))

    def started() -> None:
        err.print(f"capturing into {out} (Ctrl-C stops)", highlight=False)

    with live if live is not None else nullcontext():
        stats = run_capture(
            url or DEFAULT_URL,
            out,
            interval_s=interval,
            duration_s=duration,
            until_events=until_events,
            approve=approve.value,
            on_poll=status,
            on_start=started,
        )
    err.print(f"stopped ({stats.stopped}): {format_status(stats)}", highlight=False)


@app.command()
@user_errors
def ingest(
    files: Annotated[
        list[Path],
        typer.Argument(help="Capture files: imds-replay capture output or plain poll logs"),
    ],
    traces_dir: TracesDir = None,
    scenario: Annotated[
        str | None,
        typer.Option(help="Label every episode with this scenario", show_default=False),
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip bad lines instead of rejecting the file")
    ] = False,
    format: FormatOpt = Format.table,
) -> None:
    """Turn capture files into traces, one per episode, labelled by scenario.

    Ingesting a file again adds nothing; a capture that grew adds only its new episodes.

    A file with a bad line is not written at all unless --skip-bad.

    Example: imds-replay ingest vm1.jsonl vm2.log --traces-dir traces
    """
    from contextlib import nullcontext

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from replay.ingest import FileReport, ingest_file, summarize

    directory = resolve_dir(traces_dir)
    reports: list[FileReport] = []
    failures: list[str] = []
    progress = (
        Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err)
        if err.is_terminal
        else None
    )
    with progress if progress is not None else nullcontext():
        total = sum(f.stat().st_size for f in files if f.is_file())
        task = progress.add_task("ingesting", total=total) if progress is not None else None

        def advance(n: int) -> None:
            if progress is not None and task is not None:
                progress.advance(task, n)

        for path in files:
            if progress is not None and task is not None:
                progress.update(task, description=path.name)
            try:
                reports.append(
                    ingest_file(
                        path, directory, scenario=scenario, skip_bad=skip_bad, on_bytes=advance
                    )
                )
            except ReplayError as exc:
                failures.append(f"{exc}; nothing from {path} was written (fix it or --skip-bad)")
    for report in reports:
        for warning in report.warnings:
            err.print(f"warning: {warning}", markup=False, highlight=False)
        for bad in report.skipped[:20]:
            err.print(f"skipped: {bad}", markup=False, highlight=False)
        if len(report.skipped) > 20:
            err.print(f"skipped {len(report.skipped) - 20} more bad lines", highlight=False)
    by_scenario = summarize(reports)
    if format is Format.json:
        print_json(
            {
                "traces_dir": str(directory),
                "by_scenario": by_scenario,
                "traces": [
                    {
                        "name": o.name,
                        "scenario": o.scenario,
                        "status": o.status,
                        "path": str(o.path),
                        "file": str(o.file),
                    }
                    for r in reports
                    for o in r.outcomes
                ],
                "warnings": [w for r in reports for w in r.warnings],
                "skipped": [str(b) for r in reports for b in r.skipped],
                "errors": failures,
            }
        )
    else:
        rows = [(s, c["added"], c["updated"], c["unchanged"]) for s, c in by_scenario.items()]
        print_table(
            f"{len(reports)} of {len(files)} files ingested into {directory}",
            ["scenario", "added", "updated", "unchanged"],
            rows,
        )
    for failure in failures:
        err.print(f"error: {failure}", markup=False, highlight=False)
    if failures:
        raise typer.Exit(2)


PhaseOpt = Annotated[
    str | None,
    typer.Option(
        metavar="MEAN:STD",
        help="Seconds, normal truncated at 0 (default: the scenario's reference value)",
        show_default=False,
    ),
]


@app.command()
@user_errors
def synth(
    scenario: Annotated[str, typer.Option(help="The scenario to generate, e.g. live-migration")],
    count: Annotated[int, typer.Option(help="How many traces to write", min=1)],
    notice: PhaseOpt = None,
    scheduled: PhaseOpt = None,
    started: PhaseOpt = None,
    from_traces: Annotated[
        bool,
        typer.Option(
            "--from-traces",
            help="Resample the phases not given, jointly, from captured events of the scenario",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="The same seed gives identical traces")] = 0,
    traces_dir: TracesDir = None,
    events_per_episode: Annotated[
        int, typer.Option(help="Events per trace; they arrive as a Poisson process", min=1)
    ] = 1,
    mean_gap: Annotated[
        float, typer.Option(help="Mean seconds between event arrivals within a trace")
    ] = 300.0,
    name: Annotated[
        str | None,
        typer.Option(help="Trace name prefix (default: synth-<scenario>)", show_default=False),
    ] = None,
    format: FormatOpt = Format.table,
) -> None:
    """Generate synthetic traces of a scenario with phases drawn from normal distributions.

    --notice: NotBefore minus first seen Scheduled. --started: Started to gone.

    --scheduled: Scheduled to Started (to removal, for canceled-maintenance).

    Traces are named <prefix>-s<seed>-<index>, have origin synthetic, 5,000 to a file.

    Running again with the same --name and --seed replaces that run's files.

    Example: imds-replay synth --scenario live-migration --count 1000 --notice 900:120 --seed 7
    """
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from replay.synth import SynthOptions, captured_samples, parse_normal, plan, write_synth

    directory = resolve_dir(traces_dir)
    options = SynthOptions(
        scenario=scenario,
        count=count,
        seed=seed,
        notice=parse_normal(notice, "--notice") if notice is not None else None,
        scheduled=parse_normal(scheduled, "--scheduled") if scheduled is not None else None,
        started=parse_normal(started, "--started") if started is not None else None,
        events_per_episode=events_per_episode,
        mean_gap_s=mean_gap,
        name=name,
    )
    samples = None
    if from_traces:
        samples, problems = captured_samples(directory, scenario)
        for problem in problems:
            err.print(f"warning: skipped {problem}", markup=False, highlight=False)
    resolved = plan(options, samples)
    show = err.is_terminal and count >= 1000
    progress = (
        Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), console=err)
        if show
        else None
    )
    with progress if progress is not None else nullcontext():
        task = progress.add_task("synth", total=count) if progress is not None else None

        def advance(done: int) -> None:
            if progress is not None and task is not None:
                progress.update(task, completed=done)

        result = write_synth(resolved, directory, progress=advance)
    if format is Format.json:
        print_json(
            {
                "scenario": scenario,
                "traces": result.traces,
                "seed": seed,
                "files": [str(p) for p in result.paths],
                "removed": [str(p) for p in result.removed],
            }
        )
        return
    out.print(
        f"wrote {result.traces} synthetic {scenario} traces (seed {seed}) in "
        f"{len(result.paths)} file{'s' if len(result.paths) > 1 else ''} under "
        f"{result.paths[0].parent}",
        highlight=False,
    )
    for path in result.removed:
        out.print(f"removed {path} (left over from a larger run)", highlight=False)


class TimingsFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class Stat(StrEnum):
    median = "median"
    mean = "mean"
    min = "min"
    max = "max"
    p90 = "p90"
    p99 = "p99"


class Origin(StrEnum):
    captured = "captured"
    reference = "reference"
    synthetic = "synthetic"


@app.command()
@user_errors
def timings(
    traces_dir: TracesDir = None,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario", help="Only this scenario (repeat for several)", show_default=False
        ),
    ] = None,
    origin: Annotated[
        list[Origin] | None,
        typer.Option(
            "--origin", help="Only traces of this origin (repeat for several)", show_default=False
        ),
    ] = None,
    stat: Annotated[
        list[Stat] | None,
        typer.Option(
            "--stat",
            help="Statistic per phase (repeat for several; default: median)",
            show_default=False,
        ),
    ] = None,
    format: Annotated[
        TimingsFormat,
        typer.Option("--format", help="table for people, json or csv for scripts"),
    ] = TimingsFormat.table,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Also draw each phase's distribution per scenario (.png)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Per-scenario timing statistics of every event: notice, Scheduled, Started, total, duration.

    Phases are in trace seconds; empty where no event of the scenario has the phase.

    The median keeps the phase's name (notice_s); other statistics add a suffix (notice_s_p90).

    Example: imds-replay timings --format json
    """
    from analysis.timings import PHASES as phases
    from analysis.timings import load_events, scenario_stats, stat_key, to_records
    from replay.store import BadFile

    directory = resolve_dir(traces_dir)
    stats = list(dict.fromkeys(s.value for s in stat or [Stat.median]))
    if plot is not None:
        from analysis.plots import check_figure_path

        check_figure_path(plot)  # before the work, not after it
    skipped: list[BadFile] = []
    events = load_events(
        directory,
        scenarios=scenario or [],
        origins=[o.value for o in origin or []],
        skipped=skipped,
    )
    for b in skipped:
        err.print(f"warning: skipped {b.problem}", markup=False, highlight=False)
    records = to_records(scenario_stats(events, stats))
    if plot is not None:
        from analysis.plots import distributions_figure, save_figure

        title = f"{len(events)} events in {directory}"
        save_figure(distributions_figure(events, title=title), plot)
        err.print(f"wrote {plot}", markup=False, highlight=False)
    if format is TimingsFormat.json:
        print_json(records)
        return
    if format is TimingsFormat.csv:
        import csv

        headers = list(records[0]) if records else ["scenario", "events"]
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows([["" if v is None else v for v in r.values()] for r in records])
        sys.stdout.flush()
        return
    # For people: one line per scenario and statistic, so several --stat stay readable.
    from rich import box

    several = len(stats) > 1
    table = Table(
        title=f"{len(events)} events in {directory} ({', '.join(stats)}; trace seconds)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,
    )
    table.add_column("scenario", no_wrap=True)
    if several:
        table.add_column("stat", no_wrap=True)
    table.add_column("events", justify="right", no_wrap=True)
    for phase in phases:
        table.add_column(phase, justify="right", overflow="fold")
    for r in records:
        for i, name in enumerate(stats):
            values = ("" if v is None else f"{v:g}" for v in (r[stat_key(p, name)] for p in phases))
            first = ("", "") if i else (r["scenario"], str(r["events"]))
            table.add_row(first[0], *([name] if several else []), first[1], *values)
        table.rows[-1].end_section = several
    out.print(table)


@app.command()
@user_errors
def plot(
    trace: Annotated[str, typer.Argument(help="A trace name or a path to a .parquet file")],
    out_path: Annotated[
        Path, typer.Option("--out", help="The image to write (.png, .svg or .pdf)")
    ],
    traces_dir: TracesDir = None,
) -> None:
    """Draw one trace: each event as bars by state over time, NotBefore and approvals marked.

    Example: imds-replay plot live-migration --out live-migration.png
    """
    from analysis.plots import save_figure, trace_figure
    from replay.store import load_trace

    save_figure(trace_figure(load_trace(resolve_dir(traces_dir), trace)), out_path)
    out.print(f"wrote {out_path}", markup=False, highlight=False)


@app.command()
@user_errors
def push(
    trace: Annotated[str, typer.Option("--trace", help="Trace name or .parquet path")],
    to: Annotated[str, typer.Option("--to", help="ws(s):// server or http(s):// webhook URL")],
    speed: Annotated[str, typer.Option(help="60, 60x, dev (= 60) or 200% (= 2)")] = "1",
    loop: Annotated[bool, typer.Option("--loop", help="Replay forever, fresh EventIds")] = False,
    attempts: Annotated[int, typer.Option(help="Webhook tries per document")] = 5,
    traces_dir: TracesDir = None,
) -> None:
    """Replay a trace outbound: one message per document to a WebSocket server or webhook.

    Example: imds-replay push --trace live-migration --speed dev --to http://127.0.0.1:9000/hook
    """
    import asyncio

    from replay.clock import SystemClock
    from replay.push import check_target, push_trace
    from replay.registry import parse_speed
    from replay.store import load_trace

    check_target(to)
    t = load_trace(resolve_dir(traces_dir), trace)
    factor = parse_speed(speed)
    err.print(f"pushing {t.name} at {factor:g}x to {to} ({t.duration_s / factor:.3g} s)")
    report = asyncio.run(
        push_trace(t, to, clock=SystemClock(), speed=factor, loop=loop, attempts=attempts)
    )
    for problem in report.errors:
        err.print(f"failed: {problem}", markup=False, highlight=False)
    out.print(
        f"{report.delivered} delivered, {report.failed} failed, {report.retries} retries",
        highlight=False,
    )
    if report.failed:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the console script."""
    app()
