"""Replay, capture, ingest: a capture of a 60x replay ingests back into the trace it came from.

The server and the capture share one FakeClock: each poll runs at its exact slot on the
capture's schedule (the test moves time on only once the capture is asleep until its next
slot), so "first seen within one poll interval" holds exactly, however loaded the machine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from replay.clock import FakeClock
from replay.core.timeline import Trace
from replay.playback.anchor import Start
from replay.playback.registry import DEFAULT, SessionRegistry
from replay.playback.session import SessionOptions
from replay.recording.capture import CaptureStats, capture
from replay.recording.ingest import ingest_file
from replay.server.app import make_app
from replay.store.dataset import load_trace
from replay.store.files import read_trace

SPEED = 60.0
INTERVAL_S = 0.05  # 3 s of trace time at 60x
EPSILON_S = 1e-9
"""Past each slot by this much, so float rounding never leaves the capture a hair short."""


async def capture_on_virtual_time(url: str, out: Path, clock: FakeClock) -> None:
    """Capture url until one event completed, moving clock one poll interval at a time."""
    polled = asyncio.Event()

    def on_poll(_: CaptureStats) -> None:
        polled.set()  # the capture sleeps until its next slot before it awaits anything else

    start = clock.now()
    task = asyncio.ensure_future(
        capture(url, out, clock=clock, interval_s=INTERVAL_S, until_events=1, on_poll=on_poll)
    )
    slot = 0
    try:
        while True:
            waiter = asyncio.ensure_future(polled.wait())
            first = asyncio.FIRST_COMPLETED
            done, _ = await asyncio.wait({task, waiter}, timeout=10, return_when=first)
            waiter.cancel()
            assert done, "the capture neither polled nor ended within 10 s of real time"
            if task.done():
                break
            polled.clear()
            slot += 1
            assert slot < 10_000, "the capture never saw its event complete"
            clock.advance(start + slot * INTERVAL_S + EPSILON_S - clock.now())
    finally:
        task.cancel()
    task.result()


async def test_capture_of_a_60x_replay_ingests_back_into_its_trace(
    aiohttp_server: Any, traces_dir: Path, tmp_path: Path
) -> None:
    clock = FakeClock()
    registry = SessionRegistry(traces_dir, clock)
    original = load_trace(traces_dir, "live-migration")
    registry.create(DEFAULT, original, SessionOptions(speed=SPEED, start=Start.first_request))
    server = await aiohttp_server(make_app(registry, clock=clock))
    out = tmp_path / "vm.jsonl"
    url = str(server.make_url("/metadata/scheduledevents?api-version=2020-07-01"))
    await capture_on_virtual_time(url, out, clock)

    report = ingest_file(out, tmp_path / "ingested")
    assert [o.status for o in report.outcomes] == ["added"]
    (outcome,) = report.outcomes
    back = read_trace(outcome.path)
    assert back.scenario == "live-migration" and back.origin == "captured"

    # Same documents in the same order: the events' statuses and EventIds match.
    def shape(trace: Trace) -> list[list[tuple[str, str]]]:
        return [[(e["EventId"], e["EventStatus"]) for e in s.events] for s in trace.snapshots]

    assert shape(back) == shape(original)
    # Each document was first seen by the first poll at or after its scaled offset.
    interval = INTERVAL_S * SPEED  # trace seconds between polls
    for got, want in zip(back.snapshots[1:], original.snapshots[1:], strict=True):
        lag = got.offset_s * SPEED - want.offset_s
        assert lag == pytest.approx(-want.offset_s % interval, abs=1e-3), (got, want)
    # NotBefore was shown scaled: notice of 900 s at 60x is 15 s (whole seconds, rounded down).
    (lc,) = back.lifecycles.values()
    assert lc.not_before_s is not None and lc.scheduled_s is not None
    notice_s = (lc.not_before_s - lc.scheduled_s) * SPEED
    assert 900 - SPEED < notice_s <= 900 + 1e-3
