"""The dataset: where traces live, their names, writing them in place, listing and finding them.

Layout: `<traces_dir>/scenario=<scenario>/<name>.parquet` (hive-partitioned by scenario). Only
this module knows it; ingest, synth and analysis ask it. Trace names are unique in the dataset.

Where: `--traces-dir` or `$IMDS_REPLAY_TRACES` when given; else in a checkout its `traces/`;
else (installed from a wheel) the user's data directory, which writes go to, read together with
the reference traces shipped inside the package (never written to).
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import platformdirs
import pyarrow.parquet as pq

from replay.core.timeline import Trace, validate
from replay.errors import InvalidTraceError, ReplayError, TraceNotFoundError
from replay.store.files import (
    infos_of,
    is_bundle,
    peek,
    read_entries,
    read_trace,
    write_atomic,
)
from replay.store.schema import SCHEMA, BadFile, TraceInfo, bundle_table, to_table

TRACES_ENV = "IMDS_REPLAY_TRACES"


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


APP_NAME = "imds-replay"
_PACKAGE = Path(__file__).resolve().parent.parent  # replay/


def checkout_traces_dir() -> Path | None:
    """The traces/ of the checkout this package runs from, or None when installed."""
    checkout = _PACKAGE.parent / "traces"
    if (_PACKAGE.parent / "pyproject.toml").exists() and checkout.is_dir():
        return checkout
    return None


def shipped_traces_dir() -> Path:
    """The reference traces installed with the package (read only)."""
    return _PACKAGE / "_traces"


def user_traces_dir() -> Path:
    """The user's own traces when installed: under the platform's user data directory."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "traces"


def default_traces_dir() -> Path:
    """$IMDS_REPLAY_TRACES, else the checkout's traces/, else the user's data directory."""
    env = os.environ.get(TRACES_ENV)
    if env:
        return Path(env)
    return checkout_traces_dir() or user_traces_dir()


def dataset_dirs(traces_dir: Path) -> list[Path]:
    """The folders the dataset at traces_dir spans, the one written to first: the user's data
    directory also reads the reference traces shipped with the package."""
    shipped = shipped_traces_dir()
    if traces_dir == user_traces_dir() and shipped.is_dir() and shipped != traces_dir:
        return [traces_dir, shipped]
    return [traces_dir]


def location_of(path: Path) -> str:
    """Where a trace file lives, for listings: shipped (with the package), user (the data
    directory), checkout (its traces/), or dataset (--traces-dir, $IMDS_REPLAY_TRACES)."""
    if path.is_relative_to(shipped_traces_dir()):
        return "shipped"
    if path.is_relative_to(user_traces_dir()):
        return "user"
    checkout = checkout_traces_dir()
    if checkout is not None and path.is_relative_to(checkout):
        return "checkout"
    return "dataset"


def check_name(name: str, what: str = "trace name") -> str:
    """Return name if it is safe as a file or folder name, else raise ReplayError."""
    if not NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise ReplayError(
            f"{what} {name!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def scenario_of_file(path: Path) -> str:
    """The scenario a trace file sits under, from its folder `scenario=<name>`."""
    return path.parent.name.removeprefix("scenario=")


def scenario_files(traces_dir: Path, scenario: str) -> list[Path]:
    """The trace files in one scenario's folder, sorted (none when it has no folder)."""
    folder = traces_dir / f"scenario={check_name(scenario, 'scenario')}"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def episode_files(traces_dir: Path, episode: str) -> list[Path]:
    """The files of an ingested episode, whatever scenario it was labelled (`*-<episode>`)."""
    return sorted(traces_dir.glob(f"scenario=*/*-{check_name(episode, 'episode')}.parquet"))


def trace_path(traces_dir: Path, scenario: str, name: str) -> Path:
    """Where a trace (or bundle) of this scenario and name lives."""
    return (
        traces_dir / f"scenario={check_name(scenario, 'scenario')}" / f"{check_name(name)}.parquet"
    )


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


def trace_files(traces_dir: Path) -> list[Path]:
    """Every trace file in the dataset (all its dataset_dirs), sorted per folder, the written
    folder first; temporary files are never listed."""
    return [
        p
        for root in dataset_dirs(traces_dir)
        if root.is_dir()
        for p in sorted(root.glob("scenario=*/*.parquet"))
        if not p.name.startswith(".")
    ]


def _load(path: Path, validate_all: bool) -> list[TraceInfo | BadFile]:
    try:
        infos = infos_of(path)
        if not validate_all:
            return list(infos)
        bad = {e.trace: e for e in read_entries(path) if isinstance(e, BadFile)}
        if None in bad:
            return [bad[None]]
        return [bad.get(i.name, i) for i in infos]
    except ReplayError as exc:
        return [BadFile(path, str(exc))]


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


def scan(traces_dir: Path, *, validate_all: bool = True) -> tuple[list[TraceInfo], list[BadFile]]:
    """List the dataset: good traces and bad files (each with its first problem).

    A bad trace inside a bundle is reported alone (its BadFile names the trace) and a name seen
    a second time is reported as a duplicate; the first occurrence (in path order) stays listed.
    """
    files = trace_files(traces_dir)
    with without_gc(), ThreadPoolExecutor(max_workers=min(8, len(files) or 1)) as pool:
        per_file = list(pool.map(lambda p: _load(p, validate_all), files))
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
