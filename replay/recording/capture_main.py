"""The main of the single-file capture script: `imds-replay capture`'s options on argparse.

Standard library only, Python 3.8 syntax (see capture_script). The script cannot import
replay.clock, so a minimal real clock lives here; `imds-replay capture` itself runs the same
capture code (replay.recording.capture) on replay.clock.SystemClock.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from replay.core.imds import LATEST_VERSION
from replay.errors import ReplayError
from replay.recording.capture import default_out, default_url, run_capture
from replay.recording.capture_file import ApprovePolicy, CaptureStats, format_status

ENV_PREFIX = "IMDS_REPLAY_"
OPTIONS = ("url", "interval", "duration", "until_events", "out", "approve")
"""The options of `imds-replay capture`, each also read from IMDS_REPLAY_<OPTION>."""


class WallClock:
    """Real time for the script: monotonic for scheduling, wall time pinned to it."""

    def __init__(self) -> None:
        self._mono0 = time.monotonic()
        self._wall0 = datetime.now(timezone.utc)

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return self._wall0 + timedelta(seconds=time.monotonic() - self._mono0)

    async def sleep_until(self, t: float) -> None:
        while True:
            left = t - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(left)


def env_name(option: str) -> str:
    """IMDS_REPLAY_<OPTION>: where an option's value may also come from."""
    return ENV_PREFIX + option.upper()


def _parser(env: Callable[[str], Any]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capture.py",
        description="Record what IMDS Scheduled Events shows this VM into a crash-safe capture "
        "file (the same program as `imds-replay capture`). Stops at --duration, after "
        "--until-events, or on Ctrl-C or SIGTERM. Each option can also come from "
        f"{ENV_PREFIX}<OPTION> (a flag wins).",
    )
    parser.add_argument(
        "--url",
        default=env("url") or default_url(LATEST_VERSION),
        help="Scheduled Events endpoint (default: IMDS) [env: IMDS_REPLAY_URL]",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=float(env("interval") or 1.0),
        help="Seconds between polls (default: 1) [env: IMDS_REPLAY_INTERVAL]",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=float(env("duration")) if env("duration") else None,
        help="Stop after this many seconds [env: IMDS_REPLAY_DURATION]",
    )
    parser.add_argument(
        "--until-events",
        type=int,
        default=int(env("until_events")) if env("until_events") else None,
        help="Stop once N events have completed (seen, then gone) [env: IMDS_REPLAY_UNTIL_EVENTS]",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(env("out")) if env("out") else None,
        help="Capture file; an existing one is continued (default: capture-<host>.jsonl) "
        "[env: IMDS_REPLAY_OUT]",
    )
    parser.add_argument(
        "--approve",
        choices=[p.value for p in ApprovePolicy],
        default=env("approve") or ApprovePolicy.none.value,
        help="Approve Scheduled events at once: none, user (EventSource User), all "
        "[env: IMDS_REPLAY_APPROVE]",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a capture from the command line; 0 when it stopped, 2 on a bad option."""
    try:
        args = _parser(lambda option: os.environ.get(env_name(option)))
        options = args.parse_args(argv)
    except ValueError as exc:  # a bad value in an IMDS_REPLAY_* variable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = options.out or default_out()
    terminal = sys.stderr.isatty()

    def status(stats: CaptureStats) -> None:
        if terminal:
            sys.stderr.write("\r\x1b[K" + format_status(stats)[:150])
            sys.stderr.flush()

    def started() -> None:
        print(f"capturing into {out} (Ctrl-C stops)", file=sys.stderr, flush=True)

    try:
        stats = run_capture(
            options.url,
            out,
            clock=WallClock(),
            interval_s=options.interval,
            duration_s=options.duration,
            until_events=options.until_events,
            approve=options.approve,
            on_poll=status,
            on_start=started,
        )
    except ReplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if terminal:
        sys.stderr.write("\r\x1b[K")
    print(f"stopped ({stats.stopped}): {format_status(stats)}", file=sys.stderr)
    return 0
