"""The shipped data: every trace validates, matches its generator and the reference table."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from replay.core.reference import reference_table, reference_trace
from replay.store.files import read_trace
from replay.store.layout import trace_files
from tests.conftest import ROOT, SHIPPED

FILES = trace_files(SHIPPED)


def test_one_reference_trace_per_scenario() -> None:
    assert sorted(p.stem for p in FILES) == sorted(reference_table())
    for path in FILES:
        assert path.parent.name == f"scenario={path.stem}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_shipped_trace_validates_and_reads_with_plain_pyarrow(path: Path) -> None:
    trace = read_trace(path)
    assert trace.origin == "reference"
    assert pq.read_table(path).num_rows >= len(trace.snapshots)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_shipped_trace_is_what_the_generator_makes(path: Path) -> None:
    shipped, fresh = read_trace(path), reference_trace(path.stem)
    assert [(s.offset_s, orjson.dumps(s.document)) for s in shipped.snapshots] == [
        (s.offset_s, orjson.dumps(s.document)) for s in fresh.snapshots
    ]
    assert shipped.source == fresh.source


@pytest.mark.parametrize("name", list(reference_table()))
def test_reference_trace_phases_equal_the_table(name: str) -> None:
    row = reference_table()[name]
    (lc,) = reference_trace(name).lifecycles.values()
    notice = (
        None
        if lc.not_before_s is None or lc.scheduled_s is None
        else lc.not_before_s - lc.scheduled_s
    )
    scheduled = (
        None if lc.started_s is None or lc.scheduled_s is None else lc.started_s - lc.scheduled_s
    )
    started = None if lc.started_s is None or lc.gone_s is None else lc.gone_s - lc.started_s
    assert (notice, scheduled, started) == (row.notice_s, row.scheduled_s, row.started_s)
    assert lc.gone_s is not None
    assert lc.gone_s - lc.first_seen_s == row.total_s


def test_packaged_table_is_the_shared_reference() -> None:
    shared = ROOT.parent / "shared" / "reference" / "scenarios.json"
    if not shared.exists():
        pytest.skip("../shared is not beside this checkout")
    packaged = ROOT / "replay" / "core" / "scenarios.json"
    assert json.loads(packaged.read_text()) == json.loads(shared.read_text())
