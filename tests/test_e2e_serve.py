"""End to end: the real `imds-replay serve` on 127.0.0.1, polled by real clients; and the
timing probe's exact version on virtual time."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from replay.clock import FakeClock, SystemClock
from replay.core.timeline import parse_rfc1123
from replay.playback.registry import DEFAULT, SessionRegistry
from replay.playback.session import SessionOptions
from tests.conftest import ROOT
from tests.serving import serving

URL = "/metadata/scheduledevents?api-version=2020-07-01"


def poll(base: str) -> dict[str, Any]:
    request = urllib.request.Request(base + URL, headers={"Metadata": "true"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


def test_documented_sample_client_approves_a_short_freeze_and_sees_it_through(
    traces_dir: Path,
) -> None:
    with serving("--trace", "live-migration", "--speed", "60", traces_dir=traces_dir) as base:
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "examples" / "sample_handler.py"),
                "--base",
                base,
                "--seconds",
                "8",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    lines = out.splitlines()
    statuses = [line.split()[3] for line in lines if line.startswith("event ")]
    assert statuses == ["Scheduled", "Started"], out
    assert any(line.startswith("approve ") and line.endswith("-> 200") for line in lines), out
    incarnations = [int(line.split()[1]) for line in lines if line.startswith("incarnation ")]
    assert incarnations == sorted(incarnations) and len(incarnations) == 4, (
        out
    )  # empty, S, St, empty
    ids = {line.split()[1] for line in lines if line.startswith("event ")}
    assert len(ids) == 1, out


class Probe:
    """What a timing probe saw: when each status first showed, and the NotBefore shown."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.walls: dict[str, float] = {}
        self.ids: set[str] = set()
        self.not_before: float | None = None

    def saw(self, doc: dict[str, Any], t: float, wall: float) -> None:
        for event in doc["Events"]:
            self.ids.add(event["EventId"])
            self.seen.setdefault(event["EventStatus"], t)
            if event["EventStatus"] == "Scheduled":
                self.not_before = parse_rfc1123(event["NotBefore"]).timestamp()
                self.walls.setdefault("Scheduled", wall)
            else:
                self.walls.setdefault("Started", wall)
        if "Started" in self.seen and not doc["Events"]:
            self.seen["gone"] = t

    def check(self, speed: float, slack_s: float) -> None:
        """live-migration: 900 s Scheduled, 300 s Started, each shown scaled by speed."""
        seen = self.seen
        assert len(self.ids) == 1
        assert abs((seen["Started"] - seen["Scheduled"]) - 900 / speed) <= slack_s, seen
        assert abs((seen["gone"] - seen["Started"]) - 300 / speed) <= slack_s, seen
        assert self.not_before is not None
        started_at = self.walls["Started"]
        assert self.not_before <= started_at  # never after Started
        assert started_at - self.not_before < 1 + slack_s  # NotBefore: whole seconds, floored


STEP_S = 0.01
"""Virtual seconds between the virtual probe's polls."""


async def test_timing_probe_on_virtual_time_sees_each_phase_last_its_scaled_length(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    speed = 300  # live-migration: 900 s Scheduled -> 3 s, 300 s Started -> 1 s
    registry.create(DEFAULT, registry.trace("live-migration"), SessionOptions(speed=speed))
    probe = Probe()
    start = clock.now()
    while "gone" not in probe.seen and clock.now() - start < 10:
        resp = await client.get(URL, headers={"Metadata": "true"})
        probe.saw(await resp.json(), clock.now(), clock.wall().timestamp())
        clock.advance(STEP_S)
    probe.check(speed, slack_s=STEP_S + 1e-6)  # each change is seen by the next poll


@pytest.mark.slow
def test_timing_probe_sees_each_phase_last_its_scaled_length(traces_dir: Path) -> None:
    speed = 300
    clock = SystemClock()
    probe = Probe()
    with serving("--trace", "live-migration", "--speed", str(speed), traces_dir=traces_dir) as base:
        start = clock.now()
        while "gone" not in probe.seen and clock.now() - start < 10:
            doc = poll(base)
            probe.saw(doc, clock.now(), clock.wall().timestamp())
    # Request latency on a loaded 2-core machine; the server itself adds none (the virtual
    # probe above checks to the step). 0.5 s still tells 3 s from 1 s.
    probe.check(speed, slack_s=0.5)
