"""Commands over the trace dataset: list, show, generate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from replay.cli.common import (
    Format,
    FormatOpt,
    TracesDir,
    app,
    err,
    out,
    print_json,
    print_table,
    resolve_dir,
    user_errors,
)


@app.command()
@user_errors
def traces(
    traces_dir: TracesDir = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Read and validate every trace, not only the files' footers"),
    ] = False,
    where: Annotated[
        bool, typer.Option("--where", help="Print the directories in use and what each holds")
    ] = False,
    format: FormatOpt = Format.table,
) -> None:
    """List every trace in the dataset, with bad files reported beside it.

    Reads each file's footer only; --check reads and validates every trace.

    Installed from a wheel, the dataset is your data directory plus the shipped reference
    traces; --where prints the directories.

    Example: imds-replay traces --format json
    """
    from replay.store.footer import without_gc

    with without_gc():  # the listing makes no cycles; collecting would walk every row
        _list(resolve_dir(traces_dir), check=check, where=where, format=format)


def _list(directory: Path, *, check: bool, where: bool, format: Format) -> None:
    from replay.store.layout import dataset_dirs, location_of

    if where:
        dirs = [
            {
                "path": str(d),
                "location": location_of(d),
                "writes": n == 0,
                "exists": d.is_dir(),
            }
            for n, d in enumerate(dataset_dirs(directory))
        ]
        if format is Format.json:
            print_json(dirs)
            return
        for d in dirs:
            role = "ingest and synth write here" if d["writes"] else "read only"
            missing = "" if d["exists"] else ", not created yet"
            out.print(f"{d['location']:8} {d['path']}  ({role}{missing})", highlight=False)
        return
    if check:
        from replay.store.dataset import scan  # pyarrow: only --check reads whole files

        good, bad = scan(directory)
    else:
        from replay.store.footer import list_traces

        good, bad = list_traces(directory)
    for b in bad:
        err.print(f"warning: skipped {b.problem}", markup=False, highlight=False)
    placed = {p: (location_of(p), str(p)) for p in {t.path for t in good}}
    located = [placed[t.path] for t in good]  # (location, path): a bundle's thousands share one
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
                    "location": location,
                    "path": path,
                }
                for t, (location, path) in zip(good, located, strict=True)
            ]
        )
        return
    print_table(
        f"{len(good)} traces in {', '.join(str(d) for d in dataset_dirs(directory))}",
        ["name", "scenario", "origin", "location", "events", "documents", "duration_s"],
        [
            (t.name, t.scenario, t.origin, location, t.events, t.documents, f"{t.duration_s:g}")
            for t, (location, _) in zip(good, located, strict=True)
        ],
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
    from replay.store.dataset import load_trace

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
    jobs: Annotated[
        int | None,
        typer.Option(help="Processes writing files at once (default: one per CPU)", min=1),
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

    from replay.recording.synth import SynthOptions, captured_samples, parse_normal, plan
    from replay.recording.synth_write import write_synth

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

        result = write_synth(resolved, directory, progress=advance, jobs=jobs)
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
