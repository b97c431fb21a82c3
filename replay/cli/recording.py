"""Commands that record real VMs: capture on the VM, ingest at home."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from replay.cli.common import (
    Format,
    FormatOpt,
    TracesDir,
    app,
    env_var,
    err,
    print_json,
    print_table,
    resolve_dir,
    user_errors,
)
from replay.core.imds import LATEST_VERSION
from replay.errors import ReplayError
from replay.recording.capture_file import ApprovePolicy


@app.command()
@user_errors
def capture(
    url: Annotated[
        str | None,
        typer.Option(
            help="Scheduled Events endpoint (default: IMDS, http://169.254.169.254/metadata/"
            f"scheduledevents?api-version={LATEST_VERSION})",
            show_default=False,
            envvar=env_var("url"),
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option(help="Seconds between polls", envvar=env_var("interval"))
    ] = 1.0,
    duration: Annotated[
        float | None,
        typer.Option(
            help="Stop after this many seconds", show_default=False, envvar=env_var("duration")
        ),
    ] = None,
    until_events: Annotated[
        int | None,
        typer.Option(
            help="Stop once N events have completed (seen, then gone)",
            min=1,
            envvar=env_var("until_events"),
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Capture file; an existing one is continued (default: capture-<host>.jsonl)",
            show_default=False,
            envvar=env_var("out"),
        ),
    ] = None,
    approve: Annotated[
        ApprovePolicy,
        typer.Option(
            help="Approve Scheduled events at once: none, user (EventSource User), all",
            envvar=env_var("approve"),
        ),
    ] = ApprovePolicy.none,
    print_script: Annotated[
        bool,
        typer.Option(
            "--print-script",
            help="Print this capture as one Python 3.8+ file needing only the standard library",
        ),
    ] = False,
) -> None:
    """Record what IMDS Scheduled Events shows this VM into a crash-safe capture file.

    Every change, error and approval becomes one fsynced JSON line, plus a heartbeat each minute.

    Stops at --duration, after --until-events, or on Ctrl-C or SIGTERM.

    On a VM with nothing installed: imds-replay capture --print-script > capture.py, copy it
    there, python3 capture.py (the same options).

    Example: imds-replay capture --approve user --until-events 1 --out vm1.jsonl
    """
    if print_script:
        from replay.recording.capture_script import script_source

        sys.stdout.write(script_source())
        return
    from contextlib import nullcontext

    from rich.live import Live
    from rich.text import Text

    from replay.clock import SystemClock
    from replay.recording.capture import default_out, default_url, run_capture
    from replay.recording.capture_file import CaptureStats, format_status

    out = out or default_out()
    live = Live(console=err, refresh_per_second=4, transient=True) if err.is_terminal else None

    def status(stats: CaptureStats) -> None:
        if live is not None:
            live.update(Text(format_status(stats), no_wrap=True, overflow="ellipsis"))

    def started() -> None:
        err.print(f"capturing into {out} (Ctrl-C stops)", highlight=False)

    with live if live is not None else nullcontext():
        stats = run_capture(
            url or default_url(LATEST_VERSION),
            out,
            clock=SystemClock(),
            interval_s=interval,
            duration_s=duration,
            until_events=until_events,
            approve=approve.value,
            on_poll=status,
            on_start=started,
        )
    err.print(f"stopped ({stats.stopped}): {format_status(stats)}", highlight=False)


class LogShape(StrEnum):
    capture = "capture"
    plain = "plain"
    json = "json"
    curl = "curl"


@app.command()
@user_errors
def ingest(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Capture files or logs (- reads standard input; .gz and .zst are read as is)"
        ),
    ],
    traces_dir: TracesDir = None,
    scenario: Annotated[
        str | None,
        typer.Option(help="Label every episode with this scenario", show_default=False),
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip bad lines instead of rejecting the file")
    ] = False,
    log_format: Annotated[
        LogShape | None,
        typer.Option(
            help="The files' shape, instead of detecting it per file from its first records",
            show_default=False,
        ),
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option(
            metavar="ZONE",
            help="Zone of times written without one: an IANA name (Europe/Berlin) or UTC",
            show_default=False,
        ),
    ] = None,
    time_field: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="The record field holding the time, dotted (default: @timestamp, time, "
            "timestamp, ts, __REALTIME_TIMESTAMP)",
            show_default=False,
        ),
    ] = None,
    document_field: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="The record field holding the document, dotted, when a record holds several",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(help="Files parsed at once, in processes (default: one per CPU)", min=1),
    ] = None,
    format: FormatOpt = Format.table,
) -> None:
    """Turn capture files and logs into traces, one per episode, labelled by scenario.

    Reads imds-replay capture files, shell-loop and kubectl logs, structured JSON logs,
    journald JSON and curl loops; the shape is detected per file (--log-format forces one).

    Ingesting a file again adds nothing; a capture that grew adds only its new episodes.

    A file with a bad line is not written at all unless --skip-bad.

    Example: imds-replay ingest vm1.jsonl handler.log.gz --tz UTC --traces-dir traces
    """
    from contextlib import nullcontext

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from replay.recording.documents import parse_path
    from replay.recording.ingest import FileReport, ingest_parsed, parse_files, summarize
    from replay.recording.logs import LogOptions
    from replay.recording.sources import STDIN, input_size
    from replay.recording.times import parse_tz
    from replay.store.layout import check_name

    if sum(1 for f in files if str(f) == STDIN) > 1:
        raise ReplayError("- (standard input) can be given once")
    if scenario is not None:
        check_name(scenario, "scenario")

    def path_option(text: str | None, flag: str) -> tuple[str | int | None, ...] | None:
        try:
            return parse_path(text) if text is not None else None
        except ValueError as exc:
            raise ReplayError(f"{flag}: {exc}") from None

    options = LogOptions(
        tz=parse_tz(tz) if tz is not None else None,
        time_field=path_option(time_field, "--time-field"),
        document_field=path_option(document_field, "--document-field"),
        log_format=log_format.value if log_format is not None else None,
    )
    directory = resolve_dir(traces_dir)
    reports: list[FileReport] = []
    failures: list[str] = []
    progress = (
        Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err)
        if err.is_terminal
        else None
    )
    with progress if progress is not None else nullcontext():
        total = sum(input_size(f) for f in files)
        task = progress.add_task("ingesting", total=total) if progress is not None else None

        def advance(n: int) -> None:
            if progress is not None and task is not None:
                progress.advance(task, n)

        results = parse_files(
            files, skip_bad=skip_bad, options=options, jobs=jobs, on_bytes=advance
        )
        for path, result in zip(files, results, strict=True):
            try:
                if isinstance(result, ReplayError):
                    raise result
                reports.append(
                    ingest_parsed(result, directory, scenario=scenario, skip_bad=skip_bad)
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
                "files": [{"file": str(r.path), "shape": r.shape, **r.counts} for r in reports],
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
        print_table(
            f"{len(reports)} of {len(files)} files ingested",
            ["file", "shape", "polls", "failed", "no document", "episodes"],
            [
                (
                    r.path.name,
                    r.shape,
                    *(
                        ("-", "-", "-")  # a capture writes changes, not every poll
                        if r.shape == "capture"
                        else (r.counts["polls"], r.counts["failed_polls"], r.counts["no_document"])
                    ),
                    r.counts["episodes"],
                )
                for r in reports
            ],
        )
        rows = [(s, c["added"], c["updated"], c["unchanged"]) for s, c in by_scenario.items()]
        print_table(
            f"traces written into {directory}",
            ["scenario", "added", "updated", "unchanged"],
            rows,
        )
    for failure in failures:
        err.print(f"error: {failure}", markup=False, highlight=False)
    if failures:
        raise typer.Exit(2)
