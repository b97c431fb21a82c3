"""The Parquet trace store: hive-partitioned by scenario, atomic writes, one or many traces a file.

Layout: `<traces_dir>/scenario=<scenario>/<name>.parquet`. A file holds one row per event per
document (an empty document is one row with null event columns), the raw document for lossless
round trips, typed columns for analysis, and provenance in its Parquet metadata. A single-trace
file (write_trace) keeps its provenance object under `imds_replay.trace`; a bundle (write_bundle,
for generated data) holds several traces of one scenario, rows grouped by trace, and a list of
provenance objects in row order under `imds_replay.traces`. Trace names are unique in the dataset.
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
META_TRACES = b"imds_replay.traces"
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
_COLUMNS = tuple(SCHEMA.names)


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
    bundle: bool = False
    """True when path is a bundle holding several traces: load this one by name."""

    def summary(self) -> dict[str, Any]:
        """The listing as JSON values (no file path: the control API does not expose it)."""
        return {
            "name": self.name,
            "scenario": self.scenario,
            "origin": self.origin,
            "events": self.events,
            "documents": self.documents,
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True, slots=True)
class BadFile:
    """A trace file (or one trace inside a bundle) that failed to load, and its first problem."""

    path: Path
    problem: str
    trace: str | None = None
    """The trace's name when only that trace of a bundle is bad."""


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
    """Where a trace (or bundle) of this scenario and name lives."""
    return (
        traces_dir / f"scenario={check_name(scenario, 'scenario')}" / f"{check_name(name)}.parquet"
    )


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
    """Several traces as one Arrow table: rows grouped by trace, provenance list in row order."""
    return _table(traces, {META_TRACES: orjson.dumps([_provenance(t) for t in traces])})


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


def check_footer(path: Path, metadata: Mapping[bytes, bytes] | None) -> Mapping[bytes, bytes]:
    """The footer's metadata, if it marks a trace file in a format this build reads; else raise."""
    metadata = metadata or {}
    if META_VERSION not in metadata or not (META_TRACE in metadata or META_TRACES in metadata):
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
    return metadata


def _entries(path: Path, metadata: Mapping[bytes, bytes] | None) -> tuple[list[Any], bool]:
    """The file's provenance objects in row order, and whether it is a bundle."""
    metadata = check_footer(path, metadata)
    try:
        if META_TRACES in metadata:
            entries = orjson.loads(metadata[META_TRACES])
            if not isinstance(entries, list) or not all(isinstance(m, dict) for m in entries):
                raise InvalidTraceError(f"{path}: {META_TRACES.decode()} must be a list of objects")
            return entries, True
        meta = orjson.loads(metadata[META_TRACE])
    except orjson.JSONDecodeError as exc:
        raise InvalidTraceError(f"{path}: malformed trace metadata: {exc}") from exc
    if not isinstance(meta, dict):
        raise InvalidTraceError(f"{path}: {META_TRACE.decode()} must be a JSON object")
    return [meta], False


def _several(path: Path, names: Sequence[Any]) -> ReplayError:
    shown = ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
    return ReplayError(
        f"{path}: a bundle of {len(names)} traces ({shown}); load one by name "
        "(imds-replay traces lists them)"
    )


def _footer(path: Path) -> tuple[list[Any], bool]:
    """A file's provenance objects and whether it is a bundle, from the footer alone."""
    try:
        metadata = pq.read_schema(path).metadata
    except (OSError, pa.ArrowException) as exc:
        raise InvalidTraceError(f"{path}: cannot read Parquet: {exc}") from exc
    return _entries(path, metadata)


def _peek(path: Path) -> tuple[list[str], bool] | None:
    """The trace names a file lists and whether it is a bundle; None if unreadable."""
    try:
        entries, bundle = _footer(path)
    except ReplayError:
        return None
    return [str(m.get("name")) for m in entries], bundle


def _trace(meta: Mapping[str, Any], seqs: list[Any], offsets: list[Any], docs: list[Any]) -> Trace:
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


