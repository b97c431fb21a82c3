"""One trace file: reading it (footer alone, or whole and validated) and writing it atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from replay.core.timeline import Trace, validate
from replay.errors import InvalidTraceError, ReplayError
from replay.store.schema import (
    INDEX_KEYS,
    META_INDEX,
    META_TRACES,
    SCHEMA,
    BadFile,
    TraceInfo,
    check_footer,
    entries_of,
    several_error,
    trace_from_columns,
)


def _footer(path: Path) -> Any:
    try:
        return pq.read_metadata(path).metadata
    except (OSError, pa.ArrowException) as exc:
        raise InvalidTraceError(f"{path}: cannot read Parquet: {exc}") from exc


def footer_of(path: Path) -> tuple[list[Any], bool]:
    """A file's provenance objects and whether it is a bundle, from the footer alone."""
    return entries_of(path, _footer(path))


def peek(path: Path) -> tuple[list[str], bool] | None:
    """The trace names a file lists and whether it is a bundle; None if unreadable."""
    try:
        entries, bundle = footer_of(path)
    except ReplayError:
        return None
    return [str(m.get("name")) for m in entries], bundle


def _checked(path: Path, meta: Any, columns: list[Any], name: str | None) -> Trace | BadFile:
    """Build and validate one trace; a problem becomes a BadFile naming the path (and trace)."""
    where = f"{path}: trace {name!r}" if name is not None else str(path)
    try:
        trace = validate(trace_from_columns(meta, *columns))
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
            table = parquet.read(columns=SCHEMA.names)
            # Files written here have the schema already; casting would import
            # pyarrow.compute (tens of ms of `imds-replay run`'s start) to change nothing.
            if not table.schema.equals(SCHEMA):
                table = table.cast(SCHEMA)
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise InvalidTraceError(f"{path}: cannot read Parquet: {exc}") from exc
    return table.replace_schema_metadata(metadata)


def read_entries(path: Path, only: str | None = None) -> list[Trace | BadFile]:
    """Every trace of a file (or just the one named), each validated on its own."""
    table = _read_table(path)
    entries, bundle = entries_of(path, table.schema.metadata)
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
    entries = read_entries(path)
    if len(entries) != 1:
        raise several_error(path, [e.trace if isinstance(e, BadFile) else e.name for e in entries])
    (entry,) = entries
    if isinstance(entry, BadFile):
        raise InvalidTraceError(entry.problem)
    return entry


def read_file(path: Path) -> list[Trace]:
    """Every trace of a file (single or bundle), validated; the first bad one raises."""
    traces = []
    for entry in read_entries(path):
        if isinstance(entry, BadFile):
            raise InvalidTraceError(entry.problem)
        traces.append(entry)
    return traces


def is_bundle(path: Path) -> bool | None:
    """Whether an existing file is a bundle (None: missing or not a readable trace file)."""
    peeked = peek(path) if path.exists() else None
    return None if peeked is None else peeked[1]


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


def infos_of(path: Path) -> list[TraceInfo]:
    """One listing entry per trace of a file, from its footer alone (no data pages read); a
    bundle's index when it has one (its provenance objects are far larger)."""
    metadata = check_footer(path, _footer(path))
    if META_INDEX in metadata and META_TRACES in metadata:
        try:
            return infos_from_index(path, orjson.loads(metadata[META_INDEX]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidTraceError(f"{path}: malformed trace index: {exc}") from exc
    entries, bundle = entries_of(path, metadata)
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


def infos_from_index(path: Path, index: Any) -> list[TraceInfo]:
    """Listing entries from a bundle's index."""
    columns = [index[key] for key in INDEX_KEYS]
    if len({len(c) for c in columns}) != 1:
        raise ValueError("index columns differ in length")
    scenario = str(index["scenario"])
    return [
        TraceInfo(str(n), scenario, str(o), int(e), int(d), float(s), path, True)
        for n, o, e, d, s in zip(*columns, strict=True)
    ]


def info_of(path: Path) -> TraceInfo:
    """A listing entry for a single-trace file from its footer alone (no data pages read)."""
    infos = infos_of(path)
    if len(infos) != 1:
        raise several_error(path, [i.name for i in infos])
    return infos[0]
