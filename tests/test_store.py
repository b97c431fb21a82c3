from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.errors import FormatVersionError, InvalidTraceError, TraceNotFoundError
from replay.store import (
    META_VERSION,
    SCHEMA,
    find_trace,
    read_trace,
    scan,
    to_table,
    trace_files,
    write_trace,
)
from replay.timeline import Approval, Snapshot, Trace, format_rfc1123
from tests.helpers import T0, simple_trace

text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40
)  # any Unicode a Description could hold


@st.composite
def traces(draw: st.DrawFn) -> Trace:
    """Random valid traces: overlapping events, every field, odd Unicode, approvals."""
    n_events = draw(st.integers(1, 4))
    gaps = draw(st.lists(st.floats(0.001, 5000, allow_nan=False), min_size=2 * n_events + 1, max_size=2 * n_events + 1))
    events = []
    for i in range(n_events):
        events.append(
            {
                "EventId": draw(st.uuids()).__str__().upper() + f"-{i}",
                "EventStatus": "Scheduled",
                "EventType": draw(st.sampled_from(["Freeze", "Reboot", "Redeploy", "Preempt", "Terminate"])),
                "ResourceType": "VirtualMachine",
                "Resources": draw(st.lists(text, max_size=3)),
                "NotBefore": format_rfc1123(T0 + timedelta(seconds=draw(st.integers(0, 10**7)))),
                "Description": draw(text),
                "EventSource": draw(st.sampled_from(["Platform", "User"])),
                "DurationInSeconds": draw(st.integers(-1, 10**6)),
            }
        )
    # Each event appears, then either starts or vanishes; documents change at every step.
    offset, incarnation = 0.0, draw(st.integers(0, 10**9))
    snaps = [Snapshot(0.0, {"DocumentIncarnation": incarnation, "Events": []})]
    live: list[dict[str, Any]] = []
    actions = [("add", e) for e in events] + [("start", e) for e in events] + [("drop", e) for e in events]
    order = draw(st.permutations(range(len(actions))))
    done: set[str] = set()
    for k, gap in zip(order, gaps, strict=False):
        kind, ev = actions[k]
        eid = ev["EventId"]
        if kind == "add" and eid not in done and all(e["EventId"] != eid for e in live):
            live.append(ev)
        elif kind == "start" and any(e["EventId"] == eid for e in live):
            live = [{**e, "EventStatus": "Started", "NotBefore": ""} if e["EventId"] == eid else e for e in live]
        elif kind == "drop" and any(e["EventId"] == eid for e in live):
            live = [e for e in live if e["EventId"] != eid]
            done.add(eid)
        else:
            continue
        offset += gap
        incarnation += 1
        snaps.append(Snapshot(offset, {"DocumentIncarnation": incarnation, "Events": list(live)}))
    if live:
        offset += 1
        snaps.append(Snapshot(offset, {"DocumentIncarnation": incarnation + 1, "Events": []}))
    approvals = tuple(
        Approval(draw(st.floats(0, offset)), (e["EventId"],)) for e in events if draw(st.booleans())
    )
    return Trace(
        name=draw(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)),
        scenario=draw(st.sampled_from(["live-migration", "other-freeze"])),
        snapshots=tuple(snaps),
        approvals=approvals,
        started_at=draw(st.one_of(st.none(), st.just(T0))),
        origin=draw(st.sampled_from(["captured", "reference", "synthetic"])),
        source={"host": draw(text)},
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trace=traces())
def test_parquet_round_trip_is_lossless(tmp_path: Path, trace: Trace) -> None:
    path = write_trace(trace, tmp_path)
    back = read_trace(path)
    assert [(s.offset_s, orjson.dumps(s.document)) for s in back.snapshots] == [
        (s.offset_s, orjson.dumps(s.document)) for s in trace.snapshots
    ]
    assert back.approvals == trace.approvals
    assert (back.name, back.scenario, back.origin, back.started_at) == (
        trace.name,
        trace.scenario,
        trace.origin,
        trace.started_at,
    )
    assert back.source == trace.source


def test_file_sits_in_a_hive_partition_and_reads_with_pyarrow_dataset(tmp_path: Path) -> None:
    write_trace(simple_trace("a", "host-maintenance"), tmp_path)
    write_trace(simple_trace("b", "live-migration"), tmp_path)
    assert (tmp_path / "scenario=live-migration" / "b.parquet").is_file()
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert sorted(set(table.column("scenario").to_pylist())) == ["host-maintenance", "live-migration"]
    assert table.schema.field("not_before").type == pa.timestamp("ms", tz="UTC")


def test_typed_columns_describe_each_event(tmp_path: Path) -> None:
    table = pq.read_table(write_trace(simple_trace(), tmp_path))
    assert table.schema.names == SCHEMA.names
    rows = table.to_pylist()
    assert [r["event_status"] for r in rows] == [None, "Scheduled", "Started", None]
    assert rows[1]["not_before_offset_s"] == 610.0
    assert rows[1]["not_before"] == T0 + timedelta(seconds=610)
    assert rows[1]["resources"] == ["vm-0"]
    assert rows[1]["duration_s"] == 5


def test_newer_format_version_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "scenario=x" / "new.parquet"
    path.parent.mkdir()
    table = to_table(replace(simple_trace("new"), scenario="x"))
    meta = dict(table.schema.metadata)
    meta[META_VERSION] = b"99"
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(FormatVersionError, match=r"format 99; this build of imds-replay reads format 1"):
        read_trace(path)


def test_bad_file_is_reported_with_its_path_and_the_others_still_load(tmp_path: Path) -> None:
    write_trace(simple_trace("good"), tmp_path)
    broken = replace(simple_trace("broken"), snapshots=simple_trace().snapshots[:3])
    path = tmp_path / "scenario=host-maintenance" / "broken.parquet"
    pq.write_table(to_table(broken), path)
    (tmp_path / "scenario=host-maintenance" / "junk.parquet").write_bytes(b"not parquet")
    good, bad = scan(tmp_path)
    assert [t.name for t in good] == ["good"]
    problems = {b.path.name: b.problem for b in bad}
    assert "must end with an empty Events array" in problems["broken.parquet"]
    assert str(path) in problems["broken.parquet"]
    assert "cannot read Parquet" in problems["junk.parquet"]


def test_write_is_atomic_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_trace(simple_trace("keep"), tmp_path)
    before = (tmp_path / "scenario=host-maintenance" / "keep.parquet").read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        write_trace(replace(simple_trace("keep"), origin="synthetic"), tmp_path)
    assert os.listdir(tmp_path / "scenario=host-maintenance") == ["keep.parquet"]
    assert (tmp_path / "scenario=host-maintenance" / "keep.parquet").read_bytes() == before


def test_invalid_trace_is_never_written(tmp_path: Path) -> None:
    broken = replace(simple_trace(), snapshots=simple_trace().snapshots[1:])
    with pytest.raises(InvalidTraceError):
        write_trace(broken, tmp_path)
    assert trace_files(tmp_path) == []


def test_unknown_name_suggests_the_nearest(traces_dir: Path) -> None:
    with pytest.raises(TraceNotFoundError, match="did you mean 'live-migration'"):
        find_trace(traces_dir, "live-migraton")


@pytest.mark.parametrize("name", ["../etc/passwd", "..", "a/b", "x" * 200, ""])
def test_trace_names_cannot_leave_the_dataset(traces_dir: Path, name: str) -> None:
    with pytest.raises(Exception, match="not found|must be"):
        find_trace(traces_dir, name)
