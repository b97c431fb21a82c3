"""Synthetic traces: determinism, requested statistics, scenario shapes, episodes, resampling."""

from __future__ import annotations

import itertools
import random
import statistics
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from replay.cli import app
from replay.core.reference import reference_table
from replay.core.timeline import Lifecycle, Trace, parse_rfc1123, validate
from replay.errors import ReplayError
from replay.recording.synth import (
    SYNTH_STARTED_AT,
    Normal,
    SynthOptions,
    parse_normal,
    plan,
    synth_trace,
    synth_traces,
)
from replay.recording.synth_write import write_synth
from replay.store.dataset import scan, write_bundle, write_trace
from replay.store.files import read_file
from tests.helpers import event, trace_of

runner = CliRunner()


def phases(lc: Lifecycle) -> dict[str, float]:
    """The module docstring's phase definitions, computed from a lifecycle."""
    out: dict[str, float] = {}
    assert lc.gone_s is not None
    if lc.scheduled_s is not None:
        assert lc.not_before_s is not None
        out["notice"] = lc.not_before_s - lc.scheduled_s
        out["scheduled"] = (
            lc.started_s if lc.started_s is not None else lc.gone_s
        ) - lc.scheduled_s
    if lc.started_s is not None:
        out["started"] = lc.gone_s - lc.started_s
    return out


def all_phases(traces: list[Trace]) -> list[dict[str, float]]:
    return [phases(lc) for t in traces for lc in t.lifecycles.values()]


def lifecycles(traces: list[Trace]) -> list[list[Lifecycle]]:
    return [list(t.lifecycles.values()) for t in traces]


def test_same_seed_gives_byte_identical_files_in_one_process_or_several(tmp_path: Path) -> None:
    options = SynthOptions("live-migration", 12, seed=7, notice=Normal(900, 120), per_file=5)
    a = write_synth(plan(options), tmp_path / "a", jobs=1)
    done: list[int] = []
    b = write_synth(plan(options), tmp_path / "b", progress=done.append, jobs=2)
    assert done == sorted(done) and done[-1] == 12
    assert [p.name for p in a.paths] == [
        "synth-live-migration-s7-part0000.parquet",
        "synth-live-migration-s7-part0001.parquet",
        "synth-live-migration-s7-part0002.parquet",
    ]
    assert [p.read_bytes() for p in a.paths] == [p.read_bytes() for p in b.paths]
    back = [t for p in a.paths for t in read_file(p)]
    assert lifecycles(back) == lifecycles(list(synth_traces(plan(options))))


def test_different_seeds_differ_and_trace_i_does_not_depend_on_count() -> None:
    options = SynthOptions("host-maintenance", 30, seed=1, scheduled=Normal(900, 300))
    one = all_phases(list(synth_traces(plan(options))))
    other = all_phases(list(synth_traces(plan(replace(options, seed=2)))))
    assert one != other
    fewer = all_phases(list(synth_traces(plan(replace(options, count=10)))))
    assert fewer == one[:10]


def test_medians_of_2000_events_are_close_to_the_requested_means() -> None:
    requested = {
        "notice": Normal(900, 120),
        "scheduled": Normal(600, 90),
        "started": Normal(300, 60),
    }
    options = SynthOptions("live-migration", 2000, seed=3, **requested)
    measured = all_phases(list(synth_traces(plan(options))))
    assert len(measured) == 2000
    for phase, normal in requested.items():
        values = [m[phase] for m in measured]
        # The median's standard error is 1.25 std / sqrt(n), about 3.4 s for std 120.
        assert abs(statistics.median(values) - normal.mean_s) < 0.03 * normal.mean_s, phase
        assert abs(statistics.stdev(values) - normal.std_s) < 0.1 * normal.std_s, phase


def test_phases_not_given_are_the_reference_values() -> None:
    row = reference_table()["spot-eviction"]
    traces = list(synth_traces(plan(SynthOptions("spot-eviction", 20, started=Normal(60, 20)))))
    measured = all_phases(traces)
    assert {m["notice"] for m in measured} == {row.notice_s}
    assert {m["scheduled"] for m in measured} == {row.scheduled_s}
    assert len({m["started"] for m in measured}) > 1


