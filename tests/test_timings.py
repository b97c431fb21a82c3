"""Timing phases and statistics: vectorised phases against a row-by-row oracle, the CLI, DuckDB."""

from __future__ import annotations

import csv
import io
import math
import random
import shutil
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from analysis.timings import (
    EVENT_COLUMNS,
    PHASES,
    duckdb_sql,
    event_phases,
    load_events,
    scenario_stats,
    to_records,
    traces_rows,
)
from replay.cli import app
from replay.core.reference import reference_table
from replay.core.timeline import Approval, Snapshot, Trace
from replay.errors import InvalidTraceError, ReplayError
from replay.store.dataset import write_bundle, write_trace
from replay.store.footer import BadFile
from tests import strategies
from tests.helpers import T0, event, trace_of

runner = CliRunner()
OFFSETS = ("first_seen", "scheduled", "not_before", "started", "gone", "approved")


def oracle(trace: Trace) -> dict[str, dict[str, Any]]:
    """The phases of each event, row by row from the documents (the README's definitions)."""
    found: dict[str, dict[str, Any]] = {}
    for i, snap in enumerate(trace.snapshots):
        for ev in snap.events:
            r = found.setdefault(
                ev["EventId"],
                {"first_seen": snap.offset_s, "duration": ev["DurationInSeconds"]}
                | dict.fromkeys(("scheduled", "not_before", "started")),
            )
            if ev["EventStatus"] == "Scheduled" and r["scheduled"] is None:
                r["scheduled"] = snap.offset_s
                r["not_before"] = trace.not_before_offset(ev["NotBefore"])
            if ev["EventStatus"] == "Started" and r["started"] is None:
                r["started"] = snap.offset_s
            r["last"] = i
    offsets = trace.offsets
    for eid, r in found.items():
        r["gone"] = offsets[r["last"] + 1] if r["last"] + 1 < len(offsets) else None
        approvals = [a.offset_s for a in trace.approvals if eid in a.event_ids]
        r["approved"] = min(approvals) if approvals else None

    def minus(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    return {
        eid: {
            **{f"{k}_offset_s": r[k] for k in OFFSETS},
            "notice_s": minus(r["not_before"], r["scheduled"]),
            "scheduled_s": minus(r["started"], r["scheduled"]),
            "started_s": minus(r["gone"], r["started"]),
            "total_s": minus(r["gone"], r["first_seen"]),
            "duration_s": None if r["duration"] == -1 else r["duration"],
            "approved": r["approved"] is not None,
            "approval_to_start_s": minus(r["started"], r["approved"]),
        }
        for eid, r in found.items()
    }


def computed(traces: list[Trace]) -> dict[tuple[str, str], dict[str, Any]]:
    """event_phases over the traces' store rows, keyed by (trace, EventId), NaN as None."""
    frame = event_phases(traces_rows(traces))
    assert list(frame.columns) == list(EVENT_COLUMNS)
    out = {}
    for row in frame.to_dict(orient="records"):
        clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        out[(clean.pop("trace"), clean.pop("event_id"))] = clean
    return out


@st.composite
def wild_traces(draw: st.DrawFn, name: str) -> Trace:
    """Traces no validator would pass: events reappear, go back to Scheduled, move NotBefore,
    start already Started, or are still there at the end; approvals in offset order."""
    n_docs = draw(st.integers(1, 7))
    docs = []
    for _ in range(n_docs):
        events = []
        for eid in ("A", "B", "C"):
            status = draw(st.sampled_from([None, None, "Scheduled", "Started"]))
            if status:
                nb = draw(st.integers(0, 5000))
                duration = draw(st.sampled_from([-1, 0, 5, 9]))
                events.append(event(eid, status, not_before_s=nb, duration=duration))
        docs.append(events)
    gaps = draw(st.lists(st.integers(1, 900), min_size=n_docs, max_size=n_docs))
    offsets = [0.0] + [float(sum(gaps[:k])) for k in range(1, n_docs)]
    snaps = tuple(
        Snapshot(o, {"DocumentIncarnation": i, "Events": e})
        for i, (o, e) in enumerate(zip(offsets, docs, strict=True))
    )
    approved = draw(st.lists(st.tuples(st.integers(0, 6000), st.sampled_from("ABC")), max_size=3))
    return Trace(
        name=name,
        scenario=draw(st.sampled_from(["live-migration", "terminate"])),
        snapshots=snaps,
        approvals=tuple(Approval(float(o), (eid,)) for o, eid in sorted(approved)),
        started_at=draw(st.sampled_from([T0, T0, None])),
        origin="captured",
    )


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(*(wild_traces(f"t{i}") for i in range(n)))))
def test_phases_match_a_row_by_row_oracle(traces: tuple[Trace, ...]) -> None:
    got = computed(list(traces))
    want = {
        (t.name, eid): {"scenario": t.scenario} | phases
        for t in traces
        for eid, phases in oracle(t).items()
    }
    assert got == want


