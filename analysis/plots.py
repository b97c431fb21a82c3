"""The figures the notebooks and the CLI show: one trace's timeline, and phase distributions.

Figures are built with matplotlib's object API (no pyplot, no display): they render with Agg
when saved, and a notebook shows them inline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.timings import PHASES
from replay.core.timeline import Trace
from replay.errors import ReplayError
from replay.store.files import write_atomic

STATE_COLORS = {"Scheduled": "#f2b134", "Started": "#d1495b"}
NOT_BEFORE_COLOR = "#1d3557"
APPROVAL_COLOR = "#2a9d8f"
FORMATS = ("png", "svg", "pdf")
MAX_POINTS = 400
"""Points drawn per scenario and phase over each box (a seeded sample when there are more)."""


def trace_figure(trace: Trace) -> Figure:
    """One row per event: a bar per document it appears in, coloured by state; trace seconds.

    Diamonds mark each NotBefore shown while Scheduled (on the trace's axis); triangles mark
    the capturing VM's approvals.
    """
    ids = list(trace.event_ids)
    fig = Figure(figsize=(10, 1.6 + 0.55 * max(len(ids), 1)), layout="constrained")
    ax = fig.add_subplot()
    row = {eid: i for i, eid in enumerate(ids)}
    offsets = trace.offsets
    for k, snap in enumerate(trace.snapshots):
        end = offsets[k + 1] if k + 1 < len(offsets) else snap.offset_s
        for event in snap.events:
            y = row[event["EventId"]]
            status = event["EventStatus"]
            color = STATE_COLORS.get(status, "grey")
            ax.barh(y, end - snap.offset_s, left=snap.offset_s, height=0.5, color=color)
            not_before = trace.not_before_offset(event["NotBefore"])
            if status == "Scheduled" and not_before is not None:
                ax.plot(not_before, y, marker="D", color=NOT_BEFORE_COLOR, markersize=7)
    for approval in trace.approvals:
        for eid in approval.event_ids:
            if eid in row:
                ax.plot(approval.offset_s, row[eid] - 0.38, marker="^", color=APPROVAL_COLOR)
    ax.set_yticks(range(len(ids)), [_short(eid) for eid in ids])
    ax.set_ylim(len(ids) - 0.5, -0.5)
    ax.set_xlim(0, max(trace.duration_s, 1.0) * 1.02)
    ax.set_xlabel("trace seconds")
    ax.set_title(f"{trace.name} ({trace.scenario}, {trace.origin})", loc="left")
    ax.grid(axis="x", alpha=0.3)
    handles: list[Artist] = [Patch(color=c, label=s) for s, c in STATE_COLORS.items()]
    handles.append(_marker("D", NOT_BEFORE_COLOR, "NotBefore"))
    handles.append(_marker("^", APPROVAL_COLOR, "approved"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return fig


def _short(event_id: str) -> str:
    return event_id if len(event_id) <= 13 else f"{event_id[:8]}…"


def _marker(marker: str, color: str, label: str) -> Line2D:
    return Line2D([], [], marker=marker, color=color, linestyle="", label=label)


def distributions_figure(
    events: pd.DataFrame,
    phases: Sequence[str] = PHASES,
    *,
    reference: pd.DataFrame | None = None,
    title: str | None = None,
) -> Figure:
    """A box plot per scenario for each phase (seconds), with a sample of the events over it.

    events has one row per event (analysis.timings.load_events); reference, if given, has one
    row per scenario with the phase columns, drawn as a red tick (e.g. the reference medians).
    """
    scenarios = sorted(events["scenario"].astype(str).unique())
    fig = Figure(figsize=(3.2 * len(phases), 1.4 + 0.45 * max(len(scenarios), 1)))
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, len(phases), sharey=True, squeeze=False)[0]
    rng = np.random.default_rng(0)
    by_scenario = dict(list(events.groupby(events["scenario"].astype(str))))
    for ax, phase in zip(axes, phases, strict=True):
        values = [by_scenario[s][phase].dropna().to_numpy(dtype=float) for s in scenarios]
        drawn = [(i, v) for i, v in enumerate(values) if len(v)]
        if drawn:
            ax.boxplot(
                [v for _, v in drawn],
                positions=[i for i, _ in drawn],
                orientation="horizontal",
                widths=0.6,
                showfliers=False,
                medianprops={"color": "black"},
            )
        for i, v in drawn:
            sample = v if len(v) <= MAX_POINTS else rng.choice(v, MAX_POINTS, replace=False)
            jitter = rng.uniform(-0.18, 0.18, len(sample))
            ax.scatter(sample, i + jitter, s=6, alpha=0.4, color="#457b9d", linewidths=0)
        if reference is not None and phase in reference:
            ref = reference.set_index(reference["scenario"].astype(str))[phase]
            for i, s in enumerate(scenarios):
                if s in ref.index and pd.notna(ref[s]):
                    ax.plot(ref[s], i, marker="|", color="#d62828", markersize=16, mew=2)
        ax.set_title(phase, loc="left")
        ax.set_xlabel("seconds")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(scenarios)), scenarios)
    axes[0].set_ylim(len(scenarios) - 0.5, -0.5)
    if title:
        fig.suptitle(title, x=0.01, ha="left")
    return fig


def check_figure_path(path: Path) -> str:
    """The image format of path (png, svg or pdf); ReplayError if unknown or no such folder."""
    kind = path.suffix.lower().lstrip(".")
    if kind not in FORMATS:
        raise ReplayError(
            f"cannot draw {path}: the file must end in {', '.join('.' + f for f in FORMATS)}"
        )
    if not path.parent.is_dir():
        raise ReplayError(f"cannot write {path}: folder {path.parent} does not exist")
    return kind


def save_figure(fig: Figure, path: Path) -> Path:
    """Write fig atomically as PNG, SVG or PDF (by the file's suffix); return the path."""
    kind = check_figure_path(path)
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format=kind, dpi=110))
    except OSError as exc:
        raise ReplayError(f"cannot write {path}: {exc.strerror}; choose another path") from exc
    return path