def test_truncation_resamples_instead_of_clipping() -> None:
    rng = random.Random(0)
    draws = [Normal(0.0, 10.0).draw(rng) for _ in range(10_000)]
    assert min(draws) > 0  # clipping would put half of them exactly at 0
    assert statistics.median(draws) == pytest.approx(6.74, abs=0.5)  # half-normal: 0.674 std


def test_truncated_phases_are_never_negative_and_states_last_a_second() -> None:
    options = SynthOptions(
        "live-migration", 500, notice=Normal(2, 30), scheduled=Normal(1, 30), started=Normal(0, 5)
    )
    traces = list(synth_traces(plan(options)))
    for t in traces:
        validate(t)
    measured = all_phases(traces)
    assert min(m["notice"] for m in measured) >= 0
    assert min(m["scheduled"] for m in measured) >= 1
    assert min(m["started"] for m in measured) >= 1
    assert all(len(m) == 3 for m in measured)  # every event is seen Scheduled and Started


def test_times_are_whole_seconds_and_not_before_lands_exactly() -> None:
    for t in synth_traces(plan(SynthOptions("terminate", 50, notice=Normal(300.4, 77.7)))):
        assert t.started_at is not None and t.started_at.microsecond == 0
        assert all(s.offset_s == int(s.offset_s) for s in t.snapshots)
        (lc,) = t.lifecycles.values()
        # NotBefore is rendered in whole seconds: a whole-second notice survives the rendering.
        assert lc.not_before_s is not None and lc.scheduled_s is not None
        notice_s = lc.not_before_s - lc.scheduled_s
        assert notice_s == int(notice_s) and notice_s >= 0
        assert parse_rfc1123(lc.event["NotBefore"]).microsecond == 0
    first, second = (
        synth_trace(plan(SynthOptions("terminate", 2)), 0),
        synth_trace(plan(SynthOptions("terminate", 2)), 1),
    )
    assert first.started_at == SYNTH_STARTED_AT
    assert second.started_at is not None and first.started_at is not None
    assert (second.started_at - first.started_at).total_seconds() == 60


@pytest.mark.parametrize("scenario", list(reference_table()))
def test_event_fields_and_shape_follow_the_scenario(scenario: str) -> None:
    row = reference_table()[scenario]
    t = validate(synth_trace(plan(SynthOptions(scenario, 1, seed=5)), 0))
    assert (t.origin, t.scenario, t.source["seed"], t.source["index"]) == (
        "synthetic",
        scenario,
        5,
        0,
    )
    (lc,) = t.lifecycles.values()
    e = lc.event
    assert (e["EventType"], e["EventSource"], e["Description"], e["DurationInSeconds"]) == (
        row.event_type,
        row.event_source,
        row.description,
        row.duration_in_seconds,
    )
    if scenario == "host-failure":
        assert (lc.scheduled_s, lc.not_before_s, e["EventStatus"]) == (None, None, "Started")
        assert phases(lc) == {"started": row.started_s}
    elif scenario == "canceled-maintenance":
        assert lc.started_s is None
        assert phases(lc) == {
            "notice": row.notice_s,
            "scheduled": row.removed_while_scheduled_after_s,
        }
    else:
        assert phases(lc) == {
            "notice": row.notice_s,
            "scheduled": row.scheduled_s,
            "started": row.started_s,
        }


def test_multi_event_episodes_validate_overlap_and_merge_simultaneous_changes() -> None:
    options = SynthOptions("live-migration", 200, seed=11, events_per_episode=4, mean_gap_s=200)
    traces = [validate(t) for t in synth_traces(plan(options))]
    assert all(t.event_count == 4 for t in traces)
    assert max(len(s.events) for t in traces for s in t.snapshots) >= 3  # they overlap
    for t in traces:
        incarnations = [s.incarnation for s in t.snapshots]
        assert incarnations == list(range(1, len(incarnations) + 1))
        changes = set()
        for lc in t.lifecycles.values():
            changes |= {lc.first_seen_s, lc.gone_s} | ({lc.started_s} - {None})
        assert len(t.snapshots) == len(changes) + 1  # one document per distinct moment
    merged = sum(len(t.snapshots) - 1 < 3 * t.event_count for t in traces)
    assert merged > 0  # some changes of different events fell on the same second


