"""One trace file: reading it whole and validated (its footer alone is `footer`'s), and writing
it atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from replay.core.timeline import Trace, validate
from replay.errors import InvalidTraceError
from replay.store.footer import META_TRACES, BadFile, entries_of, several_error
from replay.store.schema import SCHEMA, trace_from_columns


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
