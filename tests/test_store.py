from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.core.timeline import Trace
from replay.errors import FormatVersionError, InvalidTraceError, ReplayError, TraceNotFoundError
from replay.store.dataset import (
    find_trace,
    iter_traces,
    load_trace,
    scan,
    write_bundle,
    write_trace,
)
from replay.store.files import read_file, read_trace
from replay.store.footer import META_TRACE, META_TRACES, META_VERSION, info_of
from replay.store.layout import trace_files
from replay.store.schema import SCHEMA, bundle_table, to_table
from tests.helpers import T0, simple_trace
from tests.strategies import traces


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(trace=traces())
def test_parquet_round_trip_is_lossless(tmp_path: Path, trace: Trace) -> None:
    # A fresh dataset per example: names are unique across scenarios within one dataset.
    path = write_trace(trace, Path(tempfile.mkdtemp(dir=tmp_path)))
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
    assert sorted(set(table.column("scenario").to_pylist())) == [
        "host-maintenance",
        "live-migration",
    ]
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


def test_a_file_with_other_column_types_reads_as_the_same_trace(tmp_path: Path) -> None:
    """Another writer (pandas, duckdb) may store whole seconds as integers, int64 for int32
    and large_string for string: the trace reads with the schema's types all the same."""
    trace = simple_trace("other")
    table = to_table(trace)
    other = {pa.float64(): pa.int64(), pa.int32(): pa.int64(), pa.string(): pa.large_string()}
    schema = pa.schema(
        [f.with_type(other.get(f.type, f.type)) for f in table.schema],
        metadata=table.schema.metadata,
    )
    path = tmp_path / "scenario=host-maintenance" / "other.parquet"
    path.parent.mkdir()
    pq.write_table(table.cast(schema), path)
    assert pq.read_schema(path).field("offset_s").type == pa.int64()
    back = read_trace(path)
    assert [type(s.offset_s) for s in back.snapshots] == [float] * len(trace.snapshots)
    assert [(s.offset_s, s.document) for s in back.snapshots] == [
        (s.offset_s, s.document) for s in trace.snapshots
    ]


def test_newer_format_version_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "scenario=x" / "new.parquet"
    path.parent.mkdir()
    table = to_table(replace(simple_trace("new"), scenario="x"))
    meta = dict(table.schema.metadata)
    meta[META_VERSION] = b"99"
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(
        FormatVersionError, match=r"format 99; this build of imds-replay reads format 1"
    ):
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


def test_write_is_atomic_a_failed_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    with pytest.raises(Exception, match=r"not found|must be"):
        find_trace(traces_dir, name)


# Bundles: several traces of one scenario in one file.


def _named(trace: Trace, name: str, scenario: str = "live-migration") -> Trace:
    return replace(trace, name=name, scenario=scenario)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(traces(), min_size=1, max_size=5))
def test_bundle_round_trip_is_lossless_trace_by_trace(tmp_path: Path, batch: list[Trace]) -> None:
    batch = [_named(t, f"b-{i}") for i, t in enumerate(batch)]
    path = write_bundle(batch, Path(tempfile.mkdtemp(dir=tmp_path)), "bundle")
    back = read_file(path)
    assert [t.name for t in back] == [t.name for t in batch]
    for got, want in zip(back, batch, strict=True):
        assert [(s.offset_s, orjson.dumps(s.document)) for s in got.snapshots] == [
            (s.offset_s, orjson.dumps(s.document)) for s in want.snapshots
        ]
        assert (got.approvals, got.started_at, got.origin, got.source) == (
            want.approvals,
            want.started_at,
            want.origin,
            want.source,
        )


def _bundle(tmp_path: Path, names: list[str], bundle: str = "pack") -> Path:
    return write_bundle([simple_trace(n, "host-maintenance") for n in names], tmp_path, bundle)


def test_bundle_metadata_lists_each_trace_in_row_order(tmp_path: Path) -> None:
    path = _bundle(tmp_path, ["x", "y", "z"])
    assert path == tmp_path / "scenario=host-maintenance" / "pack.parquet"
    meta = pq.read_schema(path).metadata
    assert META_TRACE not in meta
    listed = orjson.loads(meta[META_TRACES])
    assert [m["name"] for m in listed] == ["x", "y", "z"]
    assert listed[0]["summary"] == {"events": 1, "documents": 4, "duration_s": 700.0}
    rows = pq.read_table(path).column("trace").to_pylist()
    assert rows == ["x"] * 4 + ["y"] * 4 + ["z"] * 4


def test_scan_lists_one_entry_per_trace_of_a_bundle_from_footers_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_trace(simple_trace("alone"), tmp_path)
    path = _bundle(tmp_path, ["x", "y"])

    def no_data_pages(*args: object, **kwargs: object) -> None:
        raise AssertionError("a listing must not read data pages")

    monkeypatch.setattr(pq, "read_table", no_data_pages)
    good, bad = scan(tmp_path, validate_all=False)
    assert bad == []
    assert [(i.name, i.path, i.bundle) for i in good] == [
        ("alone", tmp_path / "scenario=host-maintenance" / "alone.parquet", False),
        ("x", path, True),
        ("y", path, True),
    ]
    assert good[1].documents == 4 and good[1].events == 1


def test_trace_inside_a_bundle_is_found_and_loaded_by_name(tmp_path: Path) -> None:
    path = _bundle(tmp_path, ["x", "y", "z"])
    assert find_trace(tmp_path, "y") == path
    y = load_trace(tmp_path, "y")
    assert y.name == "y" and y.lifecycles["E1"].started_s == 610.0
    with pytest.raises(TraceNotFoundError, match="did you mean 'y'"):
        load_trace(tmp_path, "yy")