def test_arrivals_form_a_poisson_process_with_the_mean_gap() -> None:
    options = SynthOptions("live-migration", 400, events_per_episode=6, mean_gap_s=120)
    gaps = []
    for t in synth_traces(plan(options)):
        arrivals = [lc.first_seen_s for lc in t.lifecycles.values()]
        assert arrivals[0] == 30
        gaps += [b - a for a, b in itertools.pairwise(arrivals)]
    assert statistics.mean(gaps) == pytest.approx(120, rel=0.08)
    assert statistics.median(gaps) == pytest.approx(120 * 0.693, rel=0.1)  # exponential


def _captured(tmp_path: Path) -> Path:
    """A small captured dataset: three host-maintenance episodes with known phases."""
    traces_dir = tmp_path / "traces"
    # (first seen, notice, scheduled, started) per episode; NotBefore lands at seen + notice.
    for i, (seen, notice, sched, started) in enumerate([(10, 600, 500, 40), (5, 300, 320, 90)]):
        steps = [
            (0.0, []),
            (float(seen), [event(not_before_s=seen + notice, duration=9 + i)]),
            (float(seen + sched), [event(status="Started", duration=9 + i)]),
            (float(seen + sched + started), []),
        ]
        write_trace(trace_of(steps, name=f"cap-{i}", scenario="host-maintenance"), traces_dir)
    canceled = [(0.0, []), (20.0, [event("E9", not_before_s=920)]), (500.0, [])]
    write_trace(trace_of(canceled, name="cap-2", scenario="host-maintenance"), traces_dir)
    reference = trace_of(
        [(0.0, []), (1.0, [event("R")]), (2.0, [])], name="ref", origin="reference"
    )
    write_trace(replace(reference, scenario="host-maintenance"), traces_dir)
    return traces_dir


def test_from_traces_resamples_captured_events_jointly(tmp_path: Path) -> None:
    from replay.recording.synth import captured_samples

    traces_dir = _captured(tmp_path)
    samples, problems = captured_samples(traces_dir, "host-maintenance")
    assert problems == [] and len(samples) == 3  # the reference trace is not a capture
    options = SynthOptions("host-maintenance", 300, seed=2)
    traces = list(synth_traces(plan(options, samples)))
    seen = {
        (tuple(sorted(phases(lc).items())), lc.event["DurationInSeconds"])
        for t in traces
        for lc in t.lifecycles.values()
    }
    assert seen == {
        ((("notice", 600.0), ("scheduled", 500.0), ("started", 40.0)), 9),
        ((("notice", 300.0), ("scheduled", 320.0), ("started", 90.0)), 10),
        ((("notice", 900.0), ("scheduled", 480.0)), 5),
    }
    assert traces[0].source["from_traces"] == {"events": 3}
    # A phase given on the command line replaces the resampled one.
    given = plan(replace(options, started=Normal(1000, 0)), samples)
    assert {
        phases(lc).get("started", 1000) for t in synth_traces(given) for lc in t.lifecycles.values()
    } == {1000}


