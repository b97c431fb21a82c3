"""The trace file format: the Parquet schema and tables of traces (the footer's keys and what
listings read of them are `footer`'s).

A file holds one row per event per document (an empty document is one row with null event
columns), the raw document for lossless round trips, typed columns for analysis, and
provenance in its Parquet metadata. A single-trace file keeps its provenance object under
`imds_replay.trace`; a bundle (generated data) holds several traces of one scenario, rows
grouped by trace, and a list of provenance objects in row order under `imds_replay.traces`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from replay.core.timeline import Approval, Snapshot, Trace, parse_rfc1123
from replay.errors import InvalidTraceError
from replay.store.footer import (
    FORMAT_VERSION,
    INDEX_KEYS,
    META_INDEX,
    META_TRACE,
    META_TRACES,
    META_VERSION,
)

_FIELDS: list[pa.Field[Any]] = [
    pa.field("trace", pa.string(), nullable=False),
    pa.field("seq", pa.int32(), nullable=False),
    pa.field("offset_s", pa.float64(), nullable=False),
    pa.field("incarnation", pa.int64(), nullable=False),
    pa.field("document", pa.string(), nullable=False),
    pa.field("event_index", pa.int16()),
    pa.field("event_id", pa.string()),
    pa.field("event_type", pa.string()),
    pa.field("event_status", pa.string()),
    pa.field("event_source", pa.string()),
    pa.field("resource_type", pa.string()),
    pa.field("resources", pa.list_(pa.string())),
    pa.field("not_before", pa.timestamp("ms", tz="UTC")),
    pa.field("not_before_offset_s", pa.float64()),
    pa.field("duration_s", pa.int32()),
    pa.field("description", pa.string()),
    pa.field("approved_offset_s", pa.float64()),
]


SCHEMA = pa.schema(_FIELDS)
"""Columns of a trace file, in order; README documents each with its type and unit."""


_COLUMNS = tuple(SCHEMA.names)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _add_rows(trace: Trace, columns: dict[str, list[Any]]) -> None:
    """Append the trace's rows (one per event per document) to columns, in SCHEMA order."""
    approved: dict[str, float] = {}  # each event's first approval, as Lifecycle.approved_s
    for approval in trace.approvals:
        for eid in approval.event_ids:
            approved.setdefault(eid, approval.offset_s)
    lists = [columns[name] for name in _COLUMNS]
    start = trace.started_at
    parsed: dict[str, datetime] = {}  # a NotBefore repeats while its event stays Scheduled
    for seq, snap in enumerate(trace.snapshots):
        raw = _dumps(snap.document)
        for index, event in enumerate(snap.events or [{}]):
            nb = event.get("NotBefore") or None
            nb_at = (parsed.get(nb) or parsed.setdefault(nb, parse_rfc1123(nb))) if nb else None
            row = (
                trace.name,
                seq,
                snap.offset_s,
                snap.incarnation,
                raw,
                index if event else None,
                event.get("EventId"),
                event.get("EventType"),
                event.get("EventStatus"),
                event.get("EventSource"),
                event.get("ResourceType"),
                event.get("Resources"),
                nb_at,
                (nb_at - start).total_seconds() if nb_at and start else None,
                event.get("DurationInSeconds"),
                event.get("Description"),
                approved.get(event["EventId"]) if event else None,
            )
            for column, value in zip(lists, row, strict=True):
                column.append(value)


def _table(traces: Sequence[Trace], metadata: dict[bytes, bytes]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
    for trace in traces:
        _add_rows(trace, columns)
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    return table.replace_schema_metadata({META_VERSION: str(FORMAT_VERSION).encode(), **metadata})


def to_table(trace: Trace) -> pa.Table:
    """The trace as an Arrow table with the store's schema and metadata."""
    return _table([trace], {META_TRACE: orjson.dumps(_provenance(trace))})


def bundle_table(traces: Sequence[Trace]) -> pa.Table:
    """Several traces as one Arrow table: rows grouped by trace, provenance list in row order,
    and an index of what listings show."""
    provenance = [_provenance(t) for t in traces]
    index = {
        "scenario": traces[0].scenario if traces else "",
        "name": [p["name"] for p in provenance],
        "origin": [p["origin"] for p in provenance],
        **{key: [p["summary"][key] for p in provenance] for key in INDEX_KEYS[2:]},
    }
    return _table(traces, {META_TRACES: orjson.dumps(provenance), META_INDEX: orjson.dumps(index)})


def _provenance(trace: Trace) -> dict[str, Any]:
    return {
        "name": trace.name,
        "scenario": trace.scenario,
        "origin": trace.origin,
        "started_at": trace.started_at.isoformat() if trace.started_at else None,
        "approvals": [[a.offset_s, list(a.event_ids)] for a in trace.approvals],
        "source": dict(trace.source),
        "summary": {
            "events": trace.event_count,
            "documents": len(trace.snapshots),
            "duration_s": trace.duration_s,
        },
    }


def trace_from_columns(
    meta: Mapping[str, Any], seqs: list[Any], offsets: list[Any], docs: list[Any]
) -> Trace:
    snapshots = []
    last_seq = None
    for seq, offset, raw in zip(seqs, offsets, docs, strict=True):
        if seq != last_seq:
            if offset is None or raw is None:
                raise InvalidTraceError(f"row of document {seq} has no offset or document")
            snapshots.append(Snapshot(float(offset), orjson.loads(raw)))
            last_seq = seq
    started_at = meta.get("started_at")
    return Trace(
        name=meta["name"],
        scenario=meta["scenario"],
        snapshots=tuple(snapshots),
        approvals=tuple(Approval(float(o), tuple(ids)) for o, ids in meta.get("approvals", [])),
        started_at=datetime.fromisoformat(started_at).astimezone(UTC) if started_at else None,
        origin=meta.get("origin", "captured"),
        source=meta.get("source", {}),
    )
