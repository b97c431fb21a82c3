"""The dataset: writing traces in place, scanning and finding them, reading them whole.

Where the files sit and how they are named is `layout`'s; a listing from footers alone is
`footer`'s.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq

from replay.core.timeline import Trace, validate
from replay.errors import InvalidTraceError, ReplayError, TraceNotFoundError
from replay.store.files import read_entries, read_trace, write_atomic
from replay.store.footer import (
    BadFile,
    TraceInfo,
    collate,
    infos_of,
    is_bundle,
    list_traces,
    peek,
)
from replay.store.layout import check_name, dataset_dirs, trace_files, trace_path
from replay.store.schema import SCHEMA, bundle_table, to_table


def write_trace(trace: Trace, traces_dir: Path) -> Path:
    """Validate and write a trace atomically (temporary file, fsync, rename); return its path.

    Refuses a name already used by a file in another scenario folder, and refuses to replace a
    bundle; a name inside some other bundle is not checked here (scan reports duplicates).
    """
    validate(trace)
    path = trace_path(traces_dir, trace.scenario, trace.name)
    others = [p for p in traces_dir.glob(f"scenario=*/{trace.name}.parquet") if p != path]
    others = [p for p in others if is_bundle(p) is not True]
    if others:
        raise ReplayError(
            f"trace name {trace.name!r} is already used by {others[0]}; "
            "trace names are unique in the dataset (rename the trace or delete that file)"
        )
    if is_bundle(path):
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
        if other.stem in seen and other != path and is_bundle(other) is not True:
            raise ReplayError(
                f"trace name {other.stem!r} is already used by {other}; "
                "trace names are unique in the dataset (choose another name prefix)"
            )
    if is_bundle(path) is False:
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


def _checked(path: Path) -> list[TraceInfo | BadFile]:
    """A file's listing entries, each replaced by its BadFile when its trace does not validate."""
    try:
        infos = infos_of(path)
        bad = {e.trace: e for e in read_entries(path) if isinstance(e, BadFile)}
        if None in bad:
            return [bad[None]]
        return [bad.get(i.name, i) for i in infos]
    except ReplayError as exc:
        return [BadFile(path, str(exc))]


def scan(traces_dir: Path, *, validate_all: bool = True) -> tuple[list[TraceInfo], list[BadFile]]:
    """List the dataset: good traces and bad files (each with its first problem); without
    validate_all from footers alone (footer.list_traces, which needs no pyarrow).

    A bad trace inside a bundle is reported alone (its BadFile names the trace) and a name seen
    a second time is reported as a duplicate; the first occurrence (in path order) stays listed.
    """
    if not validate_all:
        return list_traces(traces_dir)
    return collate(trace_files(traces_dir), _checked)


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
        peeked = peek(path)  # an unreadable file named like the trace is its match
        return peeked is None or not peeked[1] or name in peeked[0]

    matches = [
        m
        for root in dataset_dirs(traces_dir)
        for m in sorted(root.glob(f"scenario=*/{name}.parquet"))
        if holds(m)
    ]
    if not matches:
        files = trace_files(traces_dir)
        with ThreadPoolExecutor(max_workers=min(8, len(files) or 1)) as pool:
            listed = [p[0] if p else [] for p in pool.map(peek, files)]
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
    if _is_path(name_or_path) or not is_bundle(path):
        return read_trace(path)
    entries = read_entries(path, only=name_or_path)
    if not entries:
        raise TraceNotFoundError(name_or_path, [])
    if isinstance(entries[0], BadFile):
        raise InvalidTraceError(entries[0].problem)
    return entries[0]


def iter_traces(traces_dir: Path) -> Iterator[Trace | BadFile]:
    """Every trace of the dataset (bundles included), or a BadFile in its place."""
    for path in trace_files(traces_dir):
        try:
            yield from read_entries(path)
        except ReplayError as exc:
            yield BadFile(path, str(exc))
