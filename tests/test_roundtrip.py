"""Replay, capture, ingest: a capture of a 60x replay ingests back into the trace it came from."""

from __future__ import annotations

import asyncio
from pathlib import Path

from replay.clock import SystemClock
from replay.recording.capture import capture
from replay.recording.ingest import ingest_file
from replay.store.dataset import load_trace
from replay.store.files import read_trace
from replay.testing.plugin import ReplayServer

SPEED = 60.0
INTERVAL_S = 0.05  # 3 s of trace time at 60x


def test_capture_of_a_60x_replay_ingests_back_into_its_trace(
    traces_dir: Path, tmp_path: Path
) -> None:
    original = load_trace(traces_dir, "live-migration")
    server = ReplayServer(traces_dir).open()
    try:
        server.client.start("live-migration", speed=SPEED, start="first-request")
        out = tmp_path / "vm.jsonl"
        url = server.url + "/metadata/scheduledevents?api-version=2020-07-01"
        asyncio.run(capture(url, out, clock=SystemClock(), interval_s=INTERVAL_S, until_events=1))
    finally:
        server.close()

    report = ingest_file(out, tmp_path / "ingested")
    assert [o.status for o in report.outcomes] == ["added"]
    (outcome,) = report.outcomes
    back = read_trace(outcome.path)
    assert back.scenario == "live-migration" and back.origin == "captured"

    # Same documents in the same order: the events' statuses and EventIds match.
    def shape(trace: object) -> list[list[tuple[str, str]]]:
        return [
            [(e["EventId"], e["EventStatus"]) for e in s.events]
            for s in trace.snapshots  # type: ignore[attr-defined]
        ]

    assert shape(back) == shape(original)
    # Each document was first seen at its scaled offset, within one poll interval.
    tolerance = INTERVAL_S * SPEED + 0.5
    for got, want in zip(back.snapshots[1:], original.snapshots[1:], strict=True):
        assert abs(got.offset_s * SPEED - want.offset_s) <= tolerance, (got.offset_s, want.offset_s)
    # NotBefore was shown scaled: notice of 900 s at 60x is 15 s (whole seconds, rounded down).
    (lc,) = back.lifecycles.values()
    assert lc.not_before_s is not None and lc.scheduled_s is not None
    notice_s = (lc.not_before_s - lc.scheduled_s) * SPEED
    assert 900 - SPEED - tolerance <= notice_s <= 900 + tolerance
