"""Fleet traces in the dataset: reading the bundle `ingest-fleet` wrote, one trace per VM.

Building one from capture files is replay.recording.fleet_traces' job; reading it back needs
only the store, so the server (`serve`, `run`) loads fleet traces without the recording code.
"""

from __future__ import annotations

from pathlib import Path

from replay.core.fleet import FleetTrace
from replay.core.timeline import Trace
from replay.errors import ReplayError, TraceNotFoundError
from replay.store.dataset import load_trace
from replay.store.files import read_entries
from replay.store.footer import BadFile
from replay.store.layout import NAME_RE, check_name


def load_fleet_trace(traces_dir: Path, name: str) -> FleetTrace:
    """A fleet trace by name, from its bundle; TraceNotFoundError when there is none."""
    check_name(name, "fleet trace name")
    for path in sorted(traces_dir.glob(f"scenario=*/{name}.parquet")):
        entries = read_entries(path)
        traces = [e for e in entries if isinstance(e, Trace)]
        bad = [e for e in entries if isinstance(e, BadFile)]
        if not traces or any(t.source.get("fleet") != name for t in traces):
            continue
        if bad:
            raise ReplayError(f"fleet trace {name!r}: {bad[0].problem}")
        return FleetTrace(name, {str(t.source["vm"]): t for t in traces})
    raise TraceNotFoundError(name, [])


def resolve_trace(traces_dir: Path, name_or_path: str) -> Trace | FleetTrace:
    """A trace by name or path, else a fleet trace by name (what a fleet file's group names)."""
    try:
        return load_trace(traces_dir, name_or_path)
    except TraceNotFoundError as missing:
        if not NAME_RE.fullmatch(name_or_path):
            raise  # a path: never a fleet trace
        try:
            return load_fleet_trace(traces_dir, name_or_path)
        except TraceNotFoundError:
            raise missing from None
