"""A fleet's ticker at the exact deadline: every transition of every VM pushed on time."""

from __future__ import annotations

from typing import Any

import pytest

from replay.clock import FakeClock
from replay.core.fleet import parse_fleet, plan_fleet
from replay.playback.anchor import Start
from replay.playback.fleet import Fleet, FleetOptions
from tests.helpers import simple_trace
from tests.test_ticker_deadline import exactly, settle

FLEET = {
    "group": [{"name": "web", "trace": "t1", "rollout": "together"}],
    "vm": [{"name": "web-0", "address": "127.0.0.10", "group": "web"}],
}


@pytest.mark.parametrize("speed", [0.37, 3.3, 7.3, 13, 60, 240, 1000])
@pytest.mark.parametrize("start", [1000.0, 12345.678, 98765.4321])
async def test_each_fleet_transition_is_pushed_at_its_deadline(speed: float, start: float) -> None:
    clock = FakeClock(start=start)
    trace = simple_trace()
    plan = plan_fleet(parse_fleet(FLEET), lambda _: trace)
    fleet = Fleet(plan, clock, FleetOptions(speed=speed, start=Start.now))
    pushed: list[Any] = []
    fleet.vms["web-0"].listeners.add(pushed.append)
    fleet.subscribers.add(pushed.append)
    fleet.start_ticker()
    await settle()
    try:
        for offset, snap in zip(trace.offsets[1:], trace.snapshots[1:], strict=True):
            exactly(clock, fleet.mono_of(offset))
            await settle()
            assert pushed, f"nothing pushed at {offset} s"
            assert f'"DocumentIncarnation":{snap.incarnation}' in pushed[-1].body.decode()
        assert len(pushed) == len(trace.snapshots) - 1
    finally:
        fleet.stop()
