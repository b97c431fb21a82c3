"""`imds-replay run -- CMD`: a handler, unmodified, where http://169.254.169.254 is a replay."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.table import Table

from replay.cli.common import (
    ApprovalDelay,
    Faults,
    FaultSeed,
    LogLevel,
    Loop,
    RateLimit,
    RecordedApprovals,
    Resources,
    Speed,
    TraceName,
    TracesDir,
    WarmUp,
    app,
    err,
    options_from_env,
    resolve_dir,
    settle_collector,
    user_errors,
    vm_names,
)
from replay.errors import ReplayError
from replay.playback.anchor import Start

if TYPE_CHECKING:
    from replay.core.timeline import Trace
    from replay.testing.report import Expectation, RunReport
    from replay.testing.run import Ending, ReplaySpec
    from replay.testing.sandbox import Sandbox


@app.command(context_settings={"allow_interspersed_args": False})
@user_errors
@options_from_env
def run(
    trace: TraceName,
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="The handler and its arguments, after --", show_default=False, metavar="CMD"
        ),
    ] = None,
    speed: Speed = "1",
    loop: Loop = False,
    resources: Resources = None,
    start: Annotated[
        Start, typer.Option(help="Start the replay clock at CMD's first IMDS request, or now")
    ] = Start.first_request,
    approval_delay: ApprovalDelay = 0.0,
    recorded_approvals: RecordedApprovals = False,
    rate_limit: RateLimit = None,
    warm_up: WarmUp = 0.0,
    faults: Faults = None,
    fault_seed: FaultSeed = 0,
    port: Annotated[
        int, typer.Option(help="TCP port of the page and control API on 127.0.0.1 (0: any)")
    ] = 8080,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the report to this file as JSON")
    ] = None,
    expect: Annotated[
        list[str] | None,
        typer.Option(
            help="approve, no-errors, recovered or max-detection=S (repeatable); unmet: exit 3"
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop CMD this many wall seconds after it started")
    ] = None,
    grace: Annotated[
        float, typer.Option(help="Stop CMD this many wall seconds after the replay ends")
    ] = 5.0,
    log_level: LogLevel = "warning",
    traces_dir: TracesDir = None,
) -> None:
    """Run CMD where http://169.254.169.254 is the replay, then report what it did.

    CMD runs unmodified in its own user, network and PID namespaces, with this process's
    stdin, stdout, stderr and environment. It is stopped (SIGTERM, SIGKILL 3 s later, every
    process of it) when the replay has ended and --grace has passed, or at --timeout. Exit
    status: 3 when an expectation is unmet; else CMD's (0 when run stopped it after the
    replay, 124 at --timeout, 130 on Ctrl-C).

    Example: imds-replay run --trace live-migration --speed 60 --expect approve -- python handler.py
    """
    _keep_numpy_out()
    import asyncio
    import gc
    import logging

    from replay.core.faults import FaultPlan, load_playbook
    from replay.core.speed import parse_speed
    from replay.testing.report import Expectation
    from replay.testing.sandbox import Sandbox, check_command

    expectations = [Expectation.parse(e) for e in expect or []]
    command = command or []
    check_command(command)
    if grace < 0 or (timeout is not None and timeout <= 0):
        raise ReplayError("--grace must be at least 0 and --timeout more than 0 seconds")
    if start is Start.virtual:
        raise ReplayError("--start virtual never ends by itself; use first-request or now")
    if report is not None and not report.parent.is_dir():
        raise ReplayError(f"--report {report}: folder {report.parent} does not exist")
    factor = parse_speed(speed)
    playbook = FaultPlan(load_playbook(faults), seed=fault_seed) if faults else None
    logging.basicConfig(level=log_level.upper(), format="%(message)s", stream=sys.stderr)
    # The namespace's helper starts first: its start-up overlaps the imports and the trace's.
    sandbox = Sandbox.spawn(command)
    # Start-up allocates much and frees little: the collector would spend 0.05 s of CPU
    # scanning it before CMD may start. It resumes once the server is up (_serve_and_run).
    collecting = gc.isenabled()
    gc.disable()
    try:
        from replay.store.dataset import load_trace
        from replay.testing.run import Ending, ReplaySpec

        t = load_trace(resolve_dir(traces_dir), trace)
        spec = ReplaySpec(
            t.name,
            speed=factor,
            loop=loop,
            resources=vm_names(resources),
            start=start,
            approval_delay_s=approval_delay,
            recorded_approvals=recorded_approvals,
            faults=playbook,
        )
        result = asyncio.run(
            _serve_and_run(
                spec,
                t,
                sandbox,
                expectations,
                Ending(grace_s=grace, timeout_s=timeout),
                port=port,
                rate_limit=rate_limit,
                warm_up_s=warm_up,
                traces_dir=resolve_dir(traces_dir),
                collect=collecting,
            )
        )
    finally:
        if collecting:
            gc.enable()
        sandbox.abandon()  # when it never ran (a missing trace, a busy port)
    print_report(result)
    if report is not None:
        try:
            report.write_bytes(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
        except OSError as exc:
            raise ReplayError(f"cannot write the report to {report}: {exc.strerror}") from None
    raise typer.Exit(result.run_status)


def _keep_numpy_out() -> None:
    """pyarrow imports numpy whenever it is installed (the analysis extra installs it): 0.1 s
    and more of CPU before CMD may start. Nothing in run's process uses numpy, and the base
    install has none, so run's process goes without it, as there (an import of it fails)."""
    if "numpy" not in sys.modules:
        sys.modules["numpy"] = None  # type: ignore[assignment]