@settings(max_examples=60, deadline=None)
@given(strategies.traces())
def test_offsets_agree_with_trace_lifecycles(trace: Trace) -> None:
    got = computed([trace])
    for eid, lc in trace.lifecycles.items():
        row = got[(trace.name, eid)]
        assert row["first_seen_offset_s"] == lc.first_seen_s
        assert row["scheduled_offset_s"] == lc.scheduled_s
        assert row["started_offset_s"] == lc.started_s
        assert row["gone_offset_s"] == lc.gone_s
        assert row["not_before_offset_s"] == lc.not_before_s
        assert row["approved_offset_s"] == lc.approved_s


@settings(max_examples=30, deadline=None)
@given(st.lists(strategies.traces(), min_size=1, max_size=3), st.randoms())
def test_row_order_does_not_change_the_phases(traces: list[Trace], rnd: random.Random) -> None:
    traces = [replace(t, name=f"t{i}") for i, t in enumerate(traces)]
    rows = traces_rows(traces)
    order = list(range(rows.num_rows))
    rnd.shuffle(order)
    key = ["trace", "event_id"]
    a = event_phases(rows).sort_values(key).reset_index(drop=True)
    b = event_phases(rows.take(order)).sort_values(key).reset_index(drop=True)
    assert a.equals(b)


def test_one_event_id_in_two_traces_is_two_events() -> None:
    steps = [(0.0, []), (10.0, [event("E1")]), (40.0, [])]
    later = [(0.0, []), (20.0, [event("E1")]), (30.0, [event("E1", "Started")]), (90.0, [])]
    frame = event_phases(traces_rows([trace_of(steps, name="vm1"), trace_of(later, name="vm2")]))
    assert frame.set_index("trace")["total_s"].to_dict() == {"vm1": 30.0, "vm2": 70.0}


def test_a_reappearing_event_ends_with_its_last_disappearance() -> None:
    steps = [(0.0, []), (10.0, [event()]), (20.0, []), (30.0, [event("E1", "Started")]), (95.0, [])]
    (row,) = event_phases(traces_rows([trace_of(steps)])).to_dict(orient="records")
    assert (row["total_s"], row["started_s"], row["scheduled_s"]) == (85.0, 65.0, 20.0)


def test_an_unplaceable_not_before_leaves_notice_null() -> None:
    trace = trace_of([(0.0, []), (10.0, [event()]), (50.0, [])])
    unknown_start = replace(trace, started_at=None)
    (row,) = event_phases(traces_rows([unknown_start])).to_dict(orient="records")
    assert math.isnan(row["notice_s"]) and row["total_s"] == 40.0


def test_approval_to_start_and_unknown_duration() -> None:
    steps = [(0.0, []), (10.0, [event(duration=-1)]), (70.0, [event("E1", "Started")]), (90.0, [])]
    trace = trace_of(steps, approvals=(Approval(55.0, ("E1",)),))
    (row,) = event_phases(traces_rows([trace])).to_dict(orient="records")
    assert row["approved"] is True and row["approval_to_start_s"] == 15.0
    assert math.isnan(row["duration_s"])


def captured(i: int, rng: random.Random, scenario: str = "live-migration") -> Trace:
    """A captured trace with one or two events and jittered phases."""
    steps: list[tuple[float, list[dict[str, Any]]]] = [(0.0, [])]
    t = float(rng.randint(1, 60))
    ids = [f"C{i}-{k}" for k in range(rng.randint(1, 2))]
    notice = {eid: rng.randint(300, 1200) for eid in ids}
    steps.append((t, [event(e, not_before_s=t + notice[e], duration=9) for e in ids]))
    t += rng.randint(200, 1000)
    steps.append((t, [event(e, "Started", duration=9) for e in ids]))
    t += rng.randint(30, 600)
    steps.append((t, []))
    approvals = (Approval(t - 1, (ids[0],)),) if rng.random() < 0.5 else ()
    return trace_of(steps, name=f"cap-{i}", scenario=scenario, approvals=approvals)