def from_table(table: pa.Table, path: Path) -> Trace:
    """Rebuild a single trace from a stored table; the raw documents are the source of truth."""
    entries, _ = _entries(path, table.schema.metadata)
    if len(entries) != 1:
        raise _several(path, [m.get("name") for m in entries])
    columns = [table.column(c).to_pylist() for c in ("seq", "offset_s", "document")]
    try:
        return _trace(entries[0], *columns)
    except InvalidTraceError as exc:
        raise InvalidTraceError(f"{path}: {exc}") from exc


def _checked(path: Path, meta: Any, columns: list[Any], name: str | None) -> Trace | BadFile:
    """Build and validate one trace; a problem becomes a BadFile naming the path (and trace)."""
    where = f"{path}: trace {name!r}" if name is not None else str(path)
    try:
        trace = validate(_trace(meta, *columns))
    except InvalidTraceError as exc:
        return BadFile(path, f"{where}: {exc}", name)
    except (KeyError, ValueError, TypeError) as exc:
        return BadFile(path, f"{where}: malformed trace metadata: {exc}", name)
    folder = path.parent.name
    if folder.startswith("scenario=") and folder != f"scenario={trace.scenario}":
        problem = f"trace says scenario {trace.scenario!r} but sits in {folder}"
        return BadFile(path, f"{where}: {problem}", name)
    return trace


def _read_table(path: Path) -> pa.Table:
    if path.suffix != ".parquet":
        raise InvalidTraceError(f"{path}: a trace file ends in .parquet")
    # ParquetFile, not read_table: read_table goes through pyarrow.dataset, which imports
    # pandas, and `imds-replay serve` stays free of pandas.
    try:
        with pq.ParquetFile(path) as parquet:
            metadata = parquet.schema_arrow.metadata
            table = parquet.read(columns=SCHEMA.names).cast(SCHEMA)
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise InvalidTraceError(f"{path}: cannot read Parquet: {exc}") from exc
    return table.replace_schema_metadata(metadata)


def _read_entries(path: Path, only: str | None = None) -> list[Trace | BadFile]:
    """Every trace of a file (or just the one named), each validated on its own."""
    table = _read_table(path)
    entries, bundle = _entries(path, table.schema.metadata)
    columns = [table.column(c).to_pylist() for c in ("seq", "offset_s", "document")]
    if not bundle:
        return [_checked(path, entries[0], columns, None)]
    # Rows are grouped by trace, in the order of the provenance list.
    names = table.column("trace").to_pylist()
    bounds = [i for i in range(len(names)) if i == 0 or names[i] != names[i - 1]]
    runs = [names[i] for i in bounds]
    listed = [m.get("name") for m in entries]
    if runs != listed:
        raise InvalidTraceError(
            f"{path}: rows hold traces {runs[:3]}... but {META_TRACES.decode()} lists "
            f"{listed[:3]}... (rows must be grouped by trace in the listed order)"
        )
    result: list[Trace | BadFile] = []
    for k, meta in enumerate(entries):
        if only is not None and meta["name"] != only:
            continue
        lo, hi = bounds[k], bounds[k + 1] if k + 1 < len(bounds) else len(names)
        result.append(_checked(path, meta, [c[lo:hi] for c in columns], meta["name"]))
    return result


def read_trace(path: Path) -> Trace:
    """Load and validate a single-trace file; errors name the file and its first problem."""
    entries = _read_entries(path)
    if len(entries) != 1:
        raise _several(path, [e.trace if isinstance(e, BadFile) else e.name for e in entries])
    (entry,) = entries
    if isinstance(entry, BadFile):
        raise InvalidTraceError(entry.problem)
    return entry


def read_file(path: Path) -> list[Trace]:
    """Every trace of a file (single or bundle), validated; the first bad one raises."""
    traces = []
    for entry in _read_entries(path):
        if isinstance(entry, BadFile):
            raise InvalidTraceError(entry.problem)
        traces.append(entry)
    return traces


def _is_bundle(path: Path) -> bool | None:
    """Whether an existing file is a bundle (None: missing or not a readable trace file)."""
    peeked = _peek(path) if path.exists() else None
    return None if peeked is None else peeked[1]


