"""Per-event phases from the trace store's rows, and per-scenario statistics of them.

All times are trace seconds. For each event of each trace, from the offsets at which its states
were first seen:

- `notice_s`: NotBefore as first shown while Scheduled, minus first seen Scheduled.
- `scheduled_s`: first seen Scheduled -> first seen Started.
- `started_s`: first seen Started -> the first document without it.
- `total_s`: first seen -> the first document without it.
- `duration_s`: DurationInSeconds as first seen; -1 (unknown) is null.
- `approved`, `approval_to_start_s`: whether the capturing VM approved it; approval -> Started.

"The first document without it" is the document after the event's last appearance. A phase that
never happened is null (NaN). The computation is vectorised over the store's columns (numpy and
pyarrow): no Python loop runs per row or per event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis import Stat
from analysis.dataset import PHASE_COLUMNS, iter_batches, select_files
from replay.core.timeline import Trace
from replay.errors import ReplayError
from replay.store.footer import BadFile
from replay.store.layout import default_traces_dir
from replay.store.schema import to_table

PHASES = ("notice_s", "scheduled_s", "started_s", "total_s", "duration_s")
"""The phases `timings` summarises, in seconds."""
STATS = tuple(s.value for s in Stat)
"""Statistics `scenario_stats` computes; pN is the N-th percentile with linear interpolation."""
EVENT_COLUMNS = (
    "scenario",
    "trace",
    "event_id",
    "first_seen_offset_s",
    "scheduled_offset_s",
    "not_before_offset_s",
    "started_offset_s",
    "gone_offset_s",
    "approved_offset_s",
    *PHASES,
    "approved",
    "approval_to_start_s",
)
"""Columns of the per-event frame: offsets on the trace's axis, then the phases."""

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def _codes(column: pa.ChunkedArray[Any] | pa.Array[Any]) -> tuple[Ints, pa.Array[Any]]:
    """Integer codes for a string or dictionary column (-1 for null), and the values coded.

    Dictionary chunks keep their own dictionaries, stacked: a value present in two chunks gets
    two codes. That skips hashing every name again; callers pass one chunk per file (a trace
    never spans files), or plain strings, which are encoded over the whole column.
    """
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column], type=column.type)
    if not pa.types.is_dictionary(column.type):
        column = pa.chunked_array([pc.dictionary_encode(column.combine_chunks())])
    chunks = [cast("pa.DictionaryArray[Any, Any]", c) for c in column.chunks if len(c)]
    if not chunks:
        return np.full(len(column), -1, dtype=np.int64), pa.array([], pa.string())
    dictionaries = [c.dictionary for c in chunks]
    sizes = np.array([len(d) for d in dictionaries], dtype=np.int64)
    bases = np.repeat(np.cumsum(sizes) - sizes, [len(c) for c in chunks])
    index_type = pa.int64()
    if all(c.indices.type == chunks[0].indices.type for c in chunks):
        index_type = chunks[0].indices.type
    indices = pa.chunked_array([c.indices.cast(index_type) for c in chunks], type=index_type)
    codes = indices.fill_null(pa.scalar(-1, index_type)).to_numpy().astype(np.int64)
    codes = np.where(codes >= 0, codes + bases, -1)
    return codes, pa.concat_arrays(dictionaries)


def _is(codes: Ints, dictionary: pa.Array[Any], value: str) -> npt.NDArray[np.bool_]:
    """Rows whose coded value equals value (never a null row)."""
    equal = pc.equal(dictionary, pa.scalar(value)).fill_null(False)
    matches = np.asarray(equal.to_numpy(zero_copy_only=False), dtype=bool)
    found: npt.NDArray[np.bool_] = (codes >= 0) & matches[np.maximum(codes, 0)]
    return found


def _floats(table: pa.Table, name: str) -> Floats:
    """A numeric column as float64, null as NaN."""
    values = table.column(name).to_numpy()
    return np.asarray(values, dtype=np.float64)


