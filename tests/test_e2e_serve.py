"""End to end: the real `imds-replay serve` on 127.0.0.1, polled by real clients."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from replay.clock import SystemClock
from replay.core.timeline import parse_rfc1123
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


def test_timing_probe_sees_each_phase_last_its_scaled_length(traces_dir: Path) -> None:
    speed = 300  # live-migration: 900 s Scheduled -> 3 s, 300 s Started -> 1 s
    clock = SystemClock()
    seen: dict[str, float] = {}
    not_before = None
    ids = set()
    with serving("--trace", "live-migration", "--speed", str(speed), traces_dir=traces_dir) as base:
        start = clock.now()
        while "gone" not in seen and clock.now() - start < 10:
            doc = poll(base)
            t = clock.now()
            for event in doc["Events"]:
                ids.add(event["EventId"])
                seen.setdefault(event["EventStatus"], t)
                if event["EventStatus"] == "Scheduled":
                    not_before = parse_rfc1123(event["NotBefore"])
                    seen.setdefault("scheduled_wall", clock.wall().timestamp())
                else:
                    seen.setdefault("started_wall", clock.wall().timestamp())
            if "Started" in seen and not doc["Events"]:
                seen["gone"] = t
    assert len(ids) == 1
    slack = 0.1  # request latency on a shared machine; the server itself adds none
    assert abs((seen["Started"] - seen["Scheduled"]) - 900 / speed) < slack, seen
    assert abs((seen["gone"] - seen["Started"]) - 300 / speed) < slack, seen
    assert not_before is not None
    started_at = seen["started_wall"]
    assert not_before.timestamp() <= started_at  # never after Started
    assert timedelta(seconds=started_at - not_before.timestamp()) < timedelta(seconds=1 + slack)
