"""Reading the trace dataset for analysis: only the columns asked for, by scenario and origin.

Each file is opened once: its footer gives the format version, then only the requested columns
are decoded (the origin filter also reads each footer's provenance, through the store).
`scenario` comes from the hive folder (`scenario=<name>/`), exactly as pyarrow.dataset and
DuckDB's `hive_partitioning` derive it. A trace never spans files (a file holds one trace, or a
bundle of whole traces with rows grouped by trace), so files are read in batches and a trace is
known by its file and name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from replay.core.timeline import ORIGINS
from replay.errors import InvalidTraceError, ReplayError
from replay.store.footer import BadFile, check_footer, infos_of
from replay.store.layout import scenario_of_file, trace_files

PHASE_COLUMNS = (
    "trace",
    "seq",
    "offset_s",
    "event_id",
    "event_status",
    "not_before_offset_s",
    "duration_s",
    "approved_offset_s",
)
"""The store columns the timing phases need (the raw `document` is never read)."""
DICTIONARY_COLUMNS = frozenset({"trace", "event_id", "event_status"})
"""String columns decoded as Arrow dictionaries: Parquet stores them that way, so it is free."""
FILES_PER_BATCH = 256
"""Files decoded together: bounds memory to a batch of rows plus the per-event results."""


def select_files(traces_dir: Path, scenarios: Sequence[str] = ()) -> list[Path]:
    """The dataset's trace files, only of the given scenarios when any are given.

    Raises ReplayError naming the known scenarios when a requested one has no folder.
    """
    files = trace_files(traces_dir)
    if not scenarios:
        return files
    known = sorted({scenario_of_file(p) for p in files})
    unknown = [s for s in scenarios if s not in known]
    if unknown:
        raise ReplayError(
            f"no traces of scenario {', '.join(map(repr, unknown))} in {traces_dir}; "
            f"scenarios there: {', '.join(known) or 'none'} (imds-replay traces)"
        )
    wanted = set(scenarios)
    return [p for p in files if scenario_of_file(p) in wanted]


def check_origins(origins: Sequence[str]) -> None:
    """Raise ReplayError for an origin that is not captured, reference or synthetic."""
    for origin in origins:
        if origin not in ORIGINS:
            raise ReplayError(f"origin {origin!r} is not one of {', '.join(ORIGINS)}")


def read_file(
    path: Path, columns: Sequence[str] = PHASE_COLUMNS, origins: Sequence[str] = ()
) -> pa.Table | None:
    """Decode the columns of one trace file plus `scenario`, as one chunk per column.

    With origins, only the traces of those origins are kept (None when the file has none).
    """
    wanted: set[str] | None = None
    if origins:
        infos = infos_of(path)
        wanted = {i.name for i in infos if i.origin in origins}
        if not wanted:
            return None
        if len(wanted) == len(infos):
            wanted = None
    try:
        dictionary = [c for c in columns if c in DICTIONARY_COLUMNS]
        parquet = pq.ParquetFile(path, read_dictionary=dictionary)
        check_footer(path, parquet.schema_arrow.metadata)
        table = parquet.read(columns=list(columns), use_threads=False)
    except (OSError, pa.ArrowException) as exc:
        raise InvalidTraceError(f"{path}: cannot read Parquet: {exc}") from exc
    if wanted is not None:
        table = table.filter(pc.is_in(table.column("trace"), pa.array(sorted(wanted))))
    if any(c.num_chunks > 1 for c in table.columns):
        table = table.unify_dictionaries().combine_chunks()
    scenario = pa.DictionaryArray.from_arrays(
        np.zeros(table.num_rows, np.int32), pa.array([scenario_of_file(path)])
    )
    return table.append_column("scenario", scenario).replace_schema_metadata(None)


def iter_batches(
    files: Sequence[Path],
    *,
    columns: Sequence[str] = PHASE_COLUMNS,
    origins: Sequence[str] = (),
    skipped: list[BadFile] | None = None,
    files_per_batch: int = FILES_PER_BATCH,
) -> Iterator[pa.Table]:
    """Tables of up to files_per_batch whole files, read in parallel.

    A file that cannot be read raises its ReplayError, unless `skipped` is given: then it is
    appended there and left out.
    """
    check_origins(origins)
    workers = max(2, min(8, os.cpu_count() or 2))

    def load(path: Path) -> pa.Table | BadFile | None:
        try:
            return read_file(path, columns, origins)
        except ReplayError as exc:
            if skipped is None:
                raise
            return BadFile(path, str(exc))

    batches = [files[i : i + files_per_batch] for i in range(0, len(files), files_per_batch)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Read the next batch while the caller works on this one: at most two in memory.
        pending = [pool.submit(load, p) for p in batches[0]] if batches else []
        for k in range(len(batches)):
            current = pending
            pending = [pool.submit(load, p) for p in batches[k + 1]] if k + 1 < len(batches) else []
            tables = []
            for future in current:
                result = future.result()
                if isinstance(result, BadFile):
                    assert skipped is not None
                    skipped.append(result)
                elif result is not None:
                    tables.append(result)
            if tables:
                yield pa.concat_tables(tables, promote_options="permissive")