def cli_json(*args: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["timings", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = orjson.loads(result.stdout)
    return rows


def test_json_medians_over_the_shipped_traces_equal_the_reference_table(traces_dir: Path) -> None:
    rows = cli_json("--traces-dir", str(traces_dir))
    table = reference_table()
    assert [r["scenario"] for r in rows] == sorted(table)
    for r in rows:
        ref = table[r["scenario"]]
        assert list(r) == ["scenario", "events", *PHASES]
        assert r == {
            "scenario": ref.scenario,
            "events": 1,
            "notice_s": ref.notice_s,
            "scheduled_s": ref.scheduled_s,
            "started_s": ref.started_s,
            "total_s": ref.total_s,
            "duration_s": None if ref.duration_in_seconds == -1 else ref.duration_in_seconds,
        }


def test_json_gives_the_true_medians_of_new_captures(traces_dir: Path) -> None:
    rng = random.Random(5)
    traces = [captured(i, rng) for i in range(7)]
    for t in traces:
        write_trace(t, traces_dir)
    (row,) = cli_json("--traces-dir", str(traces_dir), "--origin", "captured")
    phases = [p for t in traces for p in oracle(t).values()]
    assert row["events"] == len(phases)
    for phase in PHASES:
        assert row[phase] == statistics.median(p[phase] for p in phases), phase
    everything = cli_json("--traces-dir", str(traces_dir), "--scenario", "live-migration")
    assert everything[0]["events"] == len(phases) + 1


@pytest.mark.parametrize("stats", [["median", "p90"], ["p99"], ["mean", "min", "max"]])
def test_stats_follow_the_statistics_module(stats: list[str]) -> None:
    traces = [
        captured(i, random.Random(i), scenario=["terminate", "live-migration"][i % 2])
        for i in range(9)
    ]
    frame = scenario_stats(event_phases(traces_rows(traces)), stats)
    records = to_records(frame)
    assert [r["scenario"] for r in records] == ["live-migration", "terminate"]
    suffixed = [f"{p}" if s == "median" else f"{p}_{s}" for p in PHASES for s in stats]
    for r in records:
        assert list(r) == ["scenario", "events", *suffixed]
        values = {
            p: [o[p] for t in traces if t.scenario == r["scenario"] for o in oracle(t).values()]
            for p in PHASES
        }
        for phase, vs in values.items():
            want = {
                "median": statistics.median(vs),
                "mean": statistics.fmean(vs),
                "min": min(vs),
                "max": max(vs),
                "p90": statistics.quantiles(vs, n=100, method="inclusive")[89],
                "p99": statistics.quantiles(vs, n=100, method="inclusive")[98],
            }
            for s in stats:
                key = phase if s == "median" else f"{phase}_{s}"
                assert r[key] == pytest.approx(want[s]), key


def test_an_unknown_statistic_is_a_user_error() -> None:
    with pytest.raises(ReplayError, match="p50"):
        scenario_stats(load_events(), ["p50"])
    result = runner.invoke(app, ["timings", "--stat", "p50"])
    assert result.exit_code == 2


def test_scenario_filter_and_unknown_scenario(traces_dir: Path) -> None:
    rows = cli_json(
        "--traces-dir", str(traces_dir), "--scenario", "terminate", "--scenario", "host-failure"
    )
    assert [r["scenario"] for r in rows] == ["host-failure", "terminate"]
    result = runner.invoke(
        app, ["timings", "--traces-dir", str(traces_dir), "--scenario", "live-migraton"]
    )
    assert result.exit_code == 2
    assert "'live-migraton'" in result.stderr and "live-migration" in result.stderr
    assert "Traceback" not in result.output


def test_origin_filter_reads_each_trace_of_a_bundle(traces_dir: Path) -> None:
    rng = random.Random(2)
    mixed = [captured(i, rng, "terminate") for i in range(4)]
    mixed[1] = replace(mixed[1], origin="synthetic")
    write_bundle(mixed, traces_dir, "mixed")
    (row,) = cli_json("--traces-dir", str(traces_dir), "--origin", "synthetic")
    assert row["events"] == len(oracle(mixed[1]))
    assert row["total_s"] == statistics.median(p["total_s"] for p in oracle(mixed[1]).values())
    assert cli_json("--traces-dir", str(traces_dir), "--origin", "reference")[0]["events"] == 1
    assert cli_json("--traces-dir", str(traces_dir / "nowhere")) == []


def test_csv_and_table_show_the_same_numbers(traces_dir: Path) -> None:
    rows = cli_json("--traces-dir", str(traces_dir), "--stat", "median", "--stat", "max")
    result = runner.invoke(
        app,
        [
            "timings",
            "--traces-dir",
            str(traces_dir),
            "--format",
            "csv",
            "--stat",
            "median",
            "--stat",
            "max",
        ],
    )
    assert result.exit_code == 0
    parsed = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [list(r) for r in parsed] == [list(r) for r in rows]
    for got, want in zip(parsed, rows, strict=True):
        assert got == {k: "" if v is None else str(v) for k, v in want.items()}
    table = runner.invoke(app, ["timings", "--traces-dir", str(traces_dir)])
    assert table.exit_code == 0 and "live-migration" in table.stdout and "1200" in table.stdout


def test_a_bad_file_is_skipped_with_a_warning(traces_dir: Path) -> None:
    bad = traces_dir / "scenario=terminate" / "broken.parquet"
    bad.write_bytes(b"PAR1garbage")
    result = runner.invoke(app, ["timings", "--traces-dir", str(traces_dir), "--format", "json"])
    assert result.exit_code == 0
    assert "broken.parquet" in result.stderr
    assert len(orjson.loads(result.stdout)) == 9
    with pytest.raises(InvalidTraceError, match=r"broken\.parquet"):
        load_events(traces_dir)
    skipped: list[BadFile] = []
    assert len(load_events(traces_dir, skipped=skipped)) == 9
    assert [b.path for b in skipped] == [bad]


def test_only_the_needed_columns_are_decoded(
    traces_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[list[str]] = []
    read = pq.ParquetFile.read

    def spy(self: pq.ParquetFile, *args: Any, columns: list[str], **kwargs: Any) -> Any:
        asked.append(columns)
        return read(self, *args, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read", spy)
    load_events(traces_dir)
    assert len(asked) == 9
    assert {c for cols in asked for c in cols} <= {
        "trace",
        "seq",
        "offset_s",
        "event_id",
        "event_status",
        "not_before_offset_s",
        "duration_s",
        "approved_offset_s",
    }


def duckdb_rows(traces_dir: Path) -> list[dict[str, Any]]:
    result = duckdb.sql(duckdb_sql(f"{traces_dir}/**/*.parquet"))
    names = [d[0] for d in result.description]
    return [dict(zip(names, r, strict=True)) for r in result.fetchall()]


def test_duckdb_over_the_shipped_dataset_equals_the_cli(traces_dir: Path) -> None:
    assert duckdb_rows(traces_dir) == cli_json("--traces-dir", str(traces_dir))


def test_duckdb_equals_the_cli_over_captures_and_bundles(traces_dir: Path) -> None:
    rng = random.Random(9)
    for i in range(6):
        write_trace(captured(i, rng, rng.choice(["live-migration", "terminate"])), traces_dir)
    write_bundle(
        [captured(10 + i, rng, "spot-eviction") for i in range(5)], traces_dir, "spot-bundle"
    )
    ours, theirs = cli_json("--traces-dir", str(traces_dir)), duckdb_rows(traces_dir)
    assert [r["scenario"] for r in ours] == [r["scenario"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k]) if a[k] is not None else b[k] is None for k in a)


def test_plot_option_draws_the_distributions(traces_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "phases.png"
    result = runner.invoke(
        app, ["timings", "--traces-dir", str(traces_dir), "--format", "json", "--plot", str(target)]
    )
    assert result.exit_code == 0, result.output
    orjson.loads(result.stdout)  # the message about the image goes to stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(target) in result.stderr


def test_load_events_on_a_copy_without_one_scenario(traces_dir: Path) -> None:
    shutil.rmtree(traces_dir / "scenario=terminate")
    assert "terminate" not in set(load_events(traces_dir)["scenario"])


def test_a_shared_event_id_stays_per_trace_across_bundles_and_files(traces_dir: Path) -> None:
    def seen(name: str, start: float, end: float) -> Trace:
        steps = [(0.0, []), (start, [event("SHARED")]), (end, [])]
        return trace_of(steps, name=name, scenario="terminate")

    write_bundle([seen("vm1", 10, 50), seen("vm2", 20, 100)], traces_dir, "pair")
    write_trace(seen("vm3", 5, 500), traces_dir)
    events = load_events(traces_dir, scenarios=["terminate"], origins=["captured"])
    assert events.set_index("trace")["total_s"].to_dict() == {"vm1": 40, "vm2": 80, "vm3": 495}


def test_a_file_of_many_row_groups_reads_like_one(traces_dir: Path) -> None:
    rng = random.Random(3)
    path = write_bundle([captured(i, rng, "terminate") for i in range(6)], traces_dir, "rg")
    before = load_events(traces_dir, scenarios=["terminate"])
    table = pq.read_table(path)
    pq.write_table(table, path, row_group_size=3)  # a trace's rows now span row groups
    assert pq.ParquetFile(path).metadata.num_row_groups > 3
    assert load_events(traces_dir, scenarios=["terminate"]).equals(before)


def test_a_bad_plot_path_is_refused_before_any_work(traces_dir: Path, tmp_path: Path) -> None:
    args = ["timings", "--traces-dir", str(traces_dir), "--plot", str(tmp_path / "x.gif")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and ".png" in result.stderr and result.stdout == ""
