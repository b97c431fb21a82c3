from __future__ import annotations

from typing import Any

import pytest

from replay.core.faults import FaultPlan, FaultWindow, PlaybookError, RateLimiter, parse_playbook


def test_playbook_parses_every_effect() -> None:
    windows = parse_playbook(
        [
            {"from_s": 120, "to_s": 180, "status": 500},
            {"from_s": 300, "to_s": 330, "delay_ms": 2000},
            {"from_s": 400, "to_s": 410, "drop": True, "probability": 0.5},
            {"from_s": 500, "to_s": 510, "truncate": True},
        ]
    )
    assert [(w.effect, w.value, w.probability) for w in windows] == [
        ("status", 500, 1),
        ("delay_ms", 2000, 1),
        ("drop", 0, 0.5),
        ("truncate", 0, 1),
    ]


@pytest.mark.parametrize(
    ("playbook", "problem"),
    [
        ({}, "a JSON list"),
        ([1], "window 0: must be an object"),
        ([{"from_s": 1, "to_s": 2}], "window 0: give exactly one of"),
        ([{"from_s": 1, "to_s": 2, "status": 500, "drop": True}], "exactly one"),
        ([{"from_s": 1, "to_s": 2, "status": 404}], "'status' must be one of 410, 429, 500, 503"),
        ([{"from_s": 5, "to_s": 2, "status": 500}], "from_s < to_s"),
        ([{"from_s": "a", "to_s": 2, "status": 500}], "'from_s' must be a number"),
        ([{"from_s": 1, "to_s": 2, "drop": 1}], "'drop' must be true"),
        ([{"from_s": 1, "to_s": 2, "drop": True, "probability": 2}], "from 0 to 1"),
        ([{"from_s": 1, "to_s": 2, "delay_ms": -5}], "'delay_ms' must be above 0"),
        ([{"from_s": 1, "to_s": 2, "drop": True, "when": 3}], "unknown keys when"),
    ],
)
def test_bad_playbooks_name_the_window_and_field(playbook: Any, problem: str) -> None:
    with pytest.raises(PlaybookError, match=problem):
        parse_playbook(playbook, "faults.json")


def test_windows_fire_inside_their_trace_time_only() -> None:
    plan = FaultPlan(parse_playbook([{"from_s": 120, "to_s": 180, "status": 500}]))
    assert plan.draw(119.999) is None
    assert plan.draw(120) is not None
    assert plan.draw(179.999) is not None
    assert plan.draw(180) is None


def test_probability_draws_are_seeded_and_reproducible() -> None:
    window = [FaultWindow(0, 10, "drop", probability=0.3)]

    def run(seed: int) -> list[bool]:
        plan = FaultPlan(window, seed=seed)
        return [plan.draw(1) is not None for _ in range(200)]

    assert run(7) == run(7)
    assert 30 < sum(run(7)) < 90
    assert run(8) != run(7)


def test_rate_limiter_allows_n_per_second_per_client() -> None:
    limiter = RateLimiter(5)
    burst = [limiter.allow("10.0.0.1", 100.0 + i * 0.01) for i in range(20)]
    assert burst == [True] * 5 + [False] * 15
    assert limiter.allow("10.0.0.2", 100.2)  # another client has its own budget
    assert limiter.allow("10.0.0.1", 101.001)  # a second later the window has moved on
    assert limiter.refused == 15
