"""Speed factors as users write them: `60`, `60x`, `dev`, `200%`."""

from __future__ import annotations

import re

from replay.core.reference import dev_speed
from replay.errors import SpeedError

MIN_SPEED = 0.001
SPEED_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(x|%)?\s*$", re.IGNORECASE)


def parse_speed(text: str | float) -> float:
    """A speed factor from `60`, `60x`, `dev` (the reference dev speed) or `200%` (= 2)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    elif isinstance(text, str) and text.strip().lower() == "dev":
        value = dev_speed()
    else:
        match = SPEED_RE.match(text) if isinstance(text, str) else None
        if not match:
            raise SpeedError(
                f"speed {text!r} is not understood; use a factor like 60 or 60x, 'dev' "
                "(= 60), or a percentage like 200%"
            )
        value = float(match.group(1)) / (100 if match.group(2) == "%" else 1)
    if not MIN_SPEED <= value <= 1_000_000:
        # Slower, a trace's end lies past the year 9999 and its NotBefore cannot be written.
        raise SpeedError(f"speed {text!r} must be at least {MIN_SPEED:g}x and at most 1000000x")
    return value
