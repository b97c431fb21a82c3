"""Faults on purpose: playbooks of IMDS failures in trace-time windows, rate limits, warm-up.

A playbook is a JSON list of windows in trace seconds, each with exactly one effect:
`{"from_s": 120, "to_s": 180, "status": 500}`, `{"delay_ms": 2000}`, `{"drop": true}` or
`{"truncate": true}`, and an optional `probability` (default 1). Draws come from a seeded
random generator, so a run is reproducible.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from replay.errors import ReplayError

FAULT_STATUSES = (410, 429, 500, 503)
EFFECTS = ("status", "delay_ms", "drop", "truncate")


class PlaybookError(ReplayError):
    """A fault playbook that cannot be used; the message names the window and the field."""


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """Requests whose session is between from_s and to_s (trace seconds) get this effect."""

    from_s: float
    to_s: float
    effect: str
    """One of status, delay_ms, drop, truncate."""
    value: float = 0.0
    """The status code or the delay in milliseconds."""
    probability: float = 1.0

    def describe(self) -> str:
        shown = {"status": f"status {self.value:g}", "delay_ms": f"delay {self.value:g} ms"}
        return shown.get(self.effect, self.effect)


def _number(window: dict[str, Any], key: str, where: str) -> float:
    value = window.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlaybookError(f"{where}: {key!r} must be a number of seconds, got {value!r}")
    return float(value)


def parse_playbook(data: Any, source: str = "playbook") -> tuple[FaultWindow, ...]:
    """Validate a playbook (parsed JSON); errors say which window and what is wrong."""
    if not isinstance(data, list):
        raise PlaybookError(f"{source}: a playbook is a JSON list of windows")
    windows = []
    for i, window in enumerate(data):
        where = f"{source}: window {i}"
        if not isinstance(window, dict):
            raise PlaybookError(f"{where}: must be an object")
        unknown = set(window) - {"from_s", "to_s", "probability", *EFFECTS}
        if unknown:
            raise PlaybookError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        start, end = _number(window, "from_s", where), _number(window, "to_s", where)
        if not 0 <= start < end:
            raise PlaybookError(f"{where}: needs 0 <= from_s < to_s, got {start:g} and {end:g}")
        effects = [k for k in EFFECTS if k in window]
        if len(effects) != 1:
            raise PlaybookError(f"{where}: give exactly one of {', '.join(EFFECTS)}")
        effect = effects[0]
        value = 0.0
        if effect == "status":
            if window["status"] not in FAULT_STATUSES or isinstance(window["status"], bool):
                allowed = ", ".join(map(str, FAULT_STATUSES))
                raise PlaybookError(f"{where}: 'status' must be one of {allowed}")
            value = float(window["status"])
        elif effect == "delay_ms":
            value = _number(window, "delay_ms", where)
            if not 0 < value <= 600_000:
                raise PlaybookError(f"{where}: 'delay_ms' must be above 0 and at most 600000")
        elif window[effect] is not True:
            raise PlaybookError(f"{where}: {effect!r} must be true")
        probability = window.get("probability", 1)
        if isinstance(probability, bool) or not isinstance(probability, int | float):
            raise PlaybookError(f"{where}: 'probability' must be a number from 0 to 1")
        if not 0 <= probability <= 1:
            raise PlaybookError(f"{where}: 'probability' must be from 0 to 1")
        windows.append(FaultWindow(start, end, effect, value, float(probability)))
    return tuple(windows)


def load_playbook(path: Path) -> tuple[FaultWindow, ...]:
    """Read and validate a playbook file; errors name the file."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise PlaybookError(f"{path}: cannot read the playbook: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise PlaybookError(f"{path}: not JSON: {exc}") from None
    return parse_playbook(data, str(path))


@dataclass
class FaultPlan:
    """A playbook in force on a session, with its own seeded draws."""

    windows: Sequence[FaultWindow]
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self, offset_s: float) -> FaultWindow | None:
        """The fault for a request at this trace offset, if any (the first window that fires)."""
        for window in self.windows:
            if window.from_s <= offset_s < window.to_s and (
                window.probability >= 1 or self._rng.random() < window.probability
            ):
                return window
        return None


class RateLimiter:
    """At most `limit` requests per second per client address (a sliding one-second window)."""

    def __init__(self, limit: int, *, max_clients: int = 100_000) -> None:
        if limit < 1:
            raise ReplayError(f"--rate-limit must be at least 1 request per second, got {limit}")
        self.limit = limit
        self.max_clients = max_clients
        self._seen: dict[str, deque[float]] = {}
        self.refused = 0

    def allow(self, client: str, now: float) -> bool:
        """Count a request at monotonic time `now`; False when it is one too many."""
        times = self._seen.get(client)
        if times is None:
            if len(self._seen) >= self.max_clients:
                self._forget(now)
            times = self._seen[client] = deque()
        while times and times[0] <= now - 1.0:
            times.popleft()
        if len(times) >= self.limit:
            self.refused += 1
            return False
        times.append(now)
        return True

    def _forget(self, now: float) -> None:
        for client in [c for c, t in self._seen.items() if not t or t[-1] <= now - 1.0]:
            del self._seen[client]