def test_a_bundle_named_like_a_trace_it_does_not_hold_is_not_that_trace(tmp_path: Path) -> None:
    write_trace(simple_trace("y", "live-migration"), tmp_path)
    _bundle(tmp_path, ["a", "b"], bundle="y")
    assert load_trace(tmp_path, "y").scenario == "live-migration"


def test_read_trace_of_a_bundle_of_several_says_to_load_by_name(tmp_path: Path) -> None:
    path = _bundle(tmp_path, ["x", "y"])
    with pytest.raises(ReplayError, match=r"a bundle of 2 traces \('x', 'y'\); load one by name"):
        read_trace(path)
    with pytest.raises(ReplayError, match="a bundle of 2 traces"):
        load_trace(tmp_path, str(path))
    with pytest.raises(ReplayError, match="a bundle of 2 traces"):
        info_of(path)
    assert read_trace(_bundle(tmp_path, ["only"], bundle="one")).name == "only"


def test_bad_trace_in_a_bundle_is_reported_with_file_trace_and_problem(tmp_path: Path) -> None:
    good = simple_trace("fine")
    broken = replace(simple_trace("broken"), snapshots=simple_trace().snapshots[:3])
    path = tmp_path / "scenario=host-maintenance" / "mixed.parquet"
    path.parent.mkdir()
    pq.write_table(bundle_table([good, broken, simple_trace("also-fine")]), path)
    listed, bad = scan(tmp_path)
    assert [i.name for i in listed] == ["fine", "also-fine"]
    (problem,) = bad
    assert (problem.path, problem.trace) == (path, "broken")
    assert problem.problem.startswith(f"{path}: trace 'broken': ")
    assert "must end with an empty Events array" in problem.problem
    assert [getattr(t, "name", None) for t in iter_traces(tmp_path)] == ["fine", None, "also-fine"]
    with pytest.raises(InvalidTraceError, match="trace 'broken'"):
        read_file(path)
    assert load_trace(tmp_path, "also-fine").name == "also-fine"


def test_rewriting_a_bundle_replaces_it(tmp_path: Path) -> None:
    _bundle(tmp_path, ["x", "y"])
    _bundle(tmp_path, ["x", "w"])
    good, bad = scan(tmp_path)
    assert ([i.name for i in good], bad) == (["x", "w"], [])


def test_bundle_files_are_world_readable_and_leave_no_temporary_files(tmp_path: Path) -> None:
    path = _bundle(tmp_path, ["x"])
    assert path.stat().st_mode & 0o777 == 0o644
    assert os.listdir(path.parent) == ["pack.parquet"]


@pytest.mark.parametrize(
    ("setup", "names", "problem"),
    [
        (None, ["x", "x"], "holds trace 'x' twice"),
        ("single-elsewhere", ["x", "taken"], r"'taken' is already used by .*taken\.parquet"),
        ("single-here", ["x"], "holds a single trace; write_bundle will not replace it"),
        (None, [], "has no traces"),
    ],
)
def test_write_bundle_refuses(
    tmp_path: Path, setup: str | None, names: list[str], problem: str
) -> None:
    if setup == "single-elsewhere":
        write_trace(simple_trace("taken", "live-migration"), tmp_path)
    if setup == "single-here":
        write_trace(simple_trace("pack"), tmp_path)
    with pytest.raises(ReplayError, match=problem):
        _bundle(tmp_path, names)


def test_write_bundle_refuses_mixed_scenarios_and_invalid_traces(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="mixes scenarios host-maintenance, live-migration"):
        write_bundle([simple_trace("a"), simple_trace("b", "live-migration")], tmp_path, "p")
    broken = replace(simple_trace("bad"), snapshots=simple_trace().snapshots[1:])
    with pytest.raises(InvalidTraceError, match="trace 'bad': document 0"):
        write_bundle([simple_trace("a"), broken], tmp_path, "p")
    assert trace_files(tmp_path) == []


def test_write_trace_refuses_a_name_of_another_scenario_and_replacing_a_bundle(
    tmp_path: Path,
) -> None:
    write_trace(simple_trace("t", "live-migration"), tmp_path)
    with pytest.raises(ReplayError, match=r"'t' is already used by .*scenario=live-migration"):
        write_trace(simple_trace("t", "host-maintenance"), tmp_path)
    _bundle(tmp_path, ["x"], bundle="pack")
    with pytest.raises(ReplayError, match="is a bundle of several traces"):
        write_trace(simple_trace("pack"), tmp_path)


def test_scan_reports_a_name_found_twice_and_keeps_the_first(tmp_path: Path) -> None:
    _bundle(tmp_path, ["dup", "other"], bundle="zz")
    write_bundle([simple_trace("other2", "live-migration")], tmp_path, "dup")  # a bundle's stem
    first = write_trace(simple_trace("dup"), tmp_path)  # is not a name; names in bundles are
    good, bad = scan(tmp_path)  # not checked on write, and scan reports the duplicate
    assert [(i.name, i.path.name) for i in good] == [
        ("dup", "dup.parquet"),
        ("other", "zz.parquet"),
        ("other2", "dup.parquet"),
    ]
    (dup,) = bad
    assert dup.trace == "dup" and f"is also in {first}" in dup.problem


def test_bundles_and_single_files_read_as_one_pyarrow_dataset(tmp_path: Path) -> None:
    write_trace(simple_trace("a", "host-maintenance"), tmp_path)
    _bundle(tmp_path, ["x", "y"])
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert sorted(set(table.column("trace").to_pylist())) == ["a", "x", "y"]
    assert pq.read_schema(_bundle(tmp_path, ["z"], "p2")).remove_metadata().equals(SCHEMA)