def write_trace(trace: Trace, traces_dir: Path) -> Path:
    """Validate and write a trace atomically (temporary file, fsync, rename); return its path.

    Refuses a name already used by a file in another scenario folder, and refuses to replace a
    bundle; a name inside some other bundle is not checked here (scan reports duplicates).
    """
    validate(trace)
    path = trace_path(traces_dir, trace.scenario, trace.name)
    others = [p for p in traces_dir.glob(f"scenario=*/{trace.name}.parquet") if p != path]
    others = [p for p in others if _is_bundle(p) is not True]
    if others:
        raise ReplayError(
            f"trace name {trace.name!r} is already used by {others[0]}; "
            "trace names are unique in the dataset (rename the trace or delete that file)"
        )
    if _is_bundle(path):
        raise ReplayError(f"{path} is a bundle of several traces; write_trace will not replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: pq.write_table(to_table(trace), tmp, compression="zstd"))
    return path


def write_bundle(traces: Sequence[Trace], traces_dir: Path, name: str) -> Path:
    """Validate and write several traces of one scenario atomically as one file; return its path.

    Rewriting a bundle of the same name replaces it. Refuses duplicate names in the bundle, a
    name used by a single-trace file, and replacing a single-trace file.
    """
    if not traces:
        raise ReplayError(f"bundle {name!r} has no traces")
    scenarios = sorted({t.scenario for t in traces})
    if len(scenarios) > 1:
        raise ReplayError(f"bundle {name!r} mixes scenarios {', '.join(scenarios)}; use one each")
    seen: set[str] = set()
    for trace in traces:
        check_name(trace.name)
        if trace.name in seen:
            raise ReplayError(f"bundle {name!r} holds trace {trace.name!r} twice")
        seen.add(trace.name)
        try:
            validate(trace)
        except InvalidTraceError as exc:
            raise InvalidTraceError(f"trace {trace.name!r}: {exc}") from exc
    path = trace_path(traces_dir, scenarios[0], name)
    for other in trace_files(traces_dir):  # one listing: checks trace names against stems
        if other.stem in seen and other != path and _is_bundle(other) is not True:
            raise ReplayError(
                f"trace name {other.stem!r} is already used by {other}; "
                "trace names are unique in the dataset (choose another name prefix)"
            )
    if _is_bundle(path) is False:
        raise ReplayError(f"{path} holds a single trace; write_bundle will not replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    table = bundle_table(traces)
    metadata = table.schema.metadata or {}

    def write(tmp: Path) -> None:
        # Without store_schema=False pyarrow also keeps the Arrow schema, metadata included,
        # base64-encoded in the footer: twice the bytes and ~40x slower footer reads.
        with pq.ParquetWriter(tmp, SCHEMA, compression="zstd", store_schema=False) as writer:
            writer.write_table(table.replace_schema_metadata(None))
            writer.add_key_value_metadata({k.decode(): v.decode() for k, v in metadata.items()})

    write_atomic(path, write)
    return path


def write_atomic(path: Path, write: Any) -> None:
    """Call write(tmp_path) for a temporary file beside path, then rename it into place."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a dataset is meant to be shared
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


def infos_of(path: Path) -> list[TraceInfo]:
    """One listing entry per trace of a file, from its footer alone (no data pages read)."""
    entries, bundle = _footer(path)
    try:
        return [
            TraceInfo(
                name=meta["name"],
                scenario=meta["scenario"],
                origin=meta["origin"],
                events=int(meta["summary"]["events"]),
                documents=int(meta["summary"]["documents"]),
                duration_s=float(meta["summary"]["duration_s"]),
                path=path,
                bundle=bundle,
            )
            for meta in entries
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidTraceError(f"{path}: malformed trace metadata: {exc}") from exc


def info_of(path: Path) -> TraceInfo:
    """A listing entry for a single-trace file from its footer alone (no data pages read)."""
    infos = infos_of(path)
    if len(infos) != 1:
        raise _several(path, [i.name for i in infos])
    return infos[0]


def _load(path: Path, validate_all: bool) -> list[TraceInfo | BadFile]:
    try:
        infos = infos_of(path)
        if not validate_all:
            return list(infos)
        bad = {e.trace: e for e in _read_entries(path) if isinstance(e, BadFile)}
        if None in bad:
            return [bad[None]]
        return [bad.get(i.name, i) for i in infos]
    except ReplayError as exc:
        return [BadFile(path, str(exc))]


def scan(traces_dir: Path, *, validate_all: bool = True) -> tuple[list[TraceInfo], list[BadFile]]:
    """List the dataset: good traces and bad files (each with its first problem).

    A bad trace inside a bundle is reported alone (its BadFile names the trace) and a name seen
    a second time is reported as a duplicate; the first occurrence (in path order) stays listed.
    """
    files = trace_files(traces_dir)
    with ThreadPoolExecutor(max_workers=min(8, len(files) or 1)) as pool:
        results = [r for rs in pool.map(lambda p: _load(p, validate_all), files) for r in rs]
    good: list[TraceInfo] = []
    bad: list[BadFile] = []
    first: dict[str, Path] = {}
    for r in results:
        if isinstance(r, BadFile):
            bad.append(r)
        elif r.name in first:
            dup = f"{r.path}: trace {r.name!r} is also in {first[r.name]}; trace names are unique"
            bad.append(BadFile(r.path, f"{dup} in the dataset (delete or rename one)", r.name))
        else:
            first[r.name] = r.path
            good.append(r)
    return good, bad


def _is_path(name_or_path: str) -> bool:
    return name_or_path.endswith(".parquet") or os.sep in name_or_path


def find_trace(traces_dir: Path, name_or_path: str) -> Path:
    """Resolve a trace name (unique in the dataset) or a path to a Parquet file.

    A name is looked up as a file stem first, then in the footers of every file (bundles).
    """
    if _is_path(name_or_path):
        if Path(name_or_path).is_file():
            return Path(name_or_path)
        raise TraceNotFoundError(name_or_path, [])
    name = check_name(name_or_path)

    def holds(path: Path) -> bool:
        peeked = _peek(path)  # an unreadable file named like the trace is its match
        return peeked is None or not peeked[1] or name in peeked[0]

    matches = [m for m in traces_dir.glob(f"scenario=*/{name}.parquet") if holds(m)]
    if not matches:
        files = trace_files(traces_dir)
        with ThreadPoolExecutor(max_workers=min(8, len(files) or 1)) as pool:
            listed = [p[0] if p else [] for p in pool.map(_peek, files)]
        matches = [p for p, names in zip(files, listed, strict=True) if name in names]
        if not matches:
            known = {n for names in listed for n in names} | {p.stem for p in files}
            raise TraceNotFoundError(name, sorted(known))
    if len(matches) > 1:
        places = ", ".join(str(m) for m in matches)
        raise ReplayError(f"trace name {name!r} is in several files: {places}")
    return matches[0]


def load_trace(traces_dir: Path, name_or_path: str) -> Trace:
    """Find and read one trace by name (also inside a bundle) or by path."""
    path = find_trace(traces_dir, name_or_path)
    if _is_path(name_or_path) or not _is_bundle(path):
        return read_trace(path)
    entries = _read_entries(path, only=name_or_path)
    if not entries:
        raise TraceNotFoundError(name_or_path, [])
    if isinstance(entries[0], BadFile):
        raise InvalidTraceError(entries[0].problem)
    return entries[0]


def iter_traces(traces_dir: Path) -> Iterator[Trace | BadFile]:
    """Every trace of the dataset (bundles included), or a BadFile in its place."""
    for path in trace_files(traces_dir):
        try:
            yield from _read_entries(path)
        except ReplayError as exc:
            yield BadFile(path, str(exc))


def write_traces(traces: Sequence[Trace], traces_dir: Path) -> list[Path]:
    """Write several traces; each write is atomic on its own."""
    return [write_trace(t, traces_dir) for t in traces]