def _first_index(groups: Ints, count: int, rows: Ints) -> Ints:
    """For each of count groups, the smallest row index in it (len(rows) past the end if none)."""
    first = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, groups, rows)
    return first


def _take(values: Floats, index: Ints) -> Floats:
    """values[index], NaN where index is past the end (the group had no such row)."""
    found = index < len(values)
    out = np.full(len(index), np.nan)
    out[found] = values[index[found]]
    return out


def phases_table(rows: pa.Table) -> pa.Table:
    """One row per event (see EVENT_COLUMNS) from trace-store rows that include `scenario`.

    Rows may come in any order and from any number of traces. A trace is known by its scenario
    and name; with dictionary-encoded columns (analysis.dataset reads one chunk per file) by its
    chunk and name, as a trace never spans files.
    """
    n = rows.num_rows
    if n == 0:
        return _events_arrow({}, 0)
    scenario, scenarios = _codes(rows.column("scenario"))
    trace, traces = _codes(rows.column("trace"))
    event, event_ids = _codes(rows.column("event_id"))
    status, statuses = _codes(rows.column("event_status"))
    seq = rows.column("seq").to_numpy().astype(np.int64)
    trace_key = scenario * len(traces) + trace
    columns = {
        "offset_s": _floats(rows, "offset_s"),
        "not_before_offset_s": _floats(rows, "not_before_offset_s"),
        "duration_s": _floats(rows, "duration_s"),
        "approved_offset_s": _floats(rows, "approved_offset_s"),
    }
    new_trace = np.ones(n, dtype=bool)
    new_trace[1:] = trace_key[1:] != trace_key[:-1]
    runs = trace_key[new_trace]
    backwards = ~new_trace[1:] & (seq[1:] < seq[:-1])
    in_order = not backwards.any() and len(pd.unique(runs)) == len(runs)
    if not in_order:
        by_trace = np.lexsort((seq, trace_key))
        trace_key, scenario, trace, event, status, seq = (
            a[by_trace] for a in (trace_key, scenario, trace, event, status, seq)
        )
        columns = {k: v[by_trace] for k, v in columns.items()}
        new_trace[1:] = trace_key[1:] != trace_key[:-1]
    offset = columns["offset_s"]

    # Documents: the rows where (trace, seq) changes; each row learns the next document's offset.
    new_document = new_trace.copy()
    new_document[1:] |= seq[1:] != seq[:-1]
    document = np.cumsum(new_document) - 1
    document_offset = offset[new_document]
    next_offset = np.full(len(document_offset), np.nan)
    next_offset[:-1] = np.where(new_trace[new_document][1:], np.nan, document_offset[1:])

    # Events: one group per (trace, EventId).
    at = np.flatnonzero(event >= 0)
    group, count = _event_groups(trace_key[at], event[at], len(event_ids))
    positions = np.arange(len(at), dtype=np.int64)
    first = _first_index(group, count, positions)
    used = np.flatnonzero(first < len(at))
    if np.any(np.diff(first[used]) < 0):
        used = used[np.argsort(first[used], kind="stable")]  # events in order of first sight
    renumber = np.full(count, -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    group, first, count = renumber[group], first[used], len(used)
    last = np.full(count, -1, dtype=np.int64)
    np.maximum.at(last, group, positions)

    def first_with(name: str) -> Ints:
        mask = _is(status[at], statuses, name)
        return _first_index(group[mask], count, positions[mask])

    scheduled, started = first_with("Scheduled"), first_with("Started")
    first_row, ev_offset = at[first], offset[at]
    approved = np.full(count, np.nan)
    np.fmin.at(approved, group, columns["approved_offset_s"][at])
    duration = columns["duration_s"][first_row]
    out = {
        "scenario": scenarios.take(scenario[first_row]),
        "trace": traces.take(trace[first_row]),
        "event_id": event_ids.take(event[first_row]),
        "first_seen_offset_s": offset[first_row],
        "scheduled_offset_s": _take(ev_offset, scheduled),
        "not_before_offset_s": _take(columns["not_before_offset_s"][at], scheduled),
        "started_offset_s": _take(ev_offset, started),
        "gone_offset_s": next_offset[document[at[last]]],
        "approved_offset_s": approved,
        "duration_s": np.where(duration == -1, np.nan, duration),
    }
    return _events_arrow(out, count)


def _event_groups(trace_key: Ints, event: Ints, event_count: int) -> tuple[Ints, int]:
    """Group ids for (trace, EventId) pairs and how many ids there are (some may be unused).

    An EventId nearly always lives in one trace, so its dictionary code is the group and no
    hashing is needed; when one appears in several traces (two VMs of one availability set),
    the pairs are factorised.
    """
    low = np.full(event_count, np.iinfo(np.int64).max, dtype=np.int64)
    high = np.full(event_count, -1, dtype=np.int64)
    np.minimum.at(low, event, trace_key)
    np.maximum.at(high, event, trace_key)
    used = high >= 0
    if np.array_equal(low[used], high[used]):
        return event, event_count
    codes, uniques = pd.factorize(trace_key * event_count + event)
    return np.asarray(codes, dtype=np.int64), len(uniques)


def _events_arrow(out: dict[str, Any], count: int) -> pa.Table:
    """The per-event table with derived phases, in EVENT_COLUMNS order."""
    if not out:
        empty = np.full(0, np.nan)
        out = {
            "scenario": pa.array([], pa.string()),
            "trace": pa.array([], pa.string()),
            "event_id": pa.array([], pa.string()),
            **dict.fromkeys(EVENT_COLUMNS[3:9], empty),
            "duration_s": empty,
        }
    scheduled, started = out["scheduled_offset_s"], out["started_offset_s"]
    gone, approved = out["gone_offset_s"], out["approved_offset_s"]
    derived = {
        "notice_s": out["not_before_offset_s"] - scheduled,
        "scheduled_s": started - scheduled,
        "started_s": gone - started,
        "total_s": gone - out["first_seen_offset_s"],
        "approved": ~np.isnan(approved),
        "approval_to_start_s": started - approved,
    }
    merged = {**out, **derived}
    arrays = [
        v if isinstance(v, pa.Array) else pa.array(v, from_pandas=True)
        for v in (merged[name] for name in EVENT_COLUMNS)
    ]
    return pa.Table.from_arrays(arrays, names=list(EVENT_COLUMNS))


def event_phases(rows: pa.Table) -> pd.DataFrame:
    """One row per event (EVENT_COLUMNS) from trace-store rows that include `scenario`."""
    return phases_table(rows).to_pandas()


def traces_rows(traces: Iterable[Trace]) -> pa.Table:
    """The store rows of in-memory traces, with `scenario`, as the dataset would hold them."""
    tables = []
    for trace in traces:
        table = to_table(trace).select(list(PHASE_COLUMNS))
        scenario = pa.array([trace.scenario] * table.num_rows, pa.string())
        tables.append(table.append_column("scenario", scenario).replace_schema_metadata(None))
    if not tables:
        raise ReplayError("no traces given")
    return pa.concat_tables(tables)


def load_events(
    traces_dir: Path | None = None,
    *,
    scenarios: Sequence[str] = (),
    origins: Sequence[str] = (),
    skipped: list[BadFile] | None = None,
) -> pd.DataFrame:
    """Every event of the dataset with its phases (EVENT_COLUMNS), reading only needed columns.

    A bad file raises its ReplayError, unless `skipped` is given: then it is listed there.
    """
    directory = traces_dir if traces_dir is not None else default_traces_dir()
    files = select_files(directory, scenarios)
    tables = [
        phases_table(batch) for batch in iter_batches(files, origins=origins, skipped=skipped)
    ]
    if not tables:
        return phases_table(pa.table({})).to_pandas()
    return pa.concat_tables(tables).to_pandas()


def _aggregate(grouped: Any, stat: str) -> pd.DataFrame:
    if stat.startswith("p"):
        frame: pd.DataFrame = grouped.quantile(int(stat[1:]) / 100)
        return frame
    result: pd.DataFrame = getattr(grouped, stat)()
    return result


def stat_key(phase: str, stat: str) -> str:
    """The output key of a statistic: the median keeps the phase's name, others get a suffix."""
    return phase if stat == "median" else f"{phase}_{stat}"


def scenario_stats(events: pd.DataFrame, stats: Sequence[str] = ("median",)) -> pd.DataFrame:
    """One row per scenario, sorted: `scenario`, `events`, then each phase's statistics.

    The median of a phase is named after it (`notice_s`); other statistics get a suffix
    (`notice_s_p90`). NaN where no event of the scenario has that phase.
    """
    for stat in stats:
        if stat not in STATS:
            raise ReplayError(f"statistic {stat!r} is not one of {', '.join(STATS)}")
    stats = list(dict.fromkeys(stats))
    frame = events[["scenario", *PHASES]].astype({"scenario": str})
    grouped = frame.groupby("scenario", sort=True)
    result = pd.DataFrame({"events": grouped.size()})
    values = {stat: _aggregate(grouped[list(PHASES)], stat) for stat in stats}
    for phase in PHASES:
        for stat in stats:
            result[stat_key(phase, stat)] = values[stat][phase].astype(float)
    return result.reset_index()


def to_records(stats: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts for JSON: NaN becomes None, counts are ints."""
    records: list[dict[str, Any]] = []
    for row in stats.to_dict(orient="records"):
        records.append(
            {
                str(k): None if isinstance(v, float) and np.isnan(v) else _plain(v)
                for k, v in row.items()
            }
        )
    return records


def _plain(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def duckdb_sql(parquet_glob: str) -> str:
    """The same per-scenario medians in DuckDB SQL over the hive-partitioned dataset."""
    return DUCKDB_SQL.replace("{glob}", parquet_glob.replace("'", "''"))


DUCKDB_SQL = """\
WITH rows AS (
  SELECT scenario, trace, seq, offset_s, event_id, event_status,
         not_before_offset_s, duration_s
  FROM read_parquet('{glob}', hive_partitioning = true)
),
documents AS (SELECT DISTINCT scenario, trace, seq, offset_s FROM rows),
events AS (
  SELECT scenario, trace, event_id,
         min(offset_s) AS first_seen_s,
         min(offset_s) FILTER (event_status = 'Scheduled') AS scheduled_at_s,
         arg_min(not_before_offset_s, offset_s) FILTER (event_status = 'Scheduled')
           AS not_before_s,
         min(offset_s) FILTER (event_status = 'Started') AS started_at_s,
         max(seq) AS last_seq,
         arg_min(duration_s, seq) AS duration_s
  FROM rows WHERE event_id IS NOT NULL
  GROUP BY scenario, trace, event_id
),
phases AS (
  SELECT e.scenario,
         e.not_before_s - e.scheduled_at_s AS notice_s,
         e.started_at_s - e.scheduled_at_s AS scheduled_s,
         d.offset_s - e.started_at_s AS started_s,
         d.offset_s - e.first_seen_s AS total_s,
         nullif(e.duration_s, -1) AS duration_s
  FROM events e LEFT JOIN documents d
    ON d.scenario = e.scenario AND d.trace = e.trace AND d.seq = e.last_seq + 1
)
SELECT scenario, count(*) AS events,
       median(notice_s) AS notice_s, median(scheduled_s) AS scheduled_s,
       median(started_s) AS started_s, median(total_s) AS total_s,
       median(duration_s) AS duration_s
FROM phases GROUP BY scenario ORDER BY scenario
"""
"""DuckDB SQL for the per-scenario medians; `{glob}` is the dataset's `**/*.parquet` path."""
