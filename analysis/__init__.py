"""Timing statistics and plots over the trace dataset (pandas, matplotlib: the analysis extra).

- `dataset`: the dataset's rows as Arrow batches, read in parallel.
- `timings`: each event's phases and the per-scenario statistics.
- `plots`: one trace's timeline and the distributions, as matplotlib figures.

May import: replay.errors, replay.core, replay.store. This module itself stays free of pandas,
so the CLI can name its choices without loading the extra.
"""

from __future__ import annotations

from enum import StrEnum


class Stat(StrEnum):
    """A statistic of a phase's durations."""

    median = "median"
    mean = "mean"
    min = "min"
    max = "max"
    p90 = "p90"
    p99 = "p99"