def test_from_traces_without_captured_events_says_what_to_do(tmp_path: Path) -> None:
    traces_dir = _captured(tmp_path)
    args = ["synth", "--scenario", "terminate", "--count", "3", "--from-traces"]
    result = runner.invoke(app, [*args, "--traces-dir", str(traces_dir)])
    assert result.exit_code == 2
    assert "no captured events of scenario 'terminate'" in result.stderr
    assert "ingest captures first" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "canceled-maintenance", "--started", "60:5"], "have no started phase"),
        (["--scenario", "host-failure", "--notice", "60:5"], "drop --notice"),
        (["--scenario", "my-drill", "--notice", "60:5"], "give --scheduled, --started too"),
        (["--scenario", "live-migration", "--notice", "60"], "must be MEAN:STD"),
        (["--scenario", "live-migration", "--notice", "-5:1"], "finite and >= 0"),
        (
            ["--scenario", "live-migration", "--mean-gap", "0"],
            "--mean-gap must be a positive number of seconds",
        ),
        (["--scenario", "../x"], "scenario '../x' must be"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["synth", "--count", "2", "--traces-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_unknown_scenario_with_every_phase_given_uses_generic_fields() -> None:
    options = SynthOptions(
        "my-drill", 3, notice=Normal(60, 0), scheduled=Normal(60, 0), started=Normal(5, 0)
    )
    (lc,) = synth_trace(plan(options), 0).lifecycles.values()
    assert lc.event["Description"] == "synthetic my-drill event"
    assert phases(lc) == {"notice": 60, "scheduled": 60, "started": 5}


def test_rerun_with_the_same_seed_replaces_its_files_and_removes_stale_ones(tmp_path: Path) -> None:
    options = SynthOptions("user-reboot", 9, per_file=4)
    first = write_synth(plan(options), tmp_path)
    again = write_synth(plan(options), tmp_path)
    assert first.paths == again.paths and again.removed == []
    smaller = write_synth(plan(replace(options, count=5)), tmp_path)
    assert [p.name for p in smaller.removed] == ["synth-user-reboot-s0-part0002.parquet"]
    good, bad = scan(tmp_path)
    assert (len(good), bad) == (5, [])
    write_synth(plan(replace(options, seed=1)), tmp_path)  # another seed adds, never replaces
    assert len(scan(tmp_path)[0]) == 14
    # A bundle that only looks like this run's is not this run's to remove.
    lookalike = trace_of([(0.0, []), (1.0, [event()]), (2.0, [])], name="kept")
    write_bundle(
        [replace(lookalike, scenario="user-reboot")], tmp_path, "synth-user-reboot-s0-part0009"
    )
    assert write_synth(plan(replace(options, count=2)), tmp_path).removed == [
        tmp_path / "scenario=user-reboot" / "synth-user-reboot-s0-part0001.parquet"
    ]
    assert "kept" in {i.name for i in scan(tmp_path)[0]}


def test_names_used_by_another_file_are_refused(tmp_path: Path) -> None:
    options = SynthOptions("user-reboot", 3)
    taken = trace_of([(0.0, []), (1.0, [event()]), (2.0, [])], name="synth-user-reboot-s0-000002")
    write_trace(replace(taken, scenario="terminate"), tmp_path)
    with pytest.raises(ReplayError, match="'synth-user-reboot-s0-000002' is already used by"):
        write_synth(plan(options), tmp_path)


def test_cli_writes_lists_and_shows_synthetic_traces(traces_dir: Path) -> None:
    args = ["synth", "--scenario", "live-migration", "--count", "20", "--seed", "4"]
    args += ["--notice", "900:100", "--events-per-episode", "2", "--mean-gap", "60"]
    args += ["--traces-dir", str(traces_dir), "--format", "json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert (report["traces"], len(report["files"]), report["removed"]) == (20, 1, [])
    listed = orjson.loads(
        runner.invoke(app, ["traces", "--traces-dir", str(traces_dir), "--format", "json"]).stdout
    )
    synthetic = [r for r in listed if r["origin"] == "synthetic"]
    assert len(synthetic) == 20 and len(listed) == 29
    assert {r["events"] for r in synthetic} == {2}
    show = ["show", "synth-live-migration-s4-000019", "--traces-dir", str(traces_dir)]
    before = runner.invoke(app, [*show, "--format", "json"]).stdout
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, [*show, "--format", "json"]).stdout == before
    assert orjson.loads(before)["origin"] == "synthetic"
    table = runner.invoke(app, args[:-2])
    assert "wrote 20 synthetic live-migration traces (seed 4) in 1 file under" in table.stdout


def test_parse_normal_reads_mean_and_std() -> None:
    assert parse_normal("900:120.5") == Normal(900.0, 120.5)
    assert parse_normal("0:0") == Normal(0.0, 0.0)
    with pytest.raises(ReplayError, match="--notice 'nan:1'"):
        parse_normal("nan:1", "--notice")
