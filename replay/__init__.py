"""imds-replay: record Azure IMDS Scheduled Events and play them back at any speed.

The public API, importable from `replay` directly (README and the notebooks use these names):

    from replay import load_trace, scan, default_traces_dir, ReplayClient

Names load on first use, so `import replay` stays cheap for the CLI. The layers beneath
(each package's docstring says what it owns and what it may import), bottom to top:
errors, clock, cpus <- core <- store <- playback, recording, analysis <- server <- testing, cli.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "ReplayError": "replay.errors",
    "TraceNotFoundError": "replay.errors",
    "InvalidTraceError": "replay.errors",
    "Clock": "replay.clock",
    "SystemClock": "replay.clock",
    "FakeClock": "replay.clock",
    "Trace": "replay.core.timeline",
    "Snapshot": "replay.core.timeline",
    "Approval": "replay.core.timeline",
    "Origin": "replay.core.timeline",
    "validate": "replay.core.timeline",
    "REFERENCE_STARTED_AT": "replay.core.reference",
    "event_id_for": "replay.core.reference",
    "make_event": "replay.core.reference",
    "reference_table": "replay.core.reference",
    "reference_trace": "replay.core.reference",
    "LATEST_VERSION": "replay.core.imds",
    "parse_speed": "replay.core.speed",
    "default_traces_dir": "replay.store.layout",
    "load_trace": "replay.store.dataset",
    "scan": "replay.store.dataset",
    "write_trace": "replay.store.dataset",
    "read_trace": "replay.store.files",
    "Session": "replay.playback.session",
    "SessionOptions": "replay.playback.session",
    "Start": "replay.playback.anchor",
    "SessionRegistry": "replay.playback.registry",
    "make_app": "replay.server.app",
    "ReplayClient": "replay.testing.client",
}
__all__ = [
    "LATEST_VERSION",
    "REFERENCE_STARTED_AT",
    "Approval",
    "Clock",
    "FakeClock",
    "InvalidTraceError",
    "Origin",
    "ReplayClient",
    "ReplayError",
    "Session",
    "SessionOptions",
    "SessionRegistry",
    "Snapshot",
    "Start",
    "SystemClock",
    "Trace",
    "TraceNotFoundError",
    "default_traces_dir",
    "event_id_for",
    "load_trace",
    "make_app",
    "make_event",
    "parse_speed",
    "read_trace",
    "reference_table",
    "reference_trace",
    "scan",
    "validate",
    "write_trace",
]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'replay' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from replay.clock import Clock, FakeClock, SystemClock
    from replay.core.imds import LATEST_VERSION
    from replay.core.reference import (
        REFERENCE_STARTED_AT,
        event_id_for,
        make_event,
        reference_table,
        reference_trace,
    )
    from replay.core.speed import parse_speed
    from replay.core.timeline import Approval, Origin, Snapshot, Trace, validate
    from replay.errors import InvalidTraceError, ReplayError, TraceNotFoundError
    from replay.playback.anchor import Start
    from replay.playback.registry import SessionRegistry
    from replay.playback.session import Session, SessionOptions
    from replay.server.app import make_app
    from replay.store.dataset import load_trace, scan, write_trace
    from replay.store.files import read_trace
    from replay.store.layout import default_traces_dir
    from replay.testing.client import ReplayClient
