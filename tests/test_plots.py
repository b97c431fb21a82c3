"""Figures: one trace's timeline and the phase distributions, written as real images."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from typer.testing import CliRunner

from analysis.plots import distributions_figure, save_figure, trace_figure
from analysis.timings import PHASES, event_phases, load_events, scenario_stats, traces_rows
from replay.cli import app
from replay.core.timeline import Approval, Trace
from replay.errors import ReplayError
from tests.helpers import event, trace_of

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def two_events() -> Trace:
    """E1 Scheduled (NotBefore 300 s, then moved to 400 s) then Started; E2 Started only."""
    return trace_of(
        [
            (0.0, []),
            (10.0, [event("E1", not_before_s=300)]),
            (50.0, [event("E1", not_before_s=400), event("E2", "Started")]),
            (400.0, [event("E1", "Started"), event("E2", "Started")]),
            (500.0, [event("E2", "Started")]),
            (560.0, []),
        ],
        approvals=(Approval(120.0, ("E1",)),),
    )


def assert_image(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 300
    assert float(np.std(pixels[..., :3])) > 0.05  # not a blank canvas


def test_trace_figure_draws_a_bar_per_document_and_state_and_marks(tmp_path: Path) -> None:
    trace = two_events()
    fig = trace_figure(trace)
    (ax,) = fig.axes
    bars = [(p.get_x(), p.get_width(), p.get_y()) for p in ax.patches]
    appearances = sum(len(s.events) for s in trace.snapshots)
    assert len(bars) == appearances
    # E1 (row 0) is Scheduled from 10 s to 400 s in two documents, then Started until 500 s.
    e1 = sorted((x, x + w) for x, w, y in bars if y < 0.5)
    assert e1 == [(10.0, 50.0), (50.0, 400.0), (400.0, 500.0)]
    markers = {(line.get_marker(), tuple(line.get_xdata())) for line in ax.lines}
    assert ("D", (300.0,)) in markers and ("D", (400.0,)) in markers
    assert ("^", (120.0,)) in markers
    assert_image(save_figure(fig, tmp_path / "trace.png"))


def test_distributions_figure_has_a_panel_per_phase(tmp_path: Path) -> None:
    events = load_events()
    reference = scenario_stats(events)
    fig = distributions_figure(events, reference=reference, title="shipped")
    assert [ax.get_title(loc="left") for ax in fig.axes] == list(PHASES)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == sorted(set(events["scenario"]))
    assert_image(save_figure(fig, tmp_path / "phases.png"))
    svg = save_figure(fig, tmp_path / "phases.svg")
    assert svg.read_text().lstrip().startswith("<?xml")


def test_many_events_are_sampled_not_all_drawn() -> None:
    events = event_phases(traces_rows([two_events()]))
    big = events.loc[np.repeat(events.index, 3000)].reset_index(drop=True)
    fig = distributions_figure(big, ["total_s"])
    (ax,) = fig.axes
    assert max(len(c.get_offsets()) for c in ax.collections) <= 400


def test_save_figure_refuses_unknown_formats_and_missing_folders(tmp_path: Path) -> None:
    fig = trace_figure(two_events())
    with pytest.raises(ReplayError, match=r"\.png"):
        save_figure(fig, tmp_path / "trace.jpg")
    with pytest.raises(ReplayError, match="does not exist"):
        save_figure(fig, tmp_path / "missing" / "trace.png")
    assert list(tmp_path.iterdir()) == []


def test_plot_command_writes_a_png(traces_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "lm.png"
    args = ["plot", "live-migration", "--out", str(target), "--traces-dir", str(traces_dir)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert_image(target)
    assert str(target) in result.stdout


def test_plot_command_errors_are_one_line(traces_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "plot",
            "live-migraton",
            "--out",
            str(tmp_path / "x.png"),
            "--traces-dir",
            str(traces_dir),
        ],
    )
    assert result.exit_code == 2 and "did you mean 'live-migration'" in result.stderr
    result = runner.invoke(
        app,
        ["plot", "terminate", "--out", str(tmp_path / "x.gif"), "--traces-dir", str(traces_dir)],
    )
    assert result.exit_code == 2 and ".png" in result.stderr and "Traceback" not in result.output
