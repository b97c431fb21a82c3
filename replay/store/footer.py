"""What a trace file's footer says, read without pyarrow: its format version, each trace's
provenance, a bundle's index, and the dataset's listing built from footers alone.

`imds-replay traces` imports this and never pyarrow (pyarrow and numpy take longer to import
than listing 100,000 traces from footers takes); `--check` reads whole files through `files`.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import orjson

from replay.errors import FormatVersionError, InvalidTraceError, ReplayError
from replay.store.layout import trace_files
from replay.store.parquet_meta import key_value_metadata

FORMAT_VERSION = 1


META_VERSION = b"imds_replay.format_version"


META_TRACE = b"imds_replay.trace"


META_TRACES = b"imds_replay.traces"


META_INDEX = b"imds_replay.index"
"""In a bundle: what listings show of its traces (its scenario, then one list per key of
INDEX_KEYS, in row order), read without the far larger provenance objects."""

INDEX_KEYS = ("name", "origin", "events", "documents", "duration_s")
_INDEX_TYPES = (str, str, int, int, float)


@dataclass(slots=True)
class TraceInfo:
    """What a listing shows of one stored trace (not frozen: listings build 100,000s of them,
    and a frozen dataclass takes three times as long to make)."""

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


def entries_of(path: Path, metadata: Mapping[bytes, bytes] | None) -> tuple[list[Any], bool]:
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


def several_error(path: Path, names: Sequence[Any]) -> ReplayError:
    shown = ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
    return ReplayError(
        f"{path}: a bundle of {len(names)} traces ({shown}); load one by name "
        "(imds-replay traces lists them)"
    )


def footer_of(path: Path) -> tuple[list[Any], bool]:
    """A file's provenance objects and whether it is a bundle, from the footer alone."""
    return entries_of(path, key_value_metadata(path))


def peek(path: Path) -> tuple[list[str], bool] | None:
    """The trace names a file lists and whether it is a bundle; None if unreadable."""
    try:
        entries, bundle = footer_of(path)
    except ReplayError:
        return None
    return [str(m.get("name")) for m in entries], bundle


def is_bundle(path: Path) -> bool | None:
    """Whether an existing file is a bundle (None: missing or not a readable trace file)."""
    peeked = peek(path) if path.exists() else None
    return None if peeked is None else peeked[1]


def infos_of(path: Path) -> list[TraceInfo]:
    """One listing entry per trace of a file, from its footer alone (no data pages read); a
    bundle's index when it has one (its provenance objects are far larger)."""
    metadata = check_footer(path, key_value_metadata(path, unread=(META_TRACES,)))
    if META_INDEX in metadata and META_TRACES in metadata:
        try:
            return infos_from_index(path, orjson.loads(metadata[META_INDEX]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidTraceError(f"{path}: malformed trace index: {exc}") from exc
    if META_TRACES in metadata:  # a bundle written before indexes: read its provenance
        metadata = key_value_metadata(path)
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


def _as(kind: type, values: Any) -> list[Any]:
    """An index column as a list of kind: as it is when every value already is one (a hundred
    thousand conversions cost as much as making the listing's entries), else each converted."""
    if type(values) is list and set(map(type, values)) <= {kind}:
        return values
    return list(map(kind, values))


def infos_from_index(path: Path, index: Any) -> list[TraceInfo]:
    """Listing entries from a bundle's index."""
    columns = [_as(kind, index[key]) for key, kind in zip(INDEX_KEYS, _INDEX_TYPES, strict=True)]
    if len({len(c) for c in columns}) != 1:
        raise ValueError("index columns differ in length")
    names, origins, events, documents, durations = columns
    scenario, bundle = repeat(str(index["scenario"])), repeat(True)
    return list(
        map(TraceInfo, names, scenario, origins, events, documents, durations, repeat(path), bundle)
    )


def info_of(path: Path) -> TraceInfo:
    """A listing entry for a single-trace file from its footer alone (no data pages read)."""
    infos = infos_of(path)
    if len(infos) != 1:
        raise several_error(path, [i.name for i in infos])
    return infos[0]


@contextmanager
def without_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: listings make 100,000s of objects and no cycles,
    and the collector walking them all, again and again, would take most of the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def collate(
    files: Sequence[Path], load: Callable[[Path], list[TraceInfo | BadFile]]
) -> tuple[list[TraceInfo], list[BadFile]]:
    """Load every file's entries and list them: good traces and bad files (each with its first
    problem). A name seen a second time is reported as a duplicate; the first occurrence (in
    path order) stays listed."""
    with without_gc(), ThreadPoolExecutor(max_workers=min(8, len(files) or 1)) as pool:
        per_file = list(pool.map(load, files))
    good: list[TraceInfo] = []
    bad: list[BadFile] = []
    first: dict[str, Path] = {}
    for results in per_file:
        names = {r.name: r.path for r in results if isinstance(r, TraceInfo)}
        if len(names) == len(results) and first.keys().isdisjoint(names):
            first.update(names)  # the common case, a whole file at once
            good.extend(results)  # type: ignore[arg-type]
            continue
        for r in results:
            if isinstance(r, BadFile):
                bad.append(r)
            elif r.name in first:
                dup = f"{r.path}: trace {r.name!r} is also in {first[r.name]}; trace names are "
                bad.append(
                    BadFile(r.path, f"{dup}unique in the dataset (delete or rename one)", r.name)
                )
            else:
                first[r.name] = r.path
                good.append(r)
    return good, bad


def _listed(path: Path) -> list[TraceInfo | BadFile]:
    try:
        return list(infos_of(path))
    except ReplayError as exc:
        return [BadFile(path, str(exc))]


def list_traces(traces_dir: Path) -> tuple[list[TraceInfo], list[BadFile]]:
    """The dataset's traces from their files' footers alone (nothing validated; a bundle's
    index when it has one), and the files or names that could not be listed."""
    return collate(trace_files(traces_dir), _listed)
