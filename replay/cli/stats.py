"""Commands over timing statistics: tables and plots."""

from __future__ import annotations

import sys
from enum import StrEnum
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from analysis import Stat
from replay.cli.common import (
    TracesDir,
    app,
    err,
    out,
    print_json,
    resolve_dir,
    user_errors,
)
from replay.core.timeline import Origin
from replay.errors import ReplayError

ANALYSIS_MODULES = ("pandas", "matplotlib")


def need_analysis(command: str) -> None:
    """Stop with the line that installs the analysis extra when it is missing."""
    missing = [m for m in ANALYSIS_MODULES if find_spec(m) is None]
    if missing:
        raise ReplayError(
            f"{command} needs {' and '.join(missing)}: pip install 'imds-replay[analysis]'"
        )


class TimingsFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


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
    need_analysis("timings")
    from analysis.timings import PHASES as phases
    from analysis.timings import load_events, scenario_stats, stat_key, to_records
    from replay.store.footer import BadFile

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
    need_analysis("plot")
    from analysis.plots import save_figure, trace_figure
    from replay.store.dataset import load_trace

    save_figure(trace_figure(load_trace(resolve_dir(traces_dir), trace)), out_path)
    out.print(f"wrote {out_path}", markup=False, highlight=False)
