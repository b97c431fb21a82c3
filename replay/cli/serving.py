"""Commands that replay: serve over HTTP, push outbound."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

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
    out,
    resolve_dir,
    settle_collector,
    user_errors,
    vm_names,
)
from replay.core.imds import LATEST_VERSION
from replay.errors import ReplayError
from replay.playback.anchor import Start

SHUTDOWN_GRACE_S = 0.1
"""On SIGTERM or Ctrl-C, how long in-flight requests may finish before they are cancelled.
IMDS answers take microseconds; open WebSocket and SSE streams would otherwise hold the exit for
aiohttp's default 60 s (longer than `docker stop` waits before it kills)."""


@app.command()
@user_errors
@options_from_env
def serve(
    trace: Annotated[
        str | None, typer.Option("--trace", help="Trace name or .parquet path; idle without")
    ] = None,
    fleet: Annotated[
        Path | None,
        typer.Option(help="Fleet file (TOML): many VMs, each known by its client address"),
    ] = None,
    speed: Speed = "1",
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    loop: Loop = False,
    resources: Resources = None,
    start: Annotated[
        Start,
        typer.Option(
            help="Start the replay clock at the first IMDS request, now, or never (virtual: "
            "time moves only by the control API)"
        ),
    ] = Start.first_request,
    approval_delay: ApprovalDelay = 0.0,
    recorded_approvals: RecordedApprovals = False,
    rate_limit: RateLimit = None,
    warm_up: WarmUp = 0.0,
    faults: Faults = None,
    fault_seed: FaultSeed = 0,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="IMDS_REPLAY_TOKEN", help="Needed by the control API and page (non-loopback)"
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="A host name the control API and page answer to (repeatable)"),
    ] = None,
    log_level: LogLevel = "info",
    link_local: Annotated[
        bool,
        typer.Option(
            "--link-local",
            help="Serve on 169.254.169.254:80, added to lo of this network namespace (needs "
            "CAP_NET_ADMIN; refused where a real IMDS answers)",
        ),
    ] = False,
    traces_dir: TracesDir = None,
) -> None:
    """Serve IMDS Scheduled Events from a trace or a fleet, on 127.0.0.1:8080 by default.

    Example: imds-replay serve --trace live-migration --speed dev
    """
    import contextlib
    import errno
    import gc
    import logging
    import os

    from aiohttp import web

    from replay.clock import SystemClock
    from replay.core.faults import FaultPlan, load_playbook
    from replay.core.speed import parse_speed
    from replay.playback.registry import DEFAULT, SessionRegistry
    from replay.playback.session import SessionOptions
    from replay.server import linklocal
    from replay.server.app import make_app
    from replay.store.dataset import load_trace

    if link_local:
        if (host, port) != ("127.0.0.1", 8080):
            raise ReplayError(
                f"--link-local serves on {linklocal.ADDRESS}:{linklocal.PORT}: "
                "leave out --host and --port"
            )
        host, port = linklocal.ADDRESS, linklocal.PORT
    loopback = host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
    if not loopback and not token:
        raise ReplayError(
            f"binding {host} exposes the control API and page: give --token (or set "
            "IMDS_REPLAY_TOKEN); the IMDS routes stay open as on a real VM"
        )
    if link_local:
        linklocal.preflight()
    playbook = load_playbook(faults) if faults is not None else None
    logging.basicConfig(level=log_level.upper(), format="%(message)s", stream=sys.stderr)
    clock = SystemClock()
    directory = resolve_dir(traces_dir)
    registry = SessionRegistry(
        directory, clock, rate_limit=None if fleet else rate_limit, warm_up_s=warm_up, token=token
    )
    factor = parse_speed(speed)
    names = vm_names(resources)
    fleet_host = None
    if fleet is not None:
        from replay.cli.fleet import fleet_host_for
        from replay.playback.fleet import FleetOptions

        given = {"--trace": trace, "--resources": resources}
        plays = FleetOptions(
            factor,
            loop,
            start,
            approval_delay,
            recorded_approvals,
            rate_limit,
            faults=playbook,
            fault_seed=fault_seed,
            warm_up_s=warm_up,
        )
        fleet_host = fleet_host_for(
            fleet, directory, clock, plays, not_for_fleets=[k for k, v in given.items() if v]
        )
    elif trace is not None:
        t = load_trace(directory, trace)
        registry.add_trace(t)
        options = SessionOptions(
            speed=factor,
            loop=loop,
            resources=names,
            start=start,
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
            + ("; the clock starts at the first request" if start is Start.first_request else ""),
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
            f"IMDS at http://{host}:{port}/metadata/scheduledevents?api-version={LATEST_VERSION} "
            f"(control API: http://{host}:{port}/replay/; Ctrl-C stops)",
            highlight=False,
        )

    gc.collect()
    settle_collector()  # start-up's objects out of sight, young ones die young
    address = linklocal.on_loopback() if link_local else contextlib.nullcontext()
    try:
        with address:
            web.run_app(
                make_app(
                    registry,
                    clock=clock,
                    allowed_hosts=[host, *(allowed_host or [])],
                    fleet_host=fleet_host,
                ),
                host=host,
                port=port,
                print=ready,
                access_log=logging.getLogger("aiohttp.access") if log_level == "debug" else None,
                shutdown_timeout=SHUTDOWN_GRACE_S,
            )
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            raise
        hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" if port < 1024 else ""
        raise ReplayError(
            f"cannot listen on {host}:{port}: {os.strerror(exc.errno)}{hint}"
        ) from None


@app.command()
@user_errors
def push(
    trace: TraceName,
    to: Annotated[str, typer.Option("--to", help="ws(s):// server or http(s):// webhook URL")],
    speed: Speed = "1",
    loop: Loop = False,
    attempts: Annotated[int, typer.Option(help="Webhook tries per document")] = 5,
    traces_dir: TracesDir = None,
) -> None:
    """Replay a trace outbound: one message per document to a WebSocket server or webhook.

    Example: imds-replay push --trace live-migration --speed dev --to http://127.0.0.1:9000/hook
    """
    import asyncio

    from replay.clock import SystemClock
    from replay.core.speed import parse_speed
    from replay.playback.push import check_target, push_trace
    from replay.store.dataset import load_trace

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
