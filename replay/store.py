"""The Parquet trace store: one file per trace, hive-partitioned by scenario, atomic writes.

Layout: `<traces_dir>/scenario=<scenario>/<name>.parquet`. Each file holds one row per event per
document (an empty document is one row with null event columns), the raw document for lossless
round trips, typed columns for analysis, and the trace's provenance in its Parquet metadata.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from replay.errors import FormatVersionError, InvalidTraceError, ReplayError, TraceNotFoundError
from replay.timeline import Approval, Snapshot, Trace, parse_rfc1123, validate

FORMAT_VERSION = 1
META_VERSION = b"imds_replay.format_version"
META_TRACE = b"imds_replay.trace"
TRACES_ENV = "IMDS_REPLAY_TRACES"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

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


@dataclass(frozen=True, slots=True)
class TraceInfo:
    """What a listing shows of one stored trace."""

    name: str
    scenario: str
    origin: str
    events: int
    documents: int
    duration_s: float
    path: Path


@dataclass(frozen=True, slots=True)
class BadFile:
    """A trace file that failed to load, and its first problem."""

    path: Path
    problem: str


def default_traces_dir() -> Path:
    """$IMDS_REPLAY_TRACES, else the checkout's traces/, else the copy shipped in the wheel."""
    env = os.environ.get(TRACES_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    checkout = here.parent / "traces"
    if (here.parent / "pyproject.toml").exists() and checkout.is_dir():
        return checkout
    return here / "_traces"


def check_name(name: str, what: str = "trace name") -> str:
    """Return name if it is safe as a file or folder name, else raise ReplayError."""
    if not NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise ReplayError(
            f"{what} {name!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def trace_path(traces_dir: Path, scenario: str, name: str) -> Path:
    """Where a trace of this scenario and name lives."""
    return (
        traces_dir / f"scenario={check_name(scenario, 'scenario')}" / f"{check_name(name)}.parquet"
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def to_table(trace: Trace) -> pa.Table:
    """The trace as an Arrow table with the store's schema and metadata."""
    approved = {lc.event_id: lc.approved_s for lc in trace.lifecycles.values()}
    columns: dict[str, list[Any]] = {f.name: [] for f in SCHEMA}

    def row(
        seq: int, snap: Snapshot, raw: str, index: int | None, event: Mapping[str, Any]
    ) -> None:
        nb = event.get("NotBefore") or None
        values = {
            "trace": trace.name,
            "seq": seq,
            "offset_s": snap.offset_s,
            "incarnation": snap.incarnation,
            "document": raw,
            "event_index": index,
            "event_id": event.get("EventId"),
            "event_type": event.get("EventType"),
            "event_status": event.get("EventStatus"),
            "event_source": event.get("EventSource"),
            "resource_type": event.get("ResourceType"),
            "resources": event.get("Resources"),
            "not_before": parse_rfc1123(nb) if nb else None,
            "not_before_offset_s": trace.not_before_offset(nb) if nb else None,
            "duration_s": event.get("DurationInSeconds"),
            "description": event.get("Description"),
            "approved_offset_s": approved.get(event["EventId"]) if index is not None else None,
        }
        for key, value in values.items():
            columns[key].append(value)

    for seq, snap in enumerate(trace.snapshots):
        raw = _dumps(snap.document)
        if not snap.events:
            row(seq, snap, raw, None, {})
        for index, event in enumerate(snap.events):
            row(seq, snap, raw, index, event)
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    return table.replace_schema_metadata(
        {META_VERSION: str(FORMAT_VERSION).encode(), META_TRACE: orjson.dumps(_provenance(trace))}
    )


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


def _metadata(path: Path, metadata: Mapping[bytes, bytes] | None) -> dict[str, Any]:
    metadata = metadata or {}
    if META_VERSION not in metadata or META_TRACE not in metadata:
        raise InvalidTraceError(f"{path}: not an imds-replay trace (no {META_VERSION.decode()})")
    try:
        version = int(metadata[META_VERSION])
    except ValueError as exc:
        raise InvalidTraceError(f"{path}: unreadable format_version") from exc
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{path}: written in trace format {version}; this build of imds-replay reads "
            f"format {FORMAT_VERSION} and older (upgrade imds-replay)"
        )
    meta: dict[str, Any] = orjson.loads(metadata[META_TRACE])
    return meta


def from_table(table: pa.Table, path: Path) -> Trace:
    """Rebuild a trace from a stored table; the raw documents are the source of truth."""
    meta = _metadata(path, table.schema.metadata)
    seqs = table.column("seq").to_pylist()
    offsets = table.column("offset_s").to_pylist()
    documents = table.column("document").to_pylist()
    snapshots = []
    last_seq = None
    for seq, offset, raw in zip(seqs, offsets, documents, strict=True):
        if seq != last_seq:
            if offset is None or raw is None:
                raise InvalidTraceError(f"{path}: row of document {seq} has no offset or document")
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


def read_trace(path: Path) -> Trace:
    """Load and validate one trace file; errors name the file and its first problem."""
    try:
        table = pq.read_table(path, schema=SCHEMA) if path.suffix == ".parquet" else None
    except (OSError, pa.ArrowException) as exc:
        raise InvalidTraceError(f"{path}: cannot read Parquet: {exc}") from exc
    if table is None:
        raise InvalidTraceError(f"{path}: a trace file ends in .parquet")
    # read_table(schema=...) drops the file's key-value metadata; fetch it from the footer.
    table = table.replace_schema_metadata(pq.read_schema(path).metadata)
    try:
        trace = validate(from_table(table, path))
    except InvalidTraceError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise InvalidTraceError(f"{path}: {exc}") from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidTraceError(f"{path}: malformed trace metadata: {exc}") from exc
    expected = f"scenario={trace.scenario}"
    if path.parent.name.startswith("scenario=") and path.parent.name != expected:
        raise InvalidTraceError(
            f"{path}: trace says scenario {trace.scenario!r} but sits in {path.parent.name}"
        )
    return trace


def write_trace(trace: Trace, traces_dir: Path) -> Path:
    """Validate and write a trace atomically (temporary file, fsync, rename); return its path."""
    validate(trace)
    path = trace_path(traces_dir, trace.scenario, trace.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: pq.write_table(to_table(trace), tmp, compression="zstd"))
    return path


def write_atomic(path: Path, write: Any) -> None:
    """Call write(tmp_path) for a temporary file beside path, then rename it into place."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def trace_files(traces_dir: Path) -> list[Path]:
    """Every trace file in the dataset, sorted; temporary files are never listed."""
    if not traces_dir.is_dir():
        return []
    return sorted(p for p in traces_dir.glob("scenario=*/*.parquet") if not p.name.startswith("."))


def info_of(path: Path) -> TraceInfo:
    """A listing entry from the file's footer alone (no data pages read)."""
    try:
        metadata = pq.read_schema(path).metadata
    except (OSError, pa.ArrowException) as exc:
        raise InvalidTraceError(f"{path}: cannot read Parquet: {exc}") from exc
    try:
        meta = _metadata(path, metadata)
        summary = meta["summary"]
        return TraceInfo(
            name=meta["name"],
            scenario=meta["scenario"],
            origin=meta["origin"],
            events=int(summary["events"]),
            documents=int(summary["documents"]),
            duration_s=float(summary["duration_s"]),
            path=path,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidTraceError(f"{path}: malformed trace metadata: {exc}") from exc


def _load(path: Path, validate_all: bool) -> TraceInfo | BadFile:
    try:
        if validate_all:
            read_trace(path)
        return info_of(path)
    except ReplayError as exc:
        return BadFile(path, str(exc))


def scan(traces_dir: Path, *, validate_all: bool = True) -> tuple[list[TraceInfo], list[BadFile]]:
    """List the dataset: good traces and bad files (each with its first problem)."""
    files = trace_files(traces_dir)
    with ThreadPoolExecutor(max_workers=min(8, len(files) or 1)) as pool:
        results = list(pool.map(lambda p: _load(p, validate_all), files))
    good = [r for r in results if isinstance(r, TraceInfo)]
    bad = [r for r in results if isinstance(r, BadFile)]
    return good, bad


def find_trace(traces_dir: Path, name_or_path: str) -> Path:
    """Resolve a trace name (unique in the dataset) or a path to a Parquet file."""
    candidate = Path(name_or_path)
    if name_or_path.endswith(".parquet") or os.sep in name_or_path:
        if candidate.is_file():
            return candidate
        raise TraceNotFoundError(name_or_path, [])
    check_name(name_or_path)
    matches = list(traces_dir.glob(f"scenario=*/{name_or_path}.parquet"))
    if len(matches) > 1:
        places = ", ".join(str(m) for m in matches)
        raise ReplayError(f"trace name {name_or_path!r} is in several scenarios: {places}")
    if not matches:
        raise TraceNotFoundError(name_or_path, [p.stem for p in trace_files(traces_dir)])
    return matches[0]


def load_trace(traces_dir: Path, name_or_path: str) -> Trace:
    """Find and read one trace by name or path."""
    return read_trace(find_trace(traces_dir, name_or_path))


def iter_traces(traces_dir: Path) -> Iterator[Trace | BadFile]:
    """Every trace of the dataset, or a BadFile in its place."""
    for path in trace_files(traces_dir):
        try:
            yield read_trace(path)
        except ReplayError as exc:
            yield BadFile(path, str(exc))


def write_traces(traces: Sequence[Trace], traces_dir: Path) -> list[Path]:
    """Write several traces; each write is atomic on its own."""
    return [write_trace(t, traces_dir) for t in traces]