async def _serve_and_run(
    spec: ReplaySpec,
    trace: Trace,
    sandbox: Sandbox,
    expectations: list[Expectation],
    ending: Ending,
    *,
    port: int,
    rate_limit: int | None,
    warm_up_s: float,
    traces_dir: Path,
    collect: bool,
) -> RunReport:
    """The server on 127.0.0.1:port for people, the namespace's socket for CMD, the run.

    collect: whether the garbage collector runs once start-up is over.
    """
    import asyncio
    import gc
    import signal

    from aiohttp import web

    from replay.clock import SystemClock
    from replay.core.speed import parse_speed
    from replay.playback.registry import DEFAULT, SessionRegistry
    from replay.server.app import make_app
    from replay.testing.run import run_in_namespace

    clock = SystemClock()
    registry = SessionRegistry(traces_dir, clock, rate_limit=rate_limit, warm_up_s=warm_up_s)
    registry.add_trace(trace)
    spec.create(registry, DEFAULT)
    runner = web.AppRunner(make_app(registry, clock=clock), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        try:
            await site.start()
        except OSError as exc:
            raise ReplayError(
                f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pass another --port "
                "(0 picks a free one)"
            ) from None
        bound = runner.addresses[0][1]
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, interrupted.set)
        # Start-up is over (run paused the collector for it): what it made goes out of the
        # collector's sight, as in serve, and collecting resumes.
        settle_collector()
        if collect:
            gc.enable()

        def started() -> None:
            err.print(
                f"replaying {trace.name} at {parse_speed(spec.speed):g}x as "
                f"http://169.254.169.254 for {' '.join(sandbox.command)} (page and control API: http://127.0.0.1:{bound}/)",
                highlight=False,
                markup=False,
            )

        return await run_in_namespace(
            registry,
            DEFAULT,
            sandbox.command,
            expect=expectations,
            ending=ending,
            interrupted=interrupted,
            on_started=started,
            sandbox=sandbox,
        )
    finally:
        await runner.cleanup()


def print_report(report: RunReport) -> None:
    """The report as a few lines and two short tables, on stderr."""
    how = {
        "exit": "exited",
        "grace": "was stopped after the replay ended",
        "timeout": "was stopped at --timeout",
        "interrupt": "was stopped by Ctrl-C",
    }[report.ended_by]
    code = report.signal or report.exit_code
    requests = report.requests
    statuses = ", ".join(f"{n} x {s}" for s, n in requests.by_status.items()) or "none"
    versions = ", ".join(f"{v} x {n}" for v, n in requests.api_versions.items()) or "none"
    err.print(
        f"\nCMD {how} ({code}); VM {report.vm}, trace {report.trace} at {report.speed:g}x\n"
        f"requests: {requests.total} ({statuses}), peak {requests.peak_per_second}/s, "
        f"api-versions {versions}, without Metadata {requests.missing_metadata}, "
        f"with X-Forwarded-For {requests.forwarded_for}",
        highlight=False,
        markup=False,
    )
    table = Table(title_justify="left")
    for header in ("event", "type", "detected_s", "notice_left_s", "approved", "recovered"):
        table.add_column(header, justify="right" if header.endswith("_s") else "left")
    for e in report.events:
        table.add_row(
            e.event_id[:8] + (f" r{e.round}" if e.round else ""),
            e.event_type,
            _cell(e.detected_after_s),
            _cell(e.approved_notice_left_s),
            e.approved_while or "no",
            "yes" if e.recovered else "no",
        )
    err.print(table)
    for outcome in report.expectations:
        mark = "ok  " if outcome.ok else "FAIL"
        err.print(f"{mark} {outcome.name}: {outcome.why}", highlight=False, markup=False)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
